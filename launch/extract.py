"""Extracts probe features of one checkpoint for some tasks into the feature store (resumable).

  python -m launch.extract --config=configs/probes/linear.py:testbed \
      --config.data.checkpoint=runs/testbed/checkpoints/step_1200 \
      --config.data.tasks=syn_add,syn_sort --config.data.features=runs/features
The checkpoint is a HF dir (config.json + safetensors; tokenizer.json beside it or given by
--config.data.tokenizer) or an orbax checkpoint of models.checkpoint. One store per task lands
in <features>/<checkpoint>/<task>; rerunning after a kill resumes from finished batches.
"""
from __future__ import annotations

import time

from absl import app, logging
from ml_collections import config_flags

from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/probes/*.py file.", lock_config=True)


def main(argv):
  del argv
  common.init_runtime()
  common.quiet_orbax_logs()
  with common.user_errors():
    from probing import jobs
    bars, last = {}, [time.perf_counter()]

    def on_progress(task, i, n):
      bar = bars.get(task) or bars.setdefault(task, common.Progress(n, f"extract {task}", "batches", start=last[0]))
      bar.update(1)
      last[0] = time.perf_counter()
    sets = jobs.extract(common.config_of(_CONFIG), on_progress=on_progress)
  for fs in sets:
    logging.info("%s: %d questions (%s)", fs.meta["task"], len(fs), fs.meta.get("timing"))
    print(f"features {fs.meta['checkpoint']}/{fs.meta['task']}: {len(fs)} questions")


if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser())
