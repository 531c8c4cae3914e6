"""Evaluation metrics for per-question pass@1 predictions (numpy + scikit-learn only).

A question with c correct out of k samples contributes k binary outcomes, all scored by the
probe's one prediction p; AUROC, Brier, ECE and reliability weigh those outcomes, so they
equal the scikit-learn value on the expanded per-sample data. AUROC is computed within
each (task, checkpoint_step) cell and then averaged, because pooling cells would reward
merely knowing which task or step is easier.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score

_RECORD_FIELDS = ("task", "checkpoint_step", "question_id", "p", "c", "k")


class ReliabilityCurve(NamedTuple):
  """Non-empty bins only, as in sklearn's `calibration_curve`; counts are sampled outcomes."""
  mean_pred: np.ndarray
  frac_pos: np.ndarray
  counts: np.ndarray


class CrossCheckpointMatrix(NamedTuple):
  """matrix[i, j]: mean within-task AUROC of probes trained up to train_steps[i] at test_steps[j]."""
  matrix: np.ndarray
  train_steps: list[int]
  test_steps: list[int]


# ----------------------------------------------------------------------------- validation


def _array(name: str, x: Any, *, lo: float | None = None, hi: float | None = None) -> np.ndarray:
  """A finite 1-D float array, so errors name the field instead of surfacing deep in numpy."""
  try:
    a = np.asarray(x, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name}: not numeric ({e})") from None
  if a.ndim == 0:
    a = a.reshape(1)
  if a.ndim != 1:
    raise ValueError(f"{name}: expected a 1-D array, got shape {a.shape}")
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{name}: contains NaN or inf at index {int(np.flatnonzero(~np.isfinite(a))[0])}")
  if lo is not None and a.size and a.min() < lo:
    raise ValueError(f"{name}: values must be >= {lo}; got min {a.min():g}")
  if hi is not None and a.size and a.max() > hi:
    raise ValueError(f"{name}: values must be <= {hi}; got max {a.max():g}")
  return a


def _same_length(**arrays: np.ndarray) -> int:
  lengths = {k: len(v) for k, v in arrays.items()}
  if len(set(lengths.values())) > 1:
    raise ValueError(f"length mismatch: {lengths}")
  return next(iter(lengths.values()))


def _pck(p: Any, c: Any, k: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Validates predictions p with c correct of k samples; a scalar k broadcasts."""
  p = _array("p", p, lo=0.0, hi=1.0)
  c = _array("c", c, lo=0.0)
  k = _array("k", k)
  if k.size == 1 and c.size != 1:
    k = np.full_like(c, k[0])
  _same_length(p=p, c=c, k=k)
  if k.size and k.min() <= 0:
    raise ValueError(f"k: every question needs k > 0 samples; got min {k.min():g}")
  bad = np.flatnonzero(c > k)
  if bad.size:
    i = int(bad[0])
    raise ValueError(f"c: c <= k must hold; at index {i} c={c[i]:g} > k={k[i]:g}")
  return p, c, k


# ----------------------------------------------------------------------------- AUROC


def weighted_auroc(p: Any, c: Any, k: Any) -> float:
  """AUROC with c positives and k-c negatives per question, all scored by its p.

  Exactly sklearn's `roc_auc_score` on the expanded per-sample data (ties count one half).
  Returns NaN when there is no positive or no negative outcome.
  """
  p, c, k = _pck(p, c, k)
  pos, neg = c, k - c
  if pos.sum() <= 0 or neg.sum() <= 0:
    return float("nan")
  y = np.concatenate([np.ones_like(p), np.zeros_like(p)])
  s = np.concatenate([p, p])
  w = np.concatenate([pos, neg])
  keep = w > 0
  return float(roc_auc_score(y[keep], s[keep], sample_weight=w[keep]))


def _binary_auroc(p: np.ndarray, y: np.ndarray) -> float:
  if y.min() == y.max():
    return float("nan")
  return float(roc_auc_score(y, p))


def _columns(records: Any, need_greedy: bool = False) -> dict[str, np.ndarray]:
  """Column arrays from row dicts, a column mapping, a numpy structured array, or a table."""
  fields = _RECORD_FIELDS + (("greedy",) if need_greedy else ())
  if isinstance(records, np.ndarray) and records.dtype.names:
    get = lambda f: records[f] if f in records.dtype.names else None  # noqa: E731
  elif isinstance(records, Mapping):
    get = lambda f: records.get(f)  # noqa: E731
  elif hasattr(records, "column_names"):  # pyarrow.Table
    get = lambda f: (records.column(f).to_pylist() if f in records.column_names else None)  # noqa: E731
  elif hasattr(records, "columns") and hasattr(records, "iloc"):  # pandas.DataFrame
    get = lambda f: records[f].to_numpy() if f in records.columns else None  # noqa: E731
  else:
    rows = list(records)
    for i, r in enumerate(rows):
      missing = [f for f in _RECORD_FIELDS if f not in r]
      if missing:
        raise ValueError(f"record {i}: missing field(s) {missing}")
    get = lambda f: [r.get(f) for r in rows] if any(f in r for r in rows) else None  # noqa: E731
  cols: dict[str, Any] = {}
  for f in fields:
    v = get(f)
    if v is None:
      if f == "greedy":
        raise ValueError("greedy: field missing from records")
      raise ValueError(f"{f}: field missing from records")
    cols[f] = v
  out = {"task": np.asarray([str(t) for t in cols["task"]], dtype=object),
         "question_id": np.asarray([str(q) for q in cols["question_id"]], dtype=object)}
  step = _array("checkpoint_step", cols["checkpoint_step"])
  if np.any(step != np.round(step)):
    raise ValueError("checkpoint_step: must be integers")
  out["checkpoint_step"] = step.astype(np.int64)
  out["p"], out["c"], out["k"] = _pck(cols["p"], cols["c"], cols["k"])
  if need_greedy:  # None / NaN mean "not run"
    g = np.asarray([np.nan if v is None else float(v) for v in cols["greedy"]], dtype=np.float64)
    ok = ~np.isnan(g)
    if np.any((g[ok] != 0) & (g[ok] != 1)):
      raise ValueError("greedy: values must be 0, 1 or null")
    out["greedy"] = g
  _same_length(**out)
  return out


def _cell_aurocs(cols: Mapping[str, np.ndarray], target: str, threshold: float,
                 min_pos: int, min_neg: int) -> tuple[dict[tuple[str, int], float], int]:
  """AUROC per (task, checkpoint_step) cell where defined, and the number of cells skipped."""
  groups: dict[tuple[str, int], list[int]] = defaultdict(list)
  seen: set[tuple[str, int, str]] = set()
  for i, (t, s, q) in enumerate(zip(cols["task"], cols["checkpoint_step"], cols["question_id"])):
    key = (t, int(s), q)
    if key in seen:
      raise ValueError(f"question_id: duplicate record for task={t!r} step={int(s)} question={q!r}")
    seen.add(key)
    groups[(t, int(s))].append(i)
  cells, skipped = {}, 0
  for cell in sorted(groups):
    idx = np.asarray(groups[cell])
    p, c, k = cols["p"][idx], cols["c"][idx], cols["k"][idx]
    if target == "sampled":
      n_pos, n_neg = c.sum(), (k - c).sum()
    else:
      if target == "greedy":
        y = cols["greedy"][idx]
        p, y = p[~np.isnan(y)], y[~np.isnan(y)]
      else:
        y = (c / k >= threshold).astype(np.float64)
      n_pos, n_neg = y.sum(), (1 - y).sum()
    if n_pos < min_pos or n_neg < min_neg:
      skipped += 1
      continue
    cells[cell] = weighted_auroc(p, c, k) if target == "sampled" else _binary_auroc(p, y)
  return cells, skipped


def _summarize(cells: Mapping[tuple[str, int], float], skipped: int) -> dict[str, Any]:
  by_task: dict[str, list[float]] = defaultdict(list)
  for (task, _), v in cells.items():
    by_task[task].append(v)
  return {"mean": float(np.mean(list(cells.values()))) if cells else None,
          "per_task": {t: float(np.mean(v)) for t, v in sorted(by_task.items())},
          "cells": dict(cells), "n_cells": len(cells), "n_cells_skipped": skipped}


def primary_auroc(records: Any, *, min_pos: int = 5, min_neg: int = 5) -> dict[str, Any]:
  """Mean over (task, step) cells of the weighted AUROC against the k sampled outcomes.

  A cell counts when it has >= min_pos positive and >= min_neg negative sampled outcomes.
  Returns {'mean', 'per_task', 'cells', 'n_cells', 'n_cells_skipped'}; 'mean' is None when
  no cell is defined.
  """
  cells, skipped = _cell_aurocs(_columns(records), "sampled", 0.5, min_pos, min_neg)
  return _summarize(cells, skipped)


def greedy_auroc(records: Any, *, min_pos: int = 5, min_neg: int = 5) -> dict[str, Any]:
  """As `primary_auroc`, against greedy correctness; questions whose greedy is null drop out.

  min_pos / min_neg count questions here.
  """
  cells, skipped = _cell_aurocs(_columns(records, need_greedy=True), "greedy", 0.5, min_pos, min_neg)
  return _summarize(cells, skipped)


def threshold_auroc(records: Any, *, threshold: float = 0.5, min_pos: int = 5,
                    min_neg: int = 5) -> dict[str, Any]:
  """As `primary_auroc`, against the per-question label pass@1 >= threshold (counts are questions)."""
  cells, skipped = _cell_aurocs(_columns(records), "pass1_ge", threshold, min_pos, min_neg)
  return _summarize(cells, skipped)


def auroc_summary(records: Any, *, min_pos: int = 5, min_neg: int = 5) -> dict[str, dict[str, Any]]:
  """The three reported AUROCs: 'primary', 'pass1_ge_0.5', and 'greedy' when any greedy was run."""
  try:
    cols = _columns(records, need_greedy=True)
  except ValueError as e:
    if "greedy: field missing" not in str(e):
      raise
    cols = _columns(records)
  out = {}
  for name, target in (("primary", "sampled"), ("pass1_ge_0.5", "pass1_ge"), ("greedy", "greedy")):
    if target == "greedy" and ("greedy" not in cols or np.isnan(cols["greedy"]).all()):
      continue
    out[name] = _summarize(*_cell_aurocs(cols, target, 0.5, min_pos, min_neg))
  return out


def cross_checkpoint_matrix(records_by_train_upto: Mapping[int, Any], *,
                            test_steps: Sequence[int] | None = None, later_only: bool = True,
                            min_pos: int = 5, min_neg: int = 5) -> CrossCheckpointMatrix:
  """Mean within-task primary AUROC of probes trained up to step i, evaluated at step j.

  `records_by_train_upto[i]` holds that probe's predictions (with labels) at any steps.
  Entries are NaN where no cell is defined, or where j <= i when `later_only`.
  """
  train_steps = sorted(int(s) for s in records_by_train_upto)
  per_train = {}
  for s in train_steps:
    cells, _ = _cell_aurocs(_columns(records_by_train_upto[s]), "sampled", 0.5, min_pos, min_neg)
    by_step: dict[int, list[float]] = defaultdict(list)
    for (_, step), v in cells.items():
      by_step[step].append(v)
    per_train[s] = by_step
  if test_steps is None:
    test_steps = sorted({j for by_step in per_train.values() for j in by_step})
  test_steps = [int(j) for j in test_steps]
  m = np.full((len(train_steps), len(test_steps)), np.nan)
  for a, i in enumerate(train_steps):
    for b, j in enumerate(test_steps):
      if (later_only and j <= i) or not per_train[i].get(j):
        continue
      m[a, b] = float(np.mean(per_train[i][j]))
  return CrossCheckpointMatrix(m, train_steps, test_steps)


# ----------------------------------------------------------------------------- calibration


def brier(p: Any, y: Any, *, k: Any = None) -> float:
  """Brier score; a soft target y = c/k gives the expected Brier over the k sampled outcomes.

  Computed by sklearn's `brier_score_loss` on each question split into a positive row of
  weight y and a negative row of weight 1-y (times k when given, so each outcome counts once).
  """
  p = _array("p", p, lo=0.0, hi=1.0)
  y = _array("y", y, lo=0.0, hi=1.0)
  w = np.ones_like(p) if k is None else _array("k", k)
  if w.size == 1 and p.size != 1:
    w = np.full_like(p, w[0])
  _same_length(p=p, y=y, k=w)
  if w.size == 0 or w.min() <= 0:
    raise ValueError("k: need at least one question, each with k > 0")
  labels = np.concatenate([np.ones_like(p), np.zeros_like(p)])
  weights = np.concatenate([y * w, (1 - y) * w])
  keep = weights > 0
  return float(brier_score_loss(labels[keep], np.concatenate([p, p])[keep],
                                sample_weight=weights[keep], pos_label=1))


def mse(p: Any, pass1: Any) -> float:
  """Mean squared error between predicted p and measured pass@1, per question."""
  p = _array("p", p, lo=0.0, hi=1.0)
  pass1 = _array("pass1", pass1, lo=0.0, hi=1.0)
  if _same_length(p=p, pass1=pass1) == 0:
    raise ValueError("p: empty")
  return float(np.mean((p - pass1) ** 2))


def reliability_curve(p: Any, c: Any, k: Any = 1, n_bins: int = 10) -> ReliabilityCurve:
  """Per equal-width bin: mean predicted, observed frequency, number of sampled outcomes.

  Bins follow sklearn's `calibration_curve(strategy='uniform')` edges exactly, so the result
  equals it on the expanded per-sample data. Use k=1 and c=greedy for binary labels.
  """
  p, c, k = _pck(p, c, k)
  if n_bins < 1:
    raise ValueError(f"n_bins: must be >= 1, got {n_bins}")
  edges = np.linspace(0.0, 1.0, n_bins + 1)
  ids = np.searchsorted(edges[1:-1], p)
  total = np.bincount(ids, weights=k, minlength=n_bins)
  pred = np.bincount(ids, weights=k * p, minlength=n_bins)
  obs = np.bincount(ids, weights=c, minlength=n_bins)
  nz = total > 0
  return ReliabilityCurve(pred[nz] / total[nz], obs[nz] / total[nz], total[nz])


def ece(p: Any, c: Any, k: Any = 1, n_bins: int = 10) -> float:
  """Expected calibration error over equal-width bins, weighted by sampled outcomes."""
  mean_pred, frac_pos, counts = reliability_curve(p, c, k, n_bins)
  if counts.sum() == 0:
    raise ValueError("p: empty")
  return float(np.sum(counts * np.abs(mean_pred - frac_pos)) / counts.sum())


# ----------------------------------------------------------------------------- task accuracy


def _paired(p_by_question: Any, pass1_by_question: Any) -> tuple[np.ndarray, np.ndarray]:
  """Aligns two per-question mappings by id (or takes equal-length arrays as given)."""
  if isinstance(p_by_question, Mapping) != isinstance(pass1_by_question, Mapping):
    raise ValueError("p_by_question / pass1_by_question: pass both as mappings or both as arrays")
  if isinstance(p_by_question, Mapping):
    a, b = set(p_by_question), set(pass1_by_question)
    if a != b:
      raise ValueError(f"question ids differ: {len(a - b)} only in p_by_question, "
                       f"{len(b - a)} only in pass1_by_question")
    ids = sorted(a, key=str)
    p_by_question = [p_by_question[q] for q in ids]
    pass1_by_question = [pass1_by_question[q] for q in ids]
  p = _array("p_by_question", p_by_question, lo=0.0, hi=1.0)
  y = _array("pass1_by_question", pass1_by_question, lo=0.0, hi=1.0)
  if _same_length(p_by_question=p, pass1_by_question=y) == 0:
    raise ValueError("p_by_question: no questions")
  return p, y


def abs_error(p_by_question: Any, pass1_by_question: Any) -> float:
  """|predicted task accuracy - measured task accuracy| (means over the same questions)."""
  p, y = _paired(p_by_question, pass1_by_question)
  return float(abs(p.mean() - y.mean()))


def task_accuracy(p_by_question: Any, pass1_by_question: Any, *, n_boot: int = 1000,
                  seed: int = 0) -> dict[str, Any]:
  """Predicted (mean p) and measured (mean pass@1) task accuracy with 95% bootstrap CIs.

  Questions are resampled with replacement, paired across the two, so 'abs_error_ci' reflects
  the same resampled question sets. CIs are percentile intervals.
  """
  p, y = _paired(p_by_question, pass1_by_question)
  if n_boot < 1:
    raise ValueError(f"n_boot: must be >= 1, got {n_boot}")
  rng = np.random.default_rng(seed)
  n = len(p)
  bp, by = np.empty(n_boot), np.empty(n_boot)
  chunk = max(1, 2_000_000 // n)  # bounds memory of the index matrix
  for start in range(0, n_boot, chunk):
    idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
    bp[start:start + len(idx)] = p[idx].mean(axis=1)
    by[start:start + len(idx)] = y[idx].mean(axis=1)

  def ci(x: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(x, [2.5, 97.5])
    return float(lo), float(hi)

  return {"predicted": float(p.mean()), "predicted_ci": ci(bp),
          "measured": float(y.mean()), "measured_ci": ci(by),
          "abs_error": float(abs(p.mean() - y.mean())), "abs_error_ci": ci(np.abs(bp - by)),
          "n_questions": n}


__all__ = ["ReliabilityCurve", "CrossCheckpointMatrix", "weighted_auroc", "primary_auroc",
           "greedy_auroc", "threshold_auroc", "auroc_summary", "cross_checkpoint_matrix",
           "brier", "mse", "reliability_curve", "ece", "abs_error", "task_accuracy"]
