"""pass@k: predicted from a question's p (one forward pass), and measured without bias from c of n.

A probe predicts p, the chance one sample is right; k samples independent given the question
are all wrong with probability (1 - p)^k. The measured side is the unbiased estimator of Chen et
al. (2021): the chance that k of the n drawn samples, taken without replacement, include a
correct one.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import gammaln

__all__ = ["pass_at_k_from_p", "unbiased_pass_at_k"]


def pass_at_k_from_p(p: Any, k: Any) -> np.ndarray:
  """pass@k = 1 - (1 - p)^k: k samples, independent given the question, each right w.p. p."""
  p = np.asarray(p, np.float64)
  k = np.asarray(k)
  if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
    raise ValueError("p: values must lie in [0, 1]")
  if np.any(k != np.round(k)) or np.any(k < 1):
    raise ValueError(f"k: must be integers >= 1, got {k!r}")
  with np.errstate(divide="ignore"):  # p = 1: log1p(-1) = -inf, and expm1(-inf) = -1 is right
    out = np.where(k == 1, p, -np.expm1(k * np.log1p(-p)))  # exact at k=1; precise for small p
  return out if out.ndim else out[()]


def unbiased_pass_at_k(c: Any, n: Any, k: Any) -> np.ndarray:
  """Unbiased pass@k from c correct of n samples (Chen et al. 2021): 1 - C(n-c, k) / C(n, k).

  Computed as -expm1(log C(n-c, k) - log C(n, k)) with log-gamma, so large n neither overflows
  nor loses small values; exactly 1 when n - c < k and exactly 0 when c = 0.
  """
  c, n, k = np.broadcast_arrays(np.asarray(c), np.asarray(n), np.asarray(k))
  for name, v in (("c", c), ("n", n), ("k", k)):
    if not np.all(np.isfinite(v.astype(np.float64))) or np.any(v != np.round(v)):
      raise ValueError(f"{name}: must be integers")
  c, n, k = (v.astype(np.float64) for v in (c, n, k))
  if np.any(c < 0) or np.any(c > n):
    raise ValueError("c: need 0 <= c <= n")
  if np.any(k < 1) or np.any(k > n):
    raise ValueError("k: need 1 <= k <= n")
  wrong = n - c
  safe = np.where(wrong >= k, wrong, k)  # log C(wrong, k) only where it is defined
  log_ratio = (gammaln(safe + 1) - gammaln(safe - k + 1)) - (gammaln(n + 1) - gammaln(n - k + 1))
  out = np.where(wrong < k, 1.0, -np.expm1(log_ratio))
  out = np.where(c == 0, 0.0, out)
  return out if out.ndim else out[()]
