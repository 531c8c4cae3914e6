"""Submodel probe: the checkpoint's own next 2 blocks after the probed layer, fine-tuned, + head.

The blocks are copied from `data.checkpoint` (the latest training checkpoint) at training time
and belong to the probe afterwards (see probing.probes.submodel).

  python -m launch.train_probes --config=configs/probes/submodel.py:testbed \
      --config.data.features=runs/features --config.data.labels=runs/labels \
      --config.data.checkpoint=runs/testbed/checkpoints/step_480 --config.out=runs/probes/submodel
Extraction as in configs/probes/attention.py (with submodel.py).
"""
from configs.probes import common


def get_config(arg=None):
  c = common.base_config("submodel", arg)
  common.use_tokens(c, arg)
  c.head.submodel_blocks = 2
  c.train.submodel_train = "all"
  c.train.block_lr_scale = 0.1
  c.train.lr = 1e-3
  c.train.wd = 1e-3
  c.train.rank_weight = 1.0  # selection protocol, frozen testbed seed 0: 0.649 vs 0.647 without (2, 4: 0.647)
  c.train.epochs = 30
  c.train.batch = 64
  c.train.patience = 5
  return c
