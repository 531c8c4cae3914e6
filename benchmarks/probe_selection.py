"""What each probe variant scores on the demo's selection protocol (forward chaining inside the
probe-training checkpoints), beside the cheap baselines on the same rows.

  python benchmarks/probe_selection.py --workdir=runs/demo --out=selection.json
  python benchmarks/probe_selection.py --workdir=runs/demo --seed=1 --variants=linear,linear+rank1

Reads a demo work dir whose probe-training checkpoints are labelled and extracted (a finished or
running `make demo`), trains each variant on the training checkpoints but the last and scores the
mean within-cell AUROC on the last one's non-test questions: the one protocol settings are chosen
on. Test questions and later checkpoints are never read. A variant is `family[+tweak...]`:
rank<w> (within-cell ranking term of weight w), wd<x> (weight decay), pertask / shared (one head per
task / one shared head), noanchor (hybrid without the NLL anchor), center / nocenter (features
centered per cell or not), ens<n> (mean logit of n seeds).
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from scipy.special import expit, logit  # noqa: E402

flags.DEFINE_string("workdir", "runs/demo", "A demo work dir (its probe-training checkpoints done).")
flags.DEFINE_integer("seed", 0, "The demo's seed (its question split).")
flags.DEFINE_string("variants", "linear,linear+rank1,linear+wd0.1,linear+pertask,linear+ens3,mlp,mlp+rank1,"
                    "mlp+ens3,attention,hybrid,hybrid+rank1,hybrid+ens3", "Comma-separated variants.")
flags.DEFINE_string("out", None, "JSON output (else printed only).")
FLAGS = flags.FLAGS


def _variant(spec: str) -> tuple[str, dict, dict, int]:
  family, *tweaks = spec.split("+")
  head, train, seeds = {}, {}, 1
  for t in tweaks:
    if t.startswith("rank"):
      train["rank_weight"] = float(t[4:])
    elif t.startswith("wd"):
      train["wd"] = float(t[2:])
    elif t in ("pertask", "shared"):
      head["per_task_heads"] = t == "pertask"
    elif t == "noanchor":
      head["nll_anchor"] = False
    elif t in ("center", "nocenter"):
      head["center"] = "checkpoint_task" if t == "center" else "none"
    elif t.startswith("ens"):
      seeds = int(t[3:])
    else:
      raise ValueError(f"variant {spec!r}: unknown tweak {t!r}")
  return family, head, train, seeds


def main(argv):
  del argv
  from launch import common  # pylint: disable=import-outside-toplevel
  common.with_testbed()
  from configs.experiments import demo as demo_config  # pylint: disable=import-outside-toplevel
  from probing.demo import pipeline  # pylint: disable=import-outside-toplevel
  from probing.eval import metrics  # pylint: disable=import-outside-toplevel
  from probing.eval.baselines import baselines  # pylint: disable=import-outside-toplevel
  from probing.probes import train_probe  # pylint: disable=import-outside-toplevel

  cfg = demo_config.get_config()
  cfg.seed = FLAGS.seed
  d = pipeline.Demo(cfg, FLAGS.workdir, print)
  fit_steps, select_step = d.train_steps[:-1], d.train_steps[-1]
  out = {"protocol": f"train on steps {fit_steps}, score on step {select_step}'s non-test questions",
         "workdir": FLAGS.workdir, "seed": FLAGS.seed, "scores": {}}

  def score(data, roles, p):
    rows = np.flatnonzero((data.step == select_step) & (roles != "test"))
    recs = [{"task": data.task[i], "checkpoint_step": int(data.step[i]), "question_id": data.question_id[i],
             "p": float(p[i]), "c": float(data.c[i]), "k": float(data.k[i])} for i in rows]
    return metrics.primary_auroc(recs)["mean"]

  for spec in [v for v in FLAGS.variants.split(",") if v]:
    family, head_kw, train_kw, seeds = _variant(spec)
    fam = d.families[family]
    fam.head.update(head_kw)
    fam.train.update(train_kw)
    t0 = time.perf_counter()
    data, head, train_cfg = d.data(d.train_steps, family)
    split, roles = d.split(data, fit_steps[-1])
    source = d.load(d.checkpoints([fit_steps[-1]])[0][1]) if head.encoder == "submodel" else None
    z = 0.0
    for s in range(seeds):
      train_cfg = train_cfg.__class__(**{**train_cfg.__dict__, "seed": train_cfg.seed + s})
      probe = train_probe(data, split, head, train_cfg, olmo_source=source)
      z = z + logit(np.clip(probe.predict(data, center_rows=roles != "test"), 1e-6, 1 - 1e-6))
    out["scores"][spec] = score(data, roles, expit(z / seeds))
    print(f"{spec:24s} {out['scores'][spec]:.4f}  ({time.perf_counter() - t0:.0f}s)", flush=True)
    fam.head.update({k: demo_config.get_config().families[family].head[k] for k in head_kw})
    fam.train.update({k: demo_config.get_config().families[family].train[k] for k in train_kw})
    if "baseline:gold_nll_sum" not in out["scores"]:
      for name, p in baselines(data, split, questions={(t, q.id): q for t in d.task_names
                                                      for q in d.questions(t)}).items():
        out["scores"]["baseline:" + name] = score(data, roles, p)
        print(f"{'baseline:' + name:24s} {out['scores']['baseline:' + name]:.4f}", flush=True)
  if FLAGS.out:
    with open(FLAGS.out + ".tmp", "w") as f:
      json.dump(out, f, indent=2)
    os.replace(FLAGS.out + ".tmp", FLAGS.out)


if __name__ == "__main__":
  app.run(main)
