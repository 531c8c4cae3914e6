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
import os

from absl import app, logging
from ml_collections import config_flags

from launch import common
from launch.probe_io import require, task_names, write_json, write_jsonl

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/probes/*.py file.", lock_config=True)


def main(argv):
  del argv
  common.init_runtime()
  c = _CONFIG.value
  with common.user_errors():
    from probing import features, probes, train
    require(c, "data.features", "data.labels", "out")
    cfg = train.ProbeConfig.from_mapping(c.to_dict())
    tasks = task_names(c.data) or None
    sets = features.load_feature_sets(c.data.features, tasks=tasks)
    has_nll = all("nll_mean" in fs.arrays for fs in sets)
    data = train.build_data(sets, train.read_labels(c.data.labels), layers=cfg.layers,
                            pooling=cfg.pooling, tokens=cfg.encoder in probes.TOKEN_FAMILIES,
                            nll=cfg.family == "hybrid" or (c.baselines and has_nll))
    split = train.make_split(data, **c.split.to_dict())
    result = train.train_and_evaluate(data, split, cfg, olmo_source=c.data.checkpoint,
                                      with_baselines=c.baselines, sklearn_c=c.sklearn_c)
    os.makedirs(c.out, exist_ok=True)
    result["probe"].save(os.path.join(c.out, "probe"))
    write_json(os.path.join(c.out, "metrics.json"), result["metrics"] | {"config": c.to_dict()})
    write_jsonl(os.path.join(c.out, "predictions.jsonl"), result["records"])
  m = result["metrics"]
  logging.info("%s: test primary AUROC %s (train up to step %s); baselines %s", cfg.family,
               m["probe"].get("auroc", {}).get("primary", {}).get("mean"), split.train_upto_step,
               {k: v.get("auroc", {}).get("primary", {}).get("mean") for k, v in m.get("baselines", {}).items()})
  print(json.dumps({"out": c.out, "primary_auroc": m["probe"].get("auroc", {}).get("primary", {}).get("mean")}))


if __name__ == "__main__":
  app.run(main)
