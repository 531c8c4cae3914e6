"""95% question-cluster bootstrap intervals for mean within-cell AUROC, and paired differences.

A question is asked at every checkpoint, so its rows are not independent: the bootstrap draws
questions (per task, with replacement) once per replicate and reweights every cell the
question appears in. Cells are those defined in the full sample (>= `min_pos` positive and
>= `min_neg` negative sampled outcomes); a replicate averages the cells it can still score.
A paired difference applies the same draws to both predictors, so their shared question noise
cancels: that is the interval a "beats" needs.

Vectorized: per cell, with W the (replicates x questions) draw counts, positives P = W*c and
negatives N = W*(k-c), the weighted AUROC is sum_ij P_i N_j [p_i > p_j] (+ 1/2 on ties)
over sum P * sum N, one (replicates x n) @ (n x n) product per cell.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping, Sequence

import numpy as np

Record = Mapping[str, object]


def _cells(records: Iterable[Record]) -> dict[tuple[str, int], dict[str, tuple[float, float, float]]]:
  """(task, step) -> question_id -> (p, c, k)."""
  out: dict[tuple[str, int], dict[str, tuple[float, float, float]]] = defaultdict(dict)
  for r in records:
    out[(str(r["task"]), int(r["checkpoint_step"]))][str(r["question_id"])] = (
        float(r["p"]), float(r["c"]), float(r["k"]))
  return out


def question_draws(questions_by_task: Mapping[str, Sequence[str]], n_boot: int, seed: int) -> dict[str, dict]:
  """task -> {question_id: column of draw counts}: replicate b draws each task's questions
  with replacement (multinomial counts)."""
  rng = np.random.default_rng(seed)
  out = {}
  for task in sorted(questions_by_task):
    qs = sorted(questions_by_task[task])
    counts = rng.multinomial(len(qs), np.full(len(qs), 1.0 / len(qs)), size=n_boot).astype(np.float64)
    out[task] = {q: counts[:, i] for i, q in enumerate(qs)}
  return out


def _cell_auroc(p: np.ndarray, c: np.ndarray, k: np.ndarray, w: np.ndarray) -> np.ndarray:
  """Weighted AUROC per row of weights `w` (replicates x n); NaN where a side is empty."""
  gt = (p[:, None] > p[None, :]).astype(np.float64) + 0.5 * (p[:, None] == p[None, :])
  pos, neg = w * c, w * (k - c)
  num = ((pos @ gt) * neg).sum(1)
  den = pos.sum(1) * neg.sum(1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(den > 0, num / den, np.nan)


def _defined(c: np.ndarray, k: np.ndarray, min_pos: int, min_neg: int) -> bool:
  return c.sum() >= min_pos and (k - c).sum() >= min_neg


def bootstrap_auroc(by_predictor: Mapping[str, Iterable[Record]], *, n_boot: int = 1000, seed: int = 0,
                    min_pos: int = 5, min_neg: int = 5) -> dict[str, np.ndarray | dict]:
  """Per predictor: the point mean within-cell AUROC and its `n_boot` replicates.

  Every predictor must cover the same (task, step, question) rows (they are scored on the
  same labels); cells come from the labels alone, so all predictors average the same cells.
  Returns {name: {"mean", "replicates" (n_boot,), "per_task": {task: (mean, replicates)},
  "cells"}}.
  """
  names = list(by_predictor)
  cells = {n: _cells(by_predictor[n]) for n in names}
  ref = cells[names[0]]
  for n in names[1:]:
    if {c: set(q) for c, q in cells[n].items()} != {c: set(q) for c, q in ref.items()}:
      raise ValueError(f"predictor {n!r} does not cover the same questions as {names[0]!r}")
  questions: dict[str, set] = defaultdict(set)
  for (task, _), qs in ref.items():
    questions[task] |= set(qs)
  draws = question_draws(questions, n_boot, seed)
  out: dict[str, dict] = {}
  for n in names:
    point: dict[tuple, float] = {}
    reps: dict[tuple, np.ndarray] = {}
    for cell, qs in sorted(cells[n].items()):
      ids = sorted(qs)
      p, c, k = (np.asarray([qs[q][j] for q in ids]) for j in range(3))
      if not _defined(c, k, min_pos, min_neg):
        continue
      w = np.stack([draws[cell[0]][q] for q in ids], axis=1)
      point[cell] = float(_cell_auroc(p, c, k, np.ones((1, len(ids))))[0])
      reps[cell] = _cell_auroc(p, c, k, w)
    out[n] = _aggregate(point, reps, n_boot)
  return out


def _aggregate(point: dict, reps: dict, n_boot: int) -> dict:
  def mean_of(keys):
    if not keys:
      return None, np.full(n_boot, np.nan)
    stack = np.stack([reps[k] for k in keys])
    defined = (~np.isnan(stack)).sum(0)
    total = np.where(np.isnan(stack), 0.0, stack).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
      return float(np.mean([point[k] for k in keys])), np.where(defined > 0, total / defined, np.nan)
  tasks = sorted({t for t, _ in point})
  mean, replicates = mean_of(sorted(point))
  return {"mean": mean, "replicates": replicates, "cells": len(point),
          "per_task": {t: mean_of([c for c in sorted(point) if c[0] == t]) for t in tasks}}


def interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float | None, float | None]:
  r = np.asarray(replicates, float)
  r = r[~np.isnan(r)]
  if not r.size:
    return None, None
  lo, hi = np.percentile(r, [50 * (1 - level), 100 - 50 * (1 - level)])
  return float(lo), float(hi)


def summarize(result: Mapping) -> dict:
  """`{mean, ci_low, ci_high, cells, per_task: {task: {mean, ci_low, ci_high}}}` of one predictor."""
  lo, hi = interval(result["replicates"])
  per_task = {}
  for t, (m, r) in result["per_task"].items():
    tlo, thi = interval(r)
    per_task[t] = {"mean": m, "ci_low": tlo, "ci_high": thi}
  return {"mean": result["mean"], "ci_low": lo, "ci_high": hi, "cells": result["cells"], "per_task": per_task}


def paired_difference(a: Mapping, b: Mapping) -> dict:
  """a - b, two results of one `bootstrap_auroc` call (same draws): point, 95% CI and the share
  of replicates where a does not beat b (a one-sided bootstrap p-value)."""
  if a["mean"] is None or b["mean"] is None:
    return {"diff": None, "ci_low": None, "ci_high": None, "p_not_better": None}
  d = np.asarray(a["replicates"]) - np.asarray(b["replicates"])
  lo, hi = interval(d)
  d = d[~np.isnan(d)]
  return {"diff": a["mean"] - b["mean"], "ci_low": lo, "ci_high": hi,
          "p_not_better": float(np.mean(d <= 0)) if d.size else None}
