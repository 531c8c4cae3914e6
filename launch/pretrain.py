"""Pretrains the testbed's small OLMo3 on synthetic skills, writing in-training checkpoints.

  python -m launch.pretrain --config=configs/experiments/testbed.py --workdir=runs/testbed
  python -m launch.pretrain --config=configs/experiments/testbed.py:smoke --workdir=runs/smoke \
      --config.train.steps=40

Rerunning the same command after a kill resumes from the latest train state, with the same
data order. Checkpoints land in `<workdir>/checkpoints/step_NNNNNN` (`models.checkpoint` format).
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from launch import common

CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/experiments/testbed.py", "Experiment config (append :smoke for the tiny variant).",
    lock_config=True)
WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, train state, config).",
                              required=True)


def main(argv):
  del argv
  common.init_runtime()
  from probing.testbed import pretrain
  common.quiet_orbax_logs()
  with common.user_errors():
    summary = pretrain.train(common.config_of(CONFIG), WORKDIR.value)
  logging.info("pretrain done: %d checkpoints in %.0fs (resumed from step %d)", len(summary["checkpoints"]),
               summary["seconds"], summary["start_step"])
  for step, path in zip(summary["steps"], summary["checkpoints"]):
    print(f"step={step} checkpoint={path}")


if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser("configs/experiments/testbed.py"))
