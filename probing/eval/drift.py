"""Is a probe stale at a new checkpoint? A label-free shift score and the audit's residual test.

Shift score. Between in-training checkpoints every representation moves: a domain classifier
tells any two checkpoints apart (`domain_auroc` is 1.0 on the testbed's pooled activations even
between consecutive probe-training checkpoints), so a direction-blind two-sample score cannot
tell a skill that regresses from one that keeps learning. What training does to a task is move
its questions' features along a learning direction (standardized cell mean of the last
probe-training checkpoint minus the first's). `ShiftMonitor` scores a new checkpoint by how far
its cell moved *back* along that direction since the previous checkpoint, in pooled within-cell
standard deviations (positive = backwards). Directions the probe removes (per-cell centered
activations) carry no cell-mean change, so for a hybrid probe the score reads its gold-answer
NLL: a model unlearning a task assigns its reference answers less likelihood.

Threshold, from the probe-training checkpoints only: the largest backwards step between
consecutive training checkpoints (0 if none) plus z_{1-alpha} times the largest standard error
of such a step (question-paired when the rows align).

Residual test. On a random audit of n of the cell's N questions, H0: |mean(Y - p)| <= tolerance
over the N questions; t = (|mean| -+ tolerance) / sqrt((1 - n/N) s^2 / n) on n - 1 df. A small
p-value says the probe's task accuracy is off by more than the tolerance at this checkpoint,
whatever the features did.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
from scipy import stats as sps
from scipy.special import ndtri

__all__ = ["ShiftMonitor", "backward_step", "residual_test", "domain_auroc"]


def _matrix(name: str, x: Any) -> np.ndarray:
  a = np.asarray(x, np.float64)
  if a.ndim == 1:
    a = a[:, None]
  if a.ndim != 2 or len(a) < 2:
    raise ValueError(f"{name}: expected [rows >= 2, features], got shape {np.shape(x)}")
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{name}: contains NaN or inf")
  return a


def backward_step(prev: np.ndarray, new: np.ndarray, direction: np.ndarray, *, paired: bool = False
                  ) -> tuple[float, float]:
  """(score, standard error): minus the change of the mean projection on `direction` from prev to
  new, in pooled within-cell sd. paired: rows are the same questions in the same order."""
  a, b = prev @ direction, new @ direction
  sd = float(np.sqrt(0.5 * (a.var(ddof=1) + b.var(ddof=1))))
  if sd == 0.0:
    return 0.0, 0.0
  if paired and len(a) == len(b):
    se = float(np.std(b - a, ddof=1) / np.sqrt(len(a)))
  else:
    se = float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
  return float(-(b.mean() - a.mean()) / sd), se / sd


@dataclasses.dataclass(frozen=True)
class ShiftMonitor:
  """A task's learning direction and alarm threshold, fitted on its probe-training checkpoints.

  mean / std: per-feature standardization of the training rows; direction: unit vector (zeros
  when training moved nothing); train_scores / train_se: the backwards-step score and its
  standard error between consecutive training checkpoints.
  """
  mean: np.ndarray
  std: np.ndarray
  direction: np.ndarray
  threshold: float
  train_scores: tuple[float, ...]
  train_se: tuple[float, ...]
  paired: bool

  @classmethod
  def fit(cls, train_cells: Sequence[Any], *, alpha: float = 0.01, paired: bool = False) -> "ShiftMonitor":
    """train_cells: the task's feature rows [N_j, F] at each probe-training checkpoint, in step order."""
    cells = [_matrix(f"train_cells[{j}]", c) for j, c in enumerate(train_cells)]
    if len(cells) < 2:
      raise ValueError(f"train_cells: need >= 2 probe-training checkpoints to calibrate, got {len(cells)}")
    if len({c.shape[1] for c in cells}) > 1:
      raise ValueError(f"train_cells: feature widths differ {[c.shape[1] for c in cells]}")
    if not 0.0 < alpha < 1.0:
      raise ValueError(f"alpha: must lie in (0, 1), got {alpha}")
    rows = np.concatenate(cells)
    mean, std = rows.mean(0), rows.std(0)
    std = np.where(std < 1e-8, 1.0, std)
    z = [(c - mean) / std for c in cells]
    d = z[-1].mean(0) - z[0].mean(0)
    norm = float(np.linalg.norm(d))
    direction = d / norm if norm > 1e-12 else np.zeros_like(d)
    steps = [backward_step(a, b, direction, paired=paired) for a, b in zip(z[:-1], z[1:])]
    scores, ses = tuple(s for s, _ in steps), tuple(e for _, e in steps)
    threshold = max(0.0, max(scores)) + float(ndtri(1.0 - alpha)) * max(ses)
    return cls(mean, std, direction, float(threshold), scores, ses, bool(paired))

  def score(self, prev: Any, new: Any) -> float:
    """Backwards step of `new` (rows [N, F]) since `prev` along the learning direction."""
    a, b = _matrix("prev", prev), _matrix("new", new)
    if a.shape[1] != len(self.mean) or b.shape[1] != len(self.mean):
      raise ValueError(f"features: expected width {len(self.mean)}, got {a.shape[1]} and {b.shape[1]}")
    return backward_step((a - self.mean) / self.std, (b - self.mean) / self.std, self.direction,
                         paired=self.paired)[0]

  def check(self, prev: Any, new: Any) -> dict:
    s = self.score(prev, new)
    return {"score": s, "threshold": self.threshold, "alarm": bool(s > self.threshold)}


def residual_test(y_audit: Any, p_audit: Any, N: int | None = None, tolerance: float = 0.0
                  ) -> tuple[float, float]:
  """(mean residual, p-value) of H0: |mean(Y - p)| <= tolerance over the N questions, with the fpc
  when N is given; tolerance 0 is the two-sided test of mean(Y - p) = 0.

  PPI++ corrects a probe's bias from the audit anyway, so a small bias is no reason to relabel;
  a tolerance says how far off the probe's own task accuracy may be before it counts as stale.
  The p-value is exact at the boundary |mu| = tolerance: P(|M| >= |m|) = sf((|m| - tol)/se) +
  sf((|m| + tol)/se) on n - 1 df. A constant residual (zero variance) gives p = 1 when it lies
  within the tolerance and p = 0 otherwise.
  """
  y, p = np.asarray(y_audit, np.float64), np.asarray(p_audit, np.float64)
  if y.shape != p.shape or y.ndim != 1 or len(y) < 2:
    raise ValueError(f"y_audit, p_audit: need two 1-D arrays of the same length >= 2, got {y.shape}, {p.shape}")
  if not tolerance >= 0:
    raise ValueError(f"tolerance: must be >= 0, got {tolerance}")
  r, n = y - p, len(y)
  fpc = 1.0 if N is None else 1.0 - n / int(N)
  if fpc < 0:
    raise ValueError(f"N: must be >= n = {n}, got {N}")
  se = float(np.sqrt(fpc * r.var(ddof=1) / n))
  m = float(r.mean())
  if se == 0.0:
    return m, 1.0 if abs(m) <= tolerance + 1e-12 else 0.0
  a = abs(m)
  return m, float(min(1.0, sps.t.sf((a - tolerance) / se, n - 1) + sps.t.sf((a + tolerance) / se, n - 1)))


def domain_auroc(reference: Any, new: Any, *, folds: int = 5, seed: int = 0, C: float = 1.0) -> float:
  """Cross-validated AUROC of a logistic classifier telling `new` rows from `reference` rows
  (0.5: indistinguishable). A direction-blind diagnostic; see the module docstring."""
  from sklearn.linear_model import LogisticRegression
  from sklearn.metrics import roc_auc_score
  from sklearn.model_selection import StratifiedKFold, cross_val_predict
  a, b = _matrix("reference", reference), _matrix("new", new)
  x = np.concatenate([a, b])
  x = (x - x.mean(0)) / np.where(x.std(0) < 1e-8, 1.0, x.std(0))
  y = np.r_[np.zeros(len(a)), np.ones(len(b))]
  folds = int(min(folds, len(a), len(b)))
  clf = LogisticRegression(C=C, max_iter=1000, class_weight="balanced")
  s = cross_val_predict(clf, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                        method="decision_function")
  return float(roc_auc_score(y, s))
