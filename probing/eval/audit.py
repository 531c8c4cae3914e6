"""Audited task accuracy: a probe's p for every question plus a small random labelled audit.

At a checkpoint nobody labelled, the probe gives p_i in [0, 1] for all N questions of a task
and a small random audit S of n questions gets generated labels Y_i (fraction correct of k
samples). The target is theta = mean of the true Y over the N questions. The probe's own mean
is biased whenever the probe is miscalibrated at this checkpoint; the audit mean alone is
unbiased but noisy. Prediction-powered inference (PPI++) keeps the audit's validity and uses
the probe only to cancel noise:

    theta_hat = mean_N(lam * p) + mean_S(Y - lam * p)

which is unbiased for any fixed lam (the second term estimates the probe's bias), and whose
variance shrinks by the share of Var(Y) that lam * p explains. lam = 0 is the audit mean,
lam = 1 plain PPI; a tuned lam never does much worse than the audit alone.

Two variance models:
  * superpopulation (default, as `ppi_py`): audit and probe set are i.i.d. draws, so the
    probe mean carries its own noise lam^2 Var(p) / N. Cross-checked against `ppi_py`.
  * design-based finite population (`finite_population=True` or `N=`): the target is the
    mean over exactly these N questions, p_all covers all of them (audit included) and S is
    a simple random sample without replacement (SRSWOR) from them. mean_N(lam * p) is then a
    known constant and the only randomness is which questions were audited, so
    Var = (1 - n/N) * S^2_{Y - lam p} / n (the difference / regression estimator, Cochran
    1977 ch. 7). This is the interval that answers "what is this task's accuracy".

The audit must be random (`draw_audit`): the estimators are unbiased because each question's
residual Y - lam p is equally likely to be audited, not because of anything the probe says.

Also: stratified PPI++ (`stratified`, Fisch et al. 2024) with Neyman allocation
(`neyman_allocation`) and the effective-sample gain over the audit alone. pass@k lives in
`probing.eval.pass_at_k`; what predict, the monitor, the watcher and the demo report at one
checkpoint (estimate, t interval, stale alarm) is `probing.eval.audited`.
numpy + scipy.special only.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import numpy as np
from scipy.special import ndtri

__all__ = [
    "Estimate", "AuditDraw", "audit_only", "ppi_plus_plus", "stratified", "neyman_allocation",
    "effective_sample_gain", "draw_audit",
]


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A point estimate of theta with its two-sided normal (1 - alpha) interval.

  lam: the power-tuning weight used (0.0 for the audit alone; a tuple with one lam per stratum,
  in sorted stratum order, for `stratified`). n: audited questions. N: questions the probe
  scored (the population size for the finite-population variants; None for the audit alone
  without a population size). method: which estimator and variance model produced it.
  """
  value: float
  ci_low: float
  ci_high: float
  std_err: float
  lam: float | tuple[float, ...]
  n: int
  N: int | None
  method: str

  @property
  def halfwidth(self) -> float:
    return 0.5 * (self.ci_high - self.ci_low)

  def covers(self, theta: float) -> bool:
    return bool(self.ci_low <= theta <= self.ci_high)


class AuditDraw(NamedTuple):
  """Audited question indices (sorted) and each one's inclusion probability under the design."""
  indices: np.ndarray
  inclusion_prob: np.ndarray


# ----------------------------------------------------------------------------- validation


def _unit(name: str, x: Any, *, min_len: int = 1) -> np.ndarray:
  """A finite 1-D float array in [0, 1] (probe outputs and pass@1 labels both live there)."""
  try:
    a = np.asarray(x, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name}: not numeric ({e})") from None
  if a.ndim != 1:
    raise ValueError(f"{name}: expected a 1-D array, got shape {a.shape}")
  if len(a) < min_len:
    raise ValueError(f"{name}: need at least {min_len} values, got {len(a)}")
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{name}: contains NaN or inf at index {int(np.flatnonzero(~np.isfinite(a))[0])}")
  if a.min() < 0.0 or a.max() > 1.0:
    raise ValueError(f"{name}: values must lie in [0, 1]; got range [{a.min():g}, {a.max():g}]")
  return a


def _audit_pair(y_audit: Any, p_audit: Any) -> tuple[np.ndarray, np.ndarray]:
  y = _unit("y_audit", y_audit, min_len=2)
  p = _unit("p_audit", p_audit, min_len=2)
  if len(y) != len(p):
    raise ValueError(f"y_audit and p_audit: length mismatch ({len(y)} vs {len(p)})")
  return y, p


def _z(alpha: float) -> float:
  alpha = float(alpha)
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha: must lie in (0, 1), got {alpha}")
  return float(ndtri(1.0 - alpha / 2.0))


def _check_ddof(ddof: int, n: int) -> int:
  if int(ddof) != ddof or not 0 <= ddof < n:
    raise ValueError(f"ddof: must be an integer in [0, n) = [0, {n}), got {ddof}")
  return int(ddof)


def _population_size(N: Any, n: int) -> int:
  if int(N) != N or N < n:
    raise ValueError(f"N: the population size must be an integer >= n = {n}, got {N}")
  return int(N)


def _estimate(value: float, var: float, z: float, *, lam, n: int, N: int | None, method: str
              ) -> Estimate:
  se = float(np.sqrt(max(var, 0.0)))
  value = float(value)
  return Estimate(value, value - z * se, value + z * se, se, lam, int(n), N, method)


# ----------------------------------------------------------------------------- estimators


def audit_only(y_audit: Any, N: int | None = None, alpha: float = 0.05, *, ddof: int = 1
               ) -> Estimate:
  """The classical audit mean with a normal CI; the baseline every probe-assisted interval beats.

  With N (the task's question count; the audit an SRSWOR from those N questions) the variance
  gets the finite-population correction (1 - n/N): auditing every question leaves no sampling
  error. ddof=1 (s^2, unbiased for S^2 under SRSWOR) by default; ddof=0 reproduces
  `ppi_py.classical_mean_ci`.
  """
  y = _unit("y_audit", y_audit, min_len=2)
  n = len(y)
  z = _z(alpha)
  ddof = _check_ddof(ddof, n)
  fpc = 1.0
  if N is not None:
    N = _population_size(N, n)
    fpc = 1.0 - n / N
  var = fpc * np.var(y, ddof=ddof) / n
  return _estimate(y.mean(), var, z, lam=0.0, n=n, N=N,
                   method="audit_only" if N is None else "audit_only_fpc")


def _tuned_lam(y: np.ndarray, p: np.ndarray, p_all: np.ndarray, finite_population: bool,
               clip: bool) -> float:
  """The variance-minimizing lam.

  Superpopulation: ppi_py's `_calc_lam_glm` for the mean, i.e.
  Cov_S(Y, p) [1/n] / ((1 + n/N) * Var(p over S and the N pooled) [1/(m-1)]); the (1 + n/N)
  accounts for the probe mean's own noise. Finite population: the probe mean is a known
  constant, so the optimum is the regression slope Cov(Y, p) / Var(p), with Var(p) from all
  N questions (known exactly) and Cov from the audit. Clipping to [0, 1] (as ppi_py) keeps
  a noisy slope from over-trusting the probe at small n.
  """
  n, m = len(y), len(p_all)
  if finite_population:
    var_p = float(np.var(p_all, ddof=1)) if m > 1 else 0.0
    cov = float(np.sum((y - y.mean()) * (p - p.mean())) / (n - 1))
  else:
    var_p = float(np.var(np.concatenate([p, p_all]), ddof=1)) * (1.0 + n / m)
    cov = float(np.mean((y - y.mean()) * (p - p.mean())))
  lam = cov / var_p if var_p > 0 else 0.0  # a constant probe carries no information
  return float(np.clip(lam, 0.0, 1.0)) if clip else lam


def ppi_plus_plus(p_all: Any, y_audit: Any, p_audit: Any, *, N: int | None = None,
                  finite_population: bool = False, alpha: float = 0.05, lam: float | None = None,
                  clip: bool = True, ddof: int = 1) -> Estimate:
  """PPI++ estimate of the mean of Y (Angelopoulos, Duchi & Zrnic 2023, arXiv 2311.01453).

  theta = mean(lam * p_all) + mean_S(Y - lam * p_audit): the audit corrects the probe's bias,
  the probe soaks up the audit's noise. lam=None tunes lam (clipped to [0, 1] when clip);
  lam=0 gives the audit mean, lam=1 plain PPI.

  Superpopulation (default): p_all plays ppi_py's `Yhat_unlabeled` and
  Var = lam^2 Var(p_all) / len(p_all) + Var_S(Y - lam p) / n. With ddof=0 this is exactly
  `ppi_py.ppi_mean_ci` / `ppi_mean_pointestimate`; ddof=1 (default) uses s^2, a little wider.

  Finite population (`finite_population=True`, or pass N, which must equal len(p_all)): the
  target is the mean over exactly these N questions, p_all covers all N (audit included) and
  the audit is an SRSWOR from them. Then Var = (1 - n/N) * s^2_{Y - lam p} / n, with no term
  for the probe mean (it is a known number, not an estimate).
  """
  p_all = _unit("p_all", p_all)
  y, p = _audit_pair(y_audit, p_audit)
  n, m = len(y), len(p_all)
  z = _z(alpha)
  ddof = _check_ddof(ddof, n)
  fp = bool(finite_population) or N is not None
  if N is not None and _population_size(N, n) != m:
    raise ValueError(f"N: p_all must score all N questions; got N={N} but len(p_all)={m}")
  if fp and n > m:
    raise ValueError(f"y_audit: an audit drawn from the N={m} questions cannot have n={n} > N")
  if lam is None:
    lam = _tuned_lam(y, p, p_all, fp, clip)
  else:
    lam = float(lam)
    if not np.isfinite(lam):
      raise ValueError(f"lam: must be finite, got {lam}")
  resid = y - lam * p
  value = lam * p_all.mean() + resid.mean()
  if fp:
    var = (1.0 - n / m) * np.var(resid, ddof=ddof) / n
  else:
    var = lam ** 2 * np.var(p_all, ddof=ddof if m > ddof else 0) / m + np.var(resid, ddof=ddof) / n
  return _estimate(value, var, z, lam=lam, n=n, N=m, method="ppi++_fpc" if fp else "ppi++")


def _labels(name: str, x: Any, length: int) -> np.ndarray:
  a = np.asarray(x)
  if a.ndim != 1 or len(a) != length:
    raise ValueError(f"{name}: expected a 1-D array of length {length}, got shape {a.shape}")
  return a


def stratified(p_all: Any, y_audit: Any, p_audit: Any, strata_all: Any, strata_audit: Any, *,
               finite_population: bool = False, alpha: float = 0.05,
               lam: float | Sequence[float] | None = None, clip: bool = True, ddof: int = 1
               ) -> Estimate:
  """Stratified PPI++ (Fisch et al. 2024, arXiv 2406.04291).

  Strata h (e.g. probe-confidence bins or sub-tasks) with weights W_h = N_h / N, a PPI++
  estimate per stratum with its own lam_h (the total variance sum W_h^2 Var_h separates, so
  per-stratum tuning is optimal), theta = sum W_h theta_h, Var = sum W_h^2 Var_h. Helps when
  the probe's calibration error differs across strata and the audit is allocated where the
  residuals are noisiest (`neyman_allocation`). Every stratum of strata_all needs >= 2 audited
  questions. lam: None (tune), one float for all strata, or one per stratum in sorted order.
  The variance models are those of `ppi_plus_plus`, applied per stratum.
  """
  p_all = _unit("p_all", p_all)
  y, p = _audit_pair(y_audit, p_audit)
  s_all = _labels("strata_all", strata_all, len(p_all))
  s_aud = _labels("strata_audit", strata_audit, len(y))
  z = _z(alpha)
  levels = np.unique(s_all)
  unknown = np.setdiff1d(np.unique(s_aud), levels)
  if unknown.size:
    raise ValueError(f"strata_audit: strata {unknown.tolist()} do not occur in strata_all")
  if lam is None or np.ndim(lam) == 0:
    lams = [lam] * len(levels)
  else:
    lams = list(lam)
    if len(lams) != len(levels):
      raise ValueError(f"lam: expected one value per stratum ({len(levels)}), got {len(lams)}")
  value, var, used, m = 0.0, 0.0, [], len(p_all)
  for h, lam_h in zip(levels, lams):
    in_h, aud_h = s_all == h, s_aud == h
    if aud_h.sum() < 2:
      raise ValueError(f"strata_audit: stratum {h!r} has {int(aud_h.sum())} audited questions; "
                       "each stratum needs at least 2")
    est = ppi_plus_plus(p_all[in_h], y[aud_h], p[aud_h], finite_population=finite_population,
                        alpha=alpha, lam=lam_h, clip=clip, ddof=ddof)
    w = in_h.sum() / m
    value += w * est.value
    var += w ** 2 * est.std_err ** 2
    used.append(float(est.lam))
  return _estimate(value, var, z, lam=tuple(used), n=len(y), N=m,
                   method="stratified_ppi++_fpc" if finite_population else "stratified_ppi++")


def effective_sample_gain(audit_est: Estimate, ppi_est: Estimate) -> float:
  """Var(audit only) / Var(PPI++) on the same audit: the probe makes n labels worth gain * n.

  The number to report when arguing the probe saves labelling: an interval as tight as the
  PPI++ one would need gain times as many audited questions without the probe.
  """
  if audit_est.n != ppi_est.n:
    raise ValueError(f"compare estimates from the same audit; got n={audit_est.n} vs n={ppi_est.n}")
  va, vp = audit_est.std_err ** 2, ppi_est.std_err ** 2
  if vp == 0.0:
    return float("inf") if va > 0 else 1.0
  return float(va / vp)


# ----------------------------------------------------------------------------- audit design


def _bounded_allocation(n: int, a: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
  """Integers n_h in [lo_h, hi_h] summing to n and proportional to a_h where no bound binds.

  Continuous part: x_h = clip(c * a_h, lo_h, hi_h) with c found by bisection (the sum is
  monotone in c); then largest-remainder rounding, which cannot push past hi_h.
  """
  a = np.asarray(a, np.float64)
  if a.sum() <= 0:
    a = hi.astype(np.float64)
  a = a + 1e-12 * a.max() * hi / hi.max()  # zero-sigma strata still fill up if others saturate
  c_lo, c_hi = 0.0, 1.0
  while np.clip(c_hi * a, lo, hi).sum() < n:
    c_hi *= 2.0
  for _ in range(200):
    c = 0.5 * (c_lo + c_hi)
    if np.clip(c * a, lo, hi).sum() < n:
      c_lo = c
    else:
      c_hi = c
  x = np.clip(c_hi * a, lo, hi)
  base = np.minimum(np.floor(x + 1e-9), hi).astype(np.int64)
  short = n - int(base.sum())
  if short < 0:  # only from the floor tolerance; take back from the smallest remainders
    for i in np.argsort(x - base, kind="stable")[: -short]:
      base[i] -= 1
  elif short > 0:
    order = [i for i in np.argsort(-(x - base), kind="stable") if base[i] < hi[i]]
    for i in order[:short]:
      base[i] += 1
  return base


def neyman_allocation(n: int, stratum_sizes: Any, sigmas: Any, *, min_per_stratum: int = 2
                      ) -> np.ndarray:
  """Split an audit budget n over strata: n_h proportional to W_h * sigma_h (Neyman 1934).

  This minimizes sum W_h^2 sigma_h^2 / n_h for a fixed n. sigma_h is the standard deviation of
  the stratum's residual Y - lam p (from a pilot audit, or a probe-based plug-in such as
  sqrt(mean p(1-p)) in the stratum). Each stratum gets at least min(min_per_stratum, N_h) (two
  are needed to estimate a variance) and at most N_h. Returns integers summing to n.
  """
  sizes = np.asarray(stratum_sizes)
  sig = np.asarray(sigmas, np.float64)
  if sizes.ndim != 1 or len(sizes) == 0 or np.any(sizes != np.round(sizes)) or np.any(sizes < 1):
    raise ValueError(f"stratum_sizes: expected a 1-D array of positive integers, got {sizes!r}")
  if sig.shape != sizes.shape or not np.all(np.isfinite(sig)) or np.any(sig < 0):
    raise ValueError(f"sigmas: expected {len(sizes)} finite values >= 0, got {sigmas!r}")
  if int(min_per_stratum) != min_per_stratum or min_per_stratum < 0:
    raise ValueError(f"min_per_stratum: must be a non-negative integer, got {min_per_stratum}")
  hi = sizes.astype(np.int64)
  lo = np.minimum(int(min_per_stratum), hi)
  if int(n) != n or not lo.sum() <= n <= hi.sum():
    raise ValueError(f"n: the budget must be an integer in [{lo.sum()}, {hi.sum()}] "
                     f"({min_per_stratum} per stratum up to every question), got {n}")
  return _bounded_allocation(int(n), hi / hi.sum() * sig, lo, hi)


def draw_audit(n_questions: int, n: int, *, seed: int | np.random.Generator, strata: Any = None,
               allocation: Any = None) -> AuditDraw:
  """Which questions to label: an SRSWOR of n of the n_questions, or stratified SRSWOR.

  Uniform (strata=None): every question has inclusion probability n / n_questions. Stratified:
  an SRSWOR of n_h questions in each stratum (sorted stratum order), inclusion probability
  n_h / N_h; n_h from `allocation` (e.g. `neyman_allocation`) or proportional to N_h with at
  least 2 per stratum.

  Never pick the audit deterministically by probe uncertainty (or anything else): the
  estimators are unbiased only because every question's residual Y - lam p has a known,
  positive chance of being audited. A deterministic choice gives the unaudited questions
  probability 0, and their residuals (e.g. confident-but-wrong questions) are then never
  observed, so no reweighting can recover an unbiased estimate. Randomness with known
  probabilities is what makes the interval hold whatever the probe's errors are.
  """
  rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
  if int(n_questions) != n_questions or n_questions < 1:
    raise ValueError(f"n_questions: must be a positive integer, got {n_questions}")
  if int(n) != n or not 1 <= n <= n_questions:
    raise ValueError(f"n: must be an integer in [1, n_questions={n_questions}], got {n}")
  n_questions, n = int(n_questions), int(n)
  if strata is None:
    if allocation is not None:
      raise ValueError("allocation: only meaningful with strata")
    idx = np.sort(rng.choice(n_questions, size=n, replace=False))
    return AuditDraw(idx, np.full(n, n / n_questions))
  s = _labels("strata", strata, n_questions)
  levels, inv = np.unique(s, return_inverse=True)
  sizes = np.bincount(inv, minlength=len(levels))
  if allocation is None:
    lo = np.minimum(2, sizes)
    if not lo.sum() <= n:
      raise ValueError(f"n: need at least {lo.sum()} to audit 2 questions per stratum, got {n}")
    alloc = _bounded_allocation(n, sizes.astype(np.float64), lo, sizes)
  else:
    alloc = np.asarray(allocation)
    if alloc.shape != sizes.shape or np.any(alloc != np.round(alloc)) or np.any(alloc < 0):
      raise ValueError(f"allocation: expected {len(levels)} non-negative integers (one per stratum)")
    if alloc.sum() != n or np.any(alloc > sizes):
      raise ValueError(f"allocation: must sum to n={n} with n_h <= N_h={sizes.tolist()}, "
                       f"got {alloc.tolist()}")
    alloc = alloc.astype(np.int64)
  idx, pi = [], []
  for h in range(len(levels)):
    members = np.flatnonzero(inv == h)
    idx.append(rng.choice(members, size=int(alloc[h]), replace=False))
    pi.append(np.full(int(alloc[h]), alloc[h] / sizes[h]))
  idx, pi = np.concatenate(idx), np.concatenate(pi)
  order = np.argsort(idx)
  return AuditDraw(idx[order], pi[order])
