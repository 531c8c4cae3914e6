"""The audits a later checkpoint gets, and the probe offset each one carries to the next checkpoint.

Every later (task, checkpoint) cell is audited (`probing.demo.audit`). Its audit fixes the probe's
per-task offset (`probing.eval.audited.recalibration`), and the next checkpoint of the task reads
the probe through that offset: the drift alarm's residual test and the one-pass pass@k do, so
neither counts again a bias the last audit already measured. The first later checkpoint of a task
has no audit before it and reads the probe as trained.
"""
from __future__ import annotations

import zlib
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy.special import expit, logit

from probing.demo.records import cell_key
from probing.eval import audit as audit_lib
from probing.eval import audited as audited_lib

__all__ = ["audit_draws", "carried_offsets", "match_offsets", "pass1_offsets", "previous_cells"]

_EDGE = 1e-6


def audit_draws(task: str, step: int, N: int, n: int, draws: int, seed: int) -> list[np.ndarray]:
  """The `draws` random audits (SRSWOR of min(n, N) of the cell's N questions) of one cell, from
  (seed, cell, n) alone; the first is the representative one the report shows."""
  rng = np.random.default_rng([int(seed), zlib.crc32(cell_key(task, step).encode()), int(n)])
  m = min(int(n), int(N))
  return [audit_lib.draw_audit(int(N), m, seed=rng).indices for _ in range(int(draws))]


def match_offsets(p: np.ndarray, weight: np.ndarray, target: np.ndarray,
                  predict: Callable[[np.ndarray], np.ndarray] = lambda q: q, iters: int = 36) -> np.ndarray:
  """Row d's logit offset s_d with the `weight`ed mean of predict(expit(logit(p[d]) + s_d)) equal
  to target[d], for all rows at once (bisection on [-40, 40]; `predict` must rise with p)."""
  lp = logit(np.clip(p, _EDGE, 1.0 - _EDGE))
  lo, hi = np.full(len(target), -40.0), np.full(len(target), 40.0)
  total = np.maximum(weight.sum(1), 1e-300)
  for _ in range(int(iters)):
    mid = 0.5 * (lo + hi)
    above = (predict(expit(lp + mid[:, None])) * weight).sum(1) / total > target
    lo, hi = np.where(above, lo, mid), np.where(above, mid, hi)
  return 0.5 * (lo + hi)


def pass1_offsets(cell: Mapping, draws: Sequence[np.ndarray]) -> list[float]:
  """`probing.eval.audited.recalibration` of each audit draw (c/k labels of the audited questions)."""
  return [audited_lib.recalibration(cell["c"][i] / cell["k"][i], cell["p"][i], cell["k"][i]) for i in draws]


def previous_cells(cells: Mapping[tuple[str, int], object], later_steps: Sequence[int]
                   ) -> dict[tuple[str, int], tuple[str, int] | None]:
  """(task, step) -> the task's previous later cell (None at its first): whose audit it carries."""
  out: dict[tuple[str, int], tuple[str, int] | None] = {}
  for task in sorted({t for t, _ in cells}):
    prev = None
    for step in sorted(int(s) for s in later_steps):
      if (task, step) in cells:
        out[(task, step)], prev = prev, (task, step)
  return out


def carried_offsets(cells: Mapping[tuple[str, int], Mapping], later_steps: Sequence[int], *, audit_size: int,
                    draws: int, seed: int,
                    fit: Callable[[Mapping, Sequence[np.ndarray]], list[float]] = pass1_offsets
                    ) -> dict[tuple[str, int], list[float] | None]:
  """(task, step) -> one offset per audit draw, carried into this later cell: `fit` (the pass@1
  recalibration unless told) on draw d of the task's previous later cell (its questions, their
  c of k labels, the probe's p as trained); None at a task's first later cell. `cells` hold `p`,
  `c`, `k` arrays per question."""
  out: dict[tuple[str, int], list[float] | None] = {}
  for key, prev in previous_cells(cells, later_steps).items():
    cell = cells[prev] if prev is not None else None
    out[key] = None if cell is None else fit(cell, audit_draws(*prev, len(cell["p"]), audit_size, draws, seed))
  return out
