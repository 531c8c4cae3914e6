"""`make demo`: pretrain a small OLMo3 on synthetic skills, label, probe, evaluate, report.

  python -m launch.demo                       # about 7.5 min on 2 idle CPU cores, into runs/demo
  python -m launch.demo --config=configs/experiments/demo.py:smoke --workdir=runs/smoke  # ~90 s
  python -m launch.demo --config.labels.num_samples=16 --config.probe_families=linear,hybrid
  python -m launch.demo --config=configs/experiments/olmo3_7b.py --workdir=runs/olmo3_7b \
      --config.data.checkpoints=ckpts/stage1-step1000,...,ckpts/stage2-step2000  # real checkpoints
The given --config file is the config that runs; a preset is chosen with --config=FILE:PRESET
(`--config_help` lists the fields). summary.json `settings.config` holds the resolved config.
Rerunning after a kill resumes: finished checkpoints, labels, features and probes are reused.
"""
from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from launch import common

DEFAULT_CONFIG = "configs/experiments/demo.py"
CONFIG = config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Experiment config, FILE[:PRESET] "
                                         "(e.g. configs/experiments/demo.py:smoke).", lock_config=True)
WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Work dir (reused to resume).")


def main(argv):
  del argv
  common.init_runtime()
  common.quiet_orbax_logs()
  from probing.demo import pipeline, report
  from probing import checkpoints, tokenizer
  with common.user_errors(ValueError, FileNotFoundError, KeyError, RuntimeError, checkpoints.CheckpointError,
                          tokenizer.TokenizerError):
    summary = pipeline.run(common.config_of(CONFIG), WORKDIR.value, log=logging.info)
  print("\n" + report.headline(summary))
  print("\nstage times: " + ", ".join(f"{k} {v:.0f}s" for k, v in summary["stage_seconds"].items()))
  print(f"total {summary['total_seconds']:.0f}s; report: {WORKDIR.value}/report.md")
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser(DEFAULT_CONFIG))
