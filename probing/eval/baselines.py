"""Baselines on the same splits as the probes, prediction records, and their evaluation.

Baselines: the task prior (mean training pass@1 of the task), the task x difficulty prior,
the gold-answer NLL (no training; p = exp(-NLL), a monotone map of the score -NLL, from the
mean or the sum over reference tokens) and sklearn's LogisticRegression on the same
standardized features. All fitted on training rows only.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from probing.eval import metrics

if TYPE_CHECKING:  # rows and splits of probing.probes.data (which trains on these evaluations)
  from probing.probes.data import ProbeData, Split


def baselines(data: ProbeData, split: Split, *, sklearn_c: float = 0.1, use_sklearn: bool = True
              ) -> dict[str, np.ndarray]:
  """Predicted p per row for each baseline, fitted on split.train only."""
  tr = np.asarray(split.train, bool)
  y = data.y
  overall = float(np.mean(y[tr]))
  task_p = {t: float(np.mean(y[tr & (data.task == t)])) for t in set(data.task[tr])}
  out = {"task_prior": np.asarray([task_p.get(t, overall) for t in data.task])}
  diff_p: dict[tuple, list] = {}
  for t, d, v in zip(data.task[tr], data.difficulty[tr], y[tr]):
    if not np.isnan(d):
      diff_p.setdefault((t, d), []).append(v)
  out["task_difficulty_prior"] = np.asarray([
      float(np.mean(diff_p[(t, d)])) if (t, d) in diff_p else task_p.get(t, overall)
      for t, d in zip(data.task, data.difficulty)])
  if "nll" in data.inputs:  # no training: a monotone map of -NLL into (0, 1]
    out["gold_nll_mean"] = np.exp(-data.inputs["nll"][:, 0])
    out["gold_nll_sum"] = np.exp(-data.inputs["nll"][:, 1])
  if use_sklearn and "x" in data.inputs:
    out["sklearn_logreg"] = sklearn_logreg(data.inputs["x"].reshape(len(data), -1), y, tr, c=sklearn_c)
  return out


def sklearn_logreg(x: np.ndarray, y: np.ndarray, train: np.ndarray, *, c: float = 0.1,
                   max_iter: int = 1000) -> np.ndarray:
  """StandardScaler + LogisticRegression on training rows (each row twice: weights y, 1 - y)."""
  from sklearn.linear_model import LogisticRegression
  mean, std = x[train].mean(0), x[train].std(0)
  xs = (x - mean) / np.where(std < 1e-6, 1.0, std)
  n = int(train.sum())
  model = LogisticRegression(C=c, max_iter=max_iter)
  model.fit(np.concatenate([xs[train], xs[train]]), np.r_[np.ones(n), np.zeros(n)],
            sample_weight=np.r_[y[train], 1 - y[train]])
  return model.predict_proba(xs)[:, 1]


def to_records(data: ProbeData, p: np.ndarray, rows=None) -> list[dict]:
  """Prediction records keyed by (checkpoint, task, question_id), with labels where known."""
  idx = np.arange(len(data)) if rows is None else np.flatnonzero(np.asarray(rows, bool))
  nan = lambda v: None if np.isnan(v) else float(v)  # noqa: E731
  return [{"checkpoint": str(data.checkpoint[i]), "checkpoint_step": int(data.step[i]),
           "task": str(data.task[i]), "question_id": str(data.question_id[i]), "p": float(p[i]),
           "c": nan(data.c[i]), "k": nan(data.k[i]), "greedy": nan(data.greedy[i]),
           "difficulty": nan(data.difficulty[i])} for i in idx]


def evaluate(data: ProbeData, p: np.ndarray, rows=None) -> dict:
  """Primary/greedy/threshold AUROC, Brier, ECE and task-accuracy error on labeled rows."""
  rows = np.ones(len(data), bool) if rows is None else np.asarray(rows, bool)
  if not rows.any():
    return {"n_rows": 0}
  sub, ps = data.subset(rows), np.asarray(p)[rows]
  recs = to_records(sub, ps)
  out = {"auroc": metrics.auroc_summary(recs), "n_rows": int(rows.sum())}
  for summary in out["auroc"].values():
    summary["cells"] = {f"{t}@{s}": v for (t, s), v in summary["cells"].items()}
  out["brier"] = metrics.brier(ps, sub.y, k=sub.k)
  out["ece"] = metrics.ece(ps, sub.c, sub.k)
  errs = [abs(ps[m].mean() - sub.y[m].mean()) for t, s in set(zip(sub.task, sub.step))
          for m in [(sub.task == t) & (sub.step == s)]]
  out["task_accuracy_mae"] = float(np.mean(errs))
  return out


def cell_accuracy(data: ProbeData, p: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict:
  """Per (checkpoint, task): predicted accuracy (mean p) with a 95% bootstrap CI over questions,
  and the measured accuracy with its error where labels are known."""
  out = {}
  for ck, task in sorted(set(zip(data.checkpoint, data.task))):
    m = (data.checkpoint == ck) & (data.task == task)
    qs, pm, y = data.question_id[m], np.asarray(p)[m], data.y[m]
    if np.isnan(y).any():
      rng = np.random.default_rng(seed)
      boot = pm[rng.integers(0, len(pm), size=(n_boot, len(pm)))].mean(axis=1)
      res = {"predicted": float(pm.mean()), "predicted_ci": [float(v) for v in np.percentile(boot, [2.5, 97.5])],
             "n_questions": int(m.sum())}
    else:
      res = metrics.task_accuracy(dict(zip(qs, pm)), dict(zip(qs, y)), n_boot=n_boot, seed=seed)
    out[f"{ck}/{task}"] = res
  return out
