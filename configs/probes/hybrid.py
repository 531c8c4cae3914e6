"""Hybrid probe: a base probe (linear by default) plus the gold-answer NLL as input features.

The NLL comes from the same prefill pass (prompt + reference), so extraction costs about the
same as plain extraction.

  python -m launch.extract --config=configs/probes/hybrid.py:testbed \
      --config.data.checkpoint=runs/testbed/checkpoints/step_1200 \
      --config.data.tasks=syn_add,syn_sort --config.data.features=runs/features
  python -m launch.train_probes --config=configs/probes/hybrid.py:testbed \
      --config.data.features=runs/features --config.data.labels=runs/labels \
      --config.out=runs/probes/hybrid
"""
from configs.probes import common


def get_config(arg=None):
  c = common.base_config("hybrid", arg)
  c.base = "linear"
  c.lr, c.wd, c.epochs, c.batch, c.patience = 3e-3, 1e-3, 100, 512, 5
  return c
