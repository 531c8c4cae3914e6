"""Linear probe: logistic regression on one layer's pooled state (mean over prompt tokens).

  python -m launch.extract --config=configs/probes/linear.py:testbed \
      --config.data.checkpoint=runs/testbed/checkpoints/step_1200 \
      --config.data.tasks=syn_add,syn_sort --config.data.features=runs/features
  python -m launch.train_probes --config=configs/probes/linear.py:testbed \
      --config.data.features=runs/features --config.data.labels=runs/labels \
      --config.out=runs/probes/linear
  python -m launch.predict --config=configs/probes/linear.py:testbed \
      --config.probe=runs/probes/linear/probe --config.data.checkpoint=runs/testbed/checkpoints/step_1200 \
      --config.data.tasks=syn_add,syn_sort --config.out=runs/predict/linear
The 7B preset (default, `:7b`) reads layer 16 of 32.
"""
from configs.probes import common


def get_config(arg=None):
  c = common.base_config("linear", arg)
  c.lr, c.wd, c.epochs, c.batch, c.patience = 3e-3, 1e-3, 100, 512, 5
  return c
