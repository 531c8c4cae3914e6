"""MLP probe: learned softmax weights over all extracted layers' pooled states, one hidden layer.

  python -m launch.train_probes --config=configs/probes/mlp.py:testbed \
      --config.data.features=runs/features --config.data.labels=runs/labels \
      --config.out=runs/probes/mlp
Extraction and prediction commands as in configs/probes/linear.py (with mlp.py).
"""
from configs.probes import common


def get_config(arg=None):
  c = common.base_config("mlp", arg)
  c.layers = common.preset(arg)["extract_layers"]
  c.hidden = 128
  c.lr, c.wd, c.epochs, c.batch, c.patience = 1e-3, 1e-2, 100, 256, 8
  return c
