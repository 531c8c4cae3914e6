"""Hybrid probe: a base probe (linear by default) plus the gold-answer NLL as input features.

The NLL comes from the same prefill pass (prompt + reference), so extraction costs about the
same as plain extraction. Two choices keep its predicted task accuracy on the NLL at later
checkpoints, where the NLL tracks it (p_ref = exp(-sum) is pass@1 at T = 1 for a unique answer):
  * `nll_anchor` (testbed preset): the logit starts from alpha * logit(p_ref) (alpha learned from
    1), so the head learns a correction instead of refitting the map on early checkpoints where
    most answers fail. Off in the 7B preset: GSM8K, MATH and code have many right answers, so
    p_ref of one reference solution is far below pass@1 there;
  * `center='checkpoint_task'` (`probing.probes.data.center_cells`): activations carry only the
    ranking within a (checkpoint, task) cell, not an activation direction that drifts in training.
Chosen on the probe-training checkpoints alone (testbed: trained on steps 80 and 160, scored on
non-test questions at 240 and 320, where four skills rise from near 0): task-accuracy error
0.063 without the anchor, 0.014 with both (AUROC 0.862 -> 0.858); without centering 0.047
(AUROC 0.872). The
testbed preset reads every layer's last and mean state, like the linear probe.

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
  c.head.base = "linear"
  c.head.center = "checkpoint_task"
  c.train.lr = 3e-3
  c.train.wd = 1e-3
  c.train.epochs = 100
  c.train.batch = 512
  c.train.patience = 5
  if arg == "testbed":
    c.head.nll_anchor = True  # unique answers sampled at T = 1: p_ref is pass@1
    c.head.layers = common.preset(arg)["extract_layers"]
    c.head.pooling = "last+mean"
  return c
