"""Extracts probe features of one checkpoint for some tasks into the feature store (resumable).

  python -m launch.extract --config=configs/probes/linear.py:testbed \
      --config.data.checkpoint=runs/testbed/checkpoints/step_1200 \
      --config.data.tasks=syn_add,syn_sort --config.data.features=runs/features
The checkpoint is a HF dir (config.json + safetensors; tokenizer.json beside it or given by
--config.data.tokenizer) or an orbax checkpoint of models.checkpoint. One store per task lands
in <features>/<checkpoint>/<task>; rerunning after a kill resumes from finished batches.
"""
from __future__ import annotations

from absl import app, logging
from ml_collections import config_flags

from launch import common
from launch.probe_io import load_checkpoint, require, task_names

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/probes/*.py file.", lock_config=True)


def main(argv):
  del argv
  common.init_runtime()
  c = _CONFIG.value
  with common.user_errors():
    from models import sharding
    from probing import features, tasks
    require(c, "data.checkpoint", "data.features", "data.tasks")
    spec = features.spec_from_config(c.extract)
    mesh = sharding.make_mesh(c.data.mesh)
    ck = load_checkpoint(c.data, mesh)
    for name in task_names(c.data):
      task = tasks.get(name)
      questions = list(task.questions(c.data.limit))
      out = features.store_dir(c.data.features, ck.name, name)
      progress = common.Progress(0, f"extract {name}", "batches")

      def on_batch(i, n, progress=progress):
        progress.total = n
        progress.update(1)
      fs = features.extract(ck.model, ck.tokenizer, questions, spec, mesh=mesh, checkpoint=ck.name,
                            checkpoint_step=ck.step, task=name, prompt_format_hash=task.format_hash(),
                            out_dir=out, on_batch=on_batch)
      logging.info("%s: %d questions -> %s (%s)", name, len(fs), out, fs.meta.get("timing"))


if __name__ == "__main__":
  app.run(main)
