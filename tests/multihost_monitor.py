"""A training loop with the in-loop monitor, run as a (multi-process) program by tests/test_multihost.py.

  python tests/multihost_monitor.py --checkpoint=CKPT --probe=PROBE --tasks=syn_add,syn_sub \
      --limit=20 --out=monitor.jsonl [--coordinator_address=... --num_processes=2 --process_id=I]
Each "training step" shrinks the params a little (a stand-in for an optimizer update, so every
monitor call sees new weights); the monitor predicts after each and appends to --out.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from launch import common  # noqa: E402

CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Orbax checkpoint to train from.")
PROBE = flags.DEFINE_string("probe", None, "Trained probe dir.")
TASKS = flags.DEFINE_string("tasks", "syn_add", "Monitored tasks.")
LIMIT = flags.DEFINE_integer("limit", 20, "Questions per task.")
OUT = flags.DEFINE_string("out", None, "Monitor records (JSONL).")
STEPS = (40, 41)


def train_with_monitor(checkpoint: str, probe: str, tasks: str, limit: int, out: str | None) -> list[dict]:
  """The monitor's records of a short loop over `checkpoint` (on a mesh of all devices)."""
  import jax
  from flax import nnx
  from models import sharding
  from probing import checkpoints, load_probe
  from probing import tasks as task_registry
  from probing.monitor import ProbeMonitor
  mesh = sharding.make_mesh("data=-1")
  ck = checkpoints.open_checkpoint(checkpoint, mesh=mesh, tokenizer="char")
  questions = {t: list(task_registry.get(t).questions(limit)) for t in tasks.split(",")}
  monitor = ProbeMonitor({"linear": load_probe(probe)}, questions, ck.tokenizer, every=1, mesh=mesh,
                         out_path=out, log=lambda msg: None)
  for step in STEPS:
    params = nnx.state(ck.model, nnx.Param)
    nnx.update(ck.model, jax.tree.map(lambda x: x * 0.98, params))
    monitor.maybe_run(step, ck.model)
  return monitor.history


def main(argv):
  del argv
  common.init_runtime()
  train_with_monitor(CHECKPOINT.value, PROBE.value, TASKS.value, LIMIT.value, OUT.value)


if __name__ == "__main__":
  app.run(main)
