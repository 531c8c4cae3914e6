"""Generative labels: k samples per question -> per-question pass@1 records (JSONL), resumable.

  python -m launch.label --config=configs/experiments/label.py \
      --config.data.checkpoint=runs/testbed/checkpoints/step_000120 --config.data.tasks=syn_add,syn_sub \
      --config.num_samples=8 --config.out=runs/testbed/labels

Rerun the same command after a kill: finished questions are skipped and the result equals an
uninterrupted run. Bad input (unknown task, a checkpoint that does not load, a tokenizer the
model cannot embed, invalid sampling settings) fails with one line on stderr and exit status 1
before any work starts. `--config_help` lists every field.
"""
from __future__ import annotations

from absl import app, logging
from ml_collections import config_flags

from launch import common

CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/experiments/label.py", "Label config (append :real for real-task sampling).",
    lock_config=True)


def main(argv):
  del argv
  common.init_runtime()
  from probing import labels
  common.quiet_orbax_logs()
  with common.user_errors():
    summary = labels.run(common.config_of(CONFIG), log=logging.info)
  logging.info("labels done: %d new records (%d in all) in %.1fs", summary["new_records"], summary["records"],
               summary["seconds"])
  print(f"labels={summary['out']} provenance={summary['provenance']}")


if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser("configs/experiments/label.py"))
