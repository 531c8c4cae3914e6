"""Linear probe: logistic regression on pooled prompt states (see the presets below).

  python -m launch.extract --config=configs/probes/linear.py:testbed \
      --config.data.checkpoint=runs/testbed/checkpoints/step_1200 \
      --config.data.tasks=syn_add,syn_sort --config.data.features=runs/features
  python -m launch.train_probes --config=configs/probes/linear.py:testbed \
      --config.data.features=runs/features --config.data.labels=runs/labels \
      --config.out=runs/probes/linear
  python -m launch.predict --config=configs/probes/linear.py:testbed \
      --config.probe=runs/probes/linear/probe --config.data.checkpoint=runs/testbed/checkpoints/step_1200 \
      --config.data.tasks=syn_add,syn_sort --config.out=runs/predict/linear
The 7B preset (default, `:7b`) reads layer 16 of 32. The testbed preset reads every layer's last
and mean state (a 4-layer model gives 10 x 64 features); chosen over one middle layer's mean on
the probe-training checkpoints alone (trained on steps 80-240, scored on the non-test questions
at step 320: AUROC 0.783 vs 0.749; the skill x difficulty prior there: 0.748).
"""
from configs.probes import common


def get_config(arg=None):
  c = common.base_config("linear", arg)
  c.train.lr = 3e-3
  c.train.wd = 1e-3
  c.train.epochs = 100
  c.train.batch = 512
  c.train.patience = 5
  if arg == "testbed":
    c.head.layers = common.preset(arg)["extract_layers"]
    c.head.pooling = "last+mean"
  return c
