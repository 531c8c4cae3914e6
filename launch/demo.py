"""`make demo`: pretrain a small OLMo3 on synthetic skills, label, probe, evaluate, report.

  python -m launch.demo                       # about 5 min on 2 CPU cores, into runs/demo
  python -m launch.demo --config=configs/experiments/demo.py:smoke --workdir=runs/smoke  # ~90 s
  python -m launch.demo --config.labels.num_samples=16 --config.probe_families=linear,hybrid
  python -m launch.demo --config=configs/experiments/olmo3_7b.py --config.checkpoints=... \
      --config.checkpoint_steps=... --config.tokenizer=...  # real checkpoints
`--preset=smoke` is shorthand for `--config=configs/experiments/demo.py:smoke`.
Rerunning after a kill resumes: finished checkpoints, labels, features and probes are reused.
"""
from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from launch import common

DEFAULT_CONFIG = "configs/experiments/demo.py"
CONFIG = config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Experiment config (append :smoke).",
                                         lock_config=False)
flags.DEFINE_enum("preset", None, ["default", "smoke"], f"Shorthand for --config={DEFAULT_CONFIG}:<preset>.")
WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Work dir (reused to resume).")


def preset_as_config(argv: list[str]) -> list[str]:
  """Rewrites `--preset=X` (or `--preset X`) into `--config=configs/experiments/demo.py:X` before
  flags are parsed, so `--config.*` overrides apply to that variant; giving both is an error."""
  args, preset, i = [], None, 1
  while i < len(argv):
    if argv[i].startswith("--preset="):
      preset = argv[i].split("=", 1)[1]
    elif argv[i] == "--preset" and i + 1 < len(argv):
      preset, i = argv[i + 1], i + 1
    else:
      args.append(argv[i])
    i += 1
  if preset is None:
    return argv
  if any(a == "--config" or a.startswith("--config=") for a in args):
    sys.exit("error: give either --preset or --config, not both")
  if preset not in ("default", "smoke"):
    sys.exit(f"error: --preset={preset}: expected 'default' or 'smoke'")
  return argv[:1] + [f"--config={DEFAULT_CONFIG}" + ("" if preset == "default" else f":{preset}")] + args


def main(argv):
  del argv
  common.init_runtime()
  common.quiet_orbax_logs()
  from probing.demo import pipeline, report
  with common.user_errors(ValueError, FileNotFoundError, KeyError, RuntimeError):
    summary = pipeline.run(common.config_of(CONFIG), WORKDIR.value, log=logging.info)
  print("\n" + report.headline(summary))
  print("\nstage times: " + ", ".join(f"{k} {v:.0f}s" for k, v in summary["stage_seconds"].items()))
  print(f"total {summary['total_seconds']:.0f}s; report: {WORKDIR.value}/report.md")
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main, flags_parser=lambda argv: flags.FLAGS(preset_as_config(argv)))
