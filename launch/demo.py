"""`make demo`: pretrain a small OLMo3 on synthetic skills, label, probe, evaluate, report.

  python -m launch.demo                       # about 10 min on 2 CPU cores, into runs/demo
  python -m launch.demo --preset=smoke --workdir=runs/smoke   # about 90 s: pipeline check
  python -m launch.demo --config.labels.num_samples=16 --config.probe_families=linear,hybrid
Rerunning after a kill resumes: finished checkpoints, labels, features and probes are reused.
"""
from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from launch import common

CONFIG = config_flags.DEFINE_config_file("config", "configs/experiments/demo.py",
                                         "Demo config; --preset picks its variant.", lock_config=False)
PRESET = flags.DEFINE_enum("preset", "default", ["default", "smoke"], "Demo size.")
WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Work dir (reused to resume).")


def main(argv):
  del argv
  common.init_runtime()
  from configs.experiments import demo as demo_config
  from probing import demo, demo_report, pretrain
  pretrain.quiet_orbax_logs()
  cfg = CONFIG.value
  if PRESET.value != cfg.preset:  # re-read the file's variant, keeping --config.* overrides
    cfg = demo_config.get_config(PRESET.value)
    for key, value in config_flags.get_override_values(flags.FLAGS["config"]).items():
      node = cfg
      *parents, leaf = key.split(".")
      for p in parents:
        node = node[p]
      node[leaf] = value
  with common.user_errors(ValueError, FileNotFoundError, KeyError, RuntimeError):
    summary = demo.run(cfg, WORKDIR.value, log=logging.info)
  print("\n" + demo_report.headline(summary))
  print("\nstage times: " + ", ".join(f"{k} {v:.0f}s" for k, v in summary["stage_seconds"].items()))
  print(f"total {summary['total_seconds']:.0f}s; report: {WORKDIR.value}/report.md")
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
