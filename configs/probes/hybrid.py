"""Hybrid probe: a base probe (linear by default) plus the gold-answer NLL as input features.

The NLL comes from the same prefill pass (prompt + reference), so extraction costs about the
same as plain extraction. `center='checkpoint_task'` (`probing.probes.data.center_cells`) would
keep only the ranking within a (checkpoint, task) cell from the activations, not a direction that
drifts in training. `nll_anchor`: the logit starts from alpha * logit(p_ref) (alpha learned from
1), so the head learns a correction to the NLL's ranking instead of refitting it from early
checkpoints where most answers fail. With many valid answers (GSM8K, MATH, code; the testbed's
trace skills) p_ref is far below pass@1, but its ranking still carries. Chosen on the selection
protocol (frozen testbed, seed 0: fit on steps 80-240, scored on step 320's non-test questions),
with weight decay 100: AUROC 0.768 uncentered, 0.761 centered, 0.614 without the anchor (on the
earlier mixture: 0.801 with the anchor vs 0.756 without; an mlp base 0.638).
Re-select it on a real run's own probe-training checkpoints. It reads the same pooled inputs
as every other family.

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
  c.head.center = "none"
  c.head.nll_anchor = True
  c.train.lr = 3e-3
  # Selection protocol, frozen testbed seed 0 (gold NLL alone 0.768): weight decay 1 / 10 / 100 ->
  # 0.762 / 0.770 / 0.768, and with a ranking term of weight 1: - / 0.764 / 0.771 (4: 0.768); one
  # head per task 0.765, 3 seeds 0.768. The activations mostly add noise to the NLL there.
  c.train.wd = 100.0
  c.train.rank_weight = 1.0
  c.train.epochs = 100
  c.train.batch = 512
  c.train.patience = 5
  return c
