"""Trains one probe family on features + labels of earlier checkpoints; evaluates on later ones.

  python -m launch.train_probes --config=configs/probes/mlp.py:testbed \
      --config.data.features=runs/features --config.data.labels=runs/labels \
      --config.out=runs/probes/mlp
Writes <out>/probe (orbax params + probe_card.json), <out>/metrics.json (probe and baselines on
the held-out questions of later checkpoints) and <out>/predictions.jsonl (those test rows).
Bad input (labels and features that do not match, NaN features) fails before anything is written.
"""
from __future__ import annotations

import json

from absl import app, logging
from ml_collections import config_flags

from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/probes/*.py file.", lock_config=True)


def main(argv):
  del argv
  common.init_runtime()
  common.quiet_orbax_logs()
  c = common.config_of(_CONFIG)
  with common.user_errors():
    from probing import jobs
    bar = []

    def on_epoch(done, total):  # count, rate and ETA of the one jitted training loop (its upper bound)
      if not bar or done <= bar[0].done:  # a new head (one per task with per-task heads)
        bar[:] = [common.Progress(total, f"train {c.head.family}", "epochs")]
      bar[0].update(done - bar[0].done)
    result = jobs.train(c, log=logging.info, on_epoch=on_epoch)
  m = result["metrics"]
  primary = lambda block: block.get("auroc", {}).get("primary", {}).get("mean")  # noqa: E731
  logging.info("%s: test primary AUROC %s (train up to step %s); baselines %s", c.head.family,
               primary(m["probe"]), result["split"].train_upto_step,
               {k: primary(v) for k, v in m.get("baselines", {}).items()})
  print(json.dumps({"out": c.out, "primary_auroc": primary(m["probe"])}))


if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser())
