"""Submodel probe: the checkpoint's own next 2 blocks after the probed layer, fine-tuned, + head.

The blocks are copied from `data.checkpoint` (the latest training checkpoint) at training time
and belong to the probe afterwards (see probing/probes.py).

  python -m launch.train_probes --config=configs/probes/submodel.py:testbed \
      --config.data.features=runs/features --config.data.labels=runs/labels \
      --config.data.checkpoint=runs/testbed/checkpoints/step_480 --config.out=runs/probes/submodel
Extraction as in configs/probes/attention.py (with submodel.py).
"""
from configs.probes import common


def get_config(arg=None):
  c = common.base_config("submodel", arg)
  common.use_tokens(c, arg)
  c.submodel_blocks, c.submodel_train, c.block_lr_scale = 2, "all", 0.1
  c.lr, c.wd, c.epochs, c.batch, c.patience = 1e-3, 1e-3, 30, 64, 5
  return c
