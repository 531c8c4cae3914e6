"""Our optax linear probe vs scikit-learn's LogisticRegression on the same features.

Usage: python -m benchmarks.probe_train --out=benchmarks/out/probe_train.json

Data: synthetic activation-like features (anisotropic spectrum, random rotation, non-zero means,
a few "massive activation" dimensions) with a logistic ground truth, at 20k x 512 and 5k x 4096;
80% train / 20% test rows. Both sides standardize with training-row statistics (timed).
  * ours: `probing.probes.train.fit` with the linear family and the hyper-parameters of
    configs/probes/linear.py (adamw, minibatches, cosine schedule, the whole loop in one jit,
    early stopping on the first 10% of training rows, which it does not train on);
  * sklearn: lbfgs LogisticRegression at the C (of 1 ... 1e-4) that scores best on
    the same validation rows (selection untimed), refitted on all training rows (timed).
Times are warm (after one untimed call each), interleaved, median of `--repeats`.
`ratio` = sklearn seconds / ours (the smaller over the two sizes); bars: ours' test AUROC is not
below sklearn's by more than 0.005, and ratio >= 3.
"""
from __future__ import annotations

import argparse
import json
import statistics

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from benchmarks import common
from configs.probes import linear as linear_config
from probing.probes import ProbeSpec, build_probe, configs_from
from probing.probes.train import fit
from probing.probes.trained import apply

CASES = ((20000, 512), (5000, 4096))
C_GRID = (1.0, 0.1, 0.01, 0.001, 0.0001)


def activation_like(n: int, d: int, seed: int = 0):
  """Features with an LLM-residual-like spectrum and a logistic ground truth (labels, logits)."""
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  x = (rng.normal(size=(n, d)) / np.sqrt(1 + np.arange(d))) @ q.T + 0.5 * rng.normal(size=d)
  x[:, :4] *= 30.0  # a few massive-activation dimensions
  xs = (x - x.mean(0)) / x.std(0)
  logit = 2.0 * xs @ (rng.normal(size=d) / np.sqrt(d))
  y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
  return x.astype(np.float32), y, logit


def _standardize(x, rows):
  mean, std = x[rows].mean(0), x[rows].std(0)
  return (x - mean) / np.where(std < 1e-6, 1.0, std)


def run_case(n: int, d: int, repeats: int) -> dict:
  x, y, logit = activation_like(n, d)
  n_train = int(0.8 * n)
  n_val = n_train // 10
  train_rows, test = np.arange(n) < n_train, np.arange(n) >= n_train
  _, cfg = configs_from(linear_config.get_config())
  zeros = lambda m: np.zeros(m, np.int32)  # noqa: E731
  state = {}

  def ours():
    xs = _standardize(x, train_rows).astype(np.float32)[:, None, :]
    probe = build_probe(ProbeSpec("linear", n_layers=1, feature_dim=d), cfg.seed)
    fit_rows = slice(n_val, n_train)
    probe, log, _ = fit(probe, {"x": xs[fit_rows], "y": y[fit_rows], "task": zeros(n_train - n_val)},
                              {"x": xs[:n_val], "y": y[:n_val], "task": zeros(n_val)}, cfg)
    state["ours"] = (probe, xs, log)

  xs0 = _standardize(x, train_rows)
  val_auc = {}
  for c in C_GRID:  # model selection for sklearn on the same validation rows (untimed)
    m = LogisticRegression(C=c, max_iter=2000).fit(xs0[n_val:n_train], y[n_val:n_train])
    val_auc[c] = roc_auc_score(y[:n_val], m.decision_function(xs0[:n_val]))
  best_c = max(val_auc, key=val_auc.get)

  def sklearn():
    xs = _standardize(x, train_rows)
    state["sklearn"] = LogisticRegression(C=best_c, max_iter=2000).fit(xs[train_rows], y[train_rows])

  ours()  # compile
  sklearn()
  times = common.interleaved({"ours": ours, "sklearn": sklearn}, rounds=repeats, min_seconds=0.0)
  probe, xs, log = state["ours"]
  p_ours = apply(probe, {"x": xs[test], "task": zeros(int(test.sum()))})
  auc_ours = roc_auc_score(y[test], p_ours)
  auc_sk = roc_auc_score(y[test], state["sklearn"].decision_function(xs0[test]))
  med = lambda k: statistics.median(s.seconds_per_call for s in times[k])  # noqa: E731
  t_ours, t_sk = med("ours"), med("sklearn")
  foreign = [s.foreign_cores for v in times.values() for s in v if s.foreign_cores is not None]
  return {"n": n, "d": d, "n_train": n_train, "ours_seconds": t_ours, "sklearn_seconds": t_sk,
          "samples": {k: [s.seconds_per_call for s in v] for k, v in times.items()},
          "foreign_cores_median": statistics.median(foreign) if foreign else None, "ratio": t_sk / t_ours, "auroc_ours": auc_ours, "auroc_sklearn": auc_sk,
          "auroc_diff": auc_ours - auc_sk, "auroc_oracle": roc_auc_score(y[test], logit[test]),
          "sklearn_c": best_c, "sklearn_val_auroc": val_auc, "sklearn_iters": int(state["sklearn"].n_iter_[0]),
          "ours_epochs": log["epochs_run"],
          "ours_config": {k: getattr(cfg, k) for k in ("lr", "wd", "epochs", "batch", "patience", "schedule")}}


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", required=True)
  ap.add_argument("--repeats", type=int, default=3)
  args = ap.parse_args()
  cases = {f"{n}x{d}": run_case(n, d, args.repeats) for n, d in CASES}
  ratio = min(c["ratio"] for c in cases.values())
  diff = min(c["auroc_diff"] for c in cases.values())
  out = {"benchmark": "probe_train", "ratio": ratio, "auroc_diff_min": diff,
         "bars": {"auroc_not_below_sklearn_by_0.005": diff >= -0.005, "ratio_ge_3": ratio >= 3},
         "cases": cases, "machine": common.machine()}
  common.write_json(args.out, out)
  print(json.dumps({k: out[k] for k in ("ratio", "auroc_diff_min", "bars")}
                   | {n: {k: round(c[k], 4) for k in ("ours_seconds", "sklearn_seconds", "ratio", "auroc_ours",
                                                      "auroc_sklearn")} for n, c in cases.items()}))


if __name__ == "__main__":
  main()
