"""The audited estimate at one checkpoint: what `launch.predict`, the monitor, the watcher and the
demo report for a task whose questions the probe scored and a random audit labelled.

`audited_accuracy` is the one door: finite-population PPI++ (`probing.eval.audit`) with a
delete-one jackknife standard error and a t interval on n - 1 df (the interval whose coverage the
demo measures; no standard error below `floor_se`, the binomial one of the audit's own samples),
the audit mean beside it, the effective-sample gain, and the stale alarm (the
residual test of `probing.eval.drift` with a tolerance). `audit_questions` draws the audit a
label job labels; `audit_tasks` joins prediction and label records per task.

Every later checkpoint is audited, so the next one need not start from the probe as trained:
`recalibration` is the logit offset that makes the probe's mean p on this checkpoint's audit the
audit's measured mean, and `recalibrate` carries it to the next checkpoint's p. A probe trained
before a skill was learned is off by the same amount at every later checkpoint (0.25-0.35 on the
testbed); one offset per task removes that, and what remains is how far the task moved since the
last audit. The stale alarm and the one-pass pass@k read the carried p.
"""
from __future__ import annotations

import functools
import zlib
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats as sps
from scipy.optimize import brentq
from scipy.special import expit, logit

from probing.eval.audit import _audit_pair, _unit, audit_only, draw_audit, ppi_plus_plus
from probing.eval.drift import residual_test

__all__ = ["INTERVAL", "floor_se", "jackknife_se", "t_quantile", "audited_accuracy", "audit_questions",
           "audit_tasks", "recalibration", "recalibrate", "offset_for_mean", "offsets_before"]

INTERVAL = ("t on n-1 df; PPI++ se: delete-one jackknife (lam re-tuned), fpc; every se at least the "
            "Agresti-Coull binomial se of the audit's pooled samples")


def jackknife_se(p_all: Any, y: Any, p: Any) -> float:
  """Delete-one jackknife standard error (with the fpc) of the finite-population PPI++ estimate,
  lam re-tuned in every replicate as `probing.eval.audit._tuned_lam` tunes it (Cov_S(Y, p) / Var_N(p), clipped to
  [0, 1]). The linearized s^2_{Y - lam p} treats lam as known and under-covers at n = 32 (0.89-0.91
  on the testbed); the jackknife carries lam's own noise (Sarndal et al. 1992)."""
  p_all, y, p = (np.asarray(a, np.float64) for a in (p_all, y, p))
  n, N = len(y), len(p_all)
  var_p = float(np.var(p_all, ddof=1))
  my = (y.sum() - y) / (n - 1)  # replicate i leaves question i out
  mp = (p.sum() - p) / (n - 1)
  cov = ((y * p).sum() - y * p - (n - 1) * my * mp) / (n - 2)
  lam = np.clip(cov / var_p, 0.0, 1.0) if var_p > 0 else np.zeros(n)
  theta = lam * p_all.mean() + my - lam * mp
  return float(np.sqrt((1.0 - n / N) * (n - 1) / n * np.sum((theta - theta.mean()) ** 2)))


def floor_se(y: Any, k: Any, N: int, alpha: float = 0.05) -> float:
  """The least standard error an audited estimate is given: the Agresti-Coull binomial standard
  error of the audit's pooled samples (sum of c = y k successes in sum of k samples), with the fpc.

  An audit in which no sample succeeded (or every one did) has zero sample variance, so its t
  interval has width zero and misses any accuracy near 0 or 1 (on the testbed, a skill after its
  regression drop: coverage 0.11-0.35 in such cells). Samples of one question are positively
  correlated, so treating them as independent gives the audit-only mean its least variance: the
  floor binds at the boundary, or for a probe worth many audit questions, and barely elsewhere.
  `k` None counts one sample per question (the most conservative)."""
  y = np.asarray(y, np.float64)
  k = np.ones_like(y) if k is None else np.broadcast_to(np.asarray(k, np.float64), y.shape)
  n, m = len(y), float(k.sum())
  z2 = float(sps.norm.ppf(1 - alpha / 2)) ** 2
  pt = (float((y * k).sum()) + z2 / 2) / (m + z2)
  return float(np.sqrt(max(0.0, 1.0 - n / N) * pt * (1.0 - pt) / (m + z2)))


@functools.lru_cache(maxsize=None)
def t_quantile(alpha: float, df: int) -> float:
  """The two-sided (1 - alpha) Student t quantile on df degrees of freedom (at least 1)."""
  return float(sps.t.ppf(1 - alpha / 2, max(int(df), 1)))


def audited_accuracy(p_all: Any, y_audit: Any, p_audit: Any, *, k_audit: Any = None, alpha: float = 0.05,
                     stale_tolerance: float = 0.1, offset: float | None = None) -> dict:
  """One task at one checkpoint: the probe's p for all N questions, a random audit's measured
  pass@1 y (c / k, with `k_audit` the samples behind each) and the probe's p on the same audited
  questions -> what `launch.predict`, the monitor and the watcher report. The estimator and
  interval are the ones whose coverage the demo measures (`probing.demo.audit`): finite-population
  PPI++ with a jackknife standard error and a t interval on n - 1 df; the audit mean with its t
  interval beside it; both standard errors at least `floor_se`; the residual test
  (`probing.eval.drift.residual_test`, H0: |mean(Y - p)| <= stale_tolerance) whose p-value below
  alpha raises the alarm "probe stale: relabel". `offset`, the `recalibration` of the previous
  audit, moves p for the residual test and `probe_recalibrated` (the alarm then asks whether the
  task moved away since that audit); PPI++ reads p as trained, the predictor whose coverage the
  demo measures (any predictor fixed before this audit keeps it unbiased). `recalibration` is
  this audit's offset, for the next checkpoint to carry.
  """
  p_all = _unit("p_all", p_all)
  y, p = _audit_pair(y_audit, p_audit)
  n, N = len(y), len(p_all)
  if n > N:
    raise ValueError(f"audit: {n} audited questions but the probe scored only N={N}")
  ao = audit_only(y, N=N, alpha=alpha)
  pp = ppi_plus_plus(p_all, y, p, N=N, alpha=alpha)
  floor = floor_se(y, k_audit, N, alpha) if n < N else 0.0
  se_ao = max(ao.std_err, floor)
  se_pp = max(jackknife_se(p_all, y, p) if 2 < n < N else pp.std_err, floor)
  t = t_quantile(alpha, n - 1)
  moved = recalibrate(p, offset)
  residual, p_value = residual_test(y, moved, N, stale_tolerance) if n < N else (float((y - moved).mean()), 1.0)
  gain = (se_ao ** 2 / se_pp ** 2) if se_pp > 0 else (float("inf") if se_ao > 0 else 1.0)
  ci = lambda v, se: [float(v - t * se), float(v + t * se)]  # noqa: E731
  return {"n": n, "N": N, "probe_only": float(p_all.mean()),
          "audit_only": {"estimate": ao.value, "ci": ci(ao.value, se_ao)},
          "ppi": {"estimate": pp.value, "ci": ci(pp.value, se_pp), "lam": float(pp.lam)},
          "ess_gain": float(gain), "residual": residual, "residual_p_value": p_value,
          "stale_tolerance": float(stale_tolerance), "alarm": bool(p_value < alpha), "alpha": float(alpha),
          "carried_offset": None if offset is None else float(offset),
          "probe_recalibrated": float(recalibrate(p_all, offset).mean()),
          "recalibration": recalibration(y, p, k_audit), "interval": INTERVAL}


_EDGE = 1e-6


def recalibration(y_audit: Any, p_audit: Any, k_audit: Any = None) -> float:
  """The offset s (logit scale) with mean(expit(logit(p) + s)) = the audit's measured mean pass@1.

  A logit shift keeps every p in (0, 1) and the probe's ranking. An audit with no success (or
  no failure) has no finite offset; its mean is taken as half a sample off the edge (`k_audit`
  samples per question, 1 when None)."""
  y, p = _audit_pair(y_audit, p_audit)
  k = np.ones_like(y) if k_audit is None else np.broadcast_to(np.asarray(k_audit, np.float64), y.shape)
  half = 0.5 / float(k.sum())
  return offset_for_mean(p, float(np.clip(np.sum(y * k) / k.sum(), half, 1.0 - half)))


def offset_for_mean(p: Any, target: float) -> float:
  """The offset s (logit scale) with mean(expit(logit(p) + s)) = target, for a target in (0, 1)."""
  lp = logit(np.clip(np.asarray(p, np.float64), _EDGE, 1.0 - _EDGE))
  # Newton from 0 (the mean of expit is increasing in s, and a step is capped at 4 logits);
  # brentq where it has not settled in 30 steps.
  s = 0.0
  for _ in range(30):
    q = expit(lp + s)
    gap = float(q.mean()) - target
    if abs(gap) < 1e-12:
      return s
    s -= float(np.clip(gap / max(float((q * (1.0 - q)).mean()), 1e-12), -4.0, 4.0))
  return float(brentq(lambda x: expit(lp + x).mean() - target, -40.0, 40.0, xtol=1e-12))


def recalibrate(p: Any, offset: Any) -> np.ndarray:
  """p moved by a `recalibration` offset on the logit scale (None or 0: p unchanged); an array of
  offsets broadcasts against p (offsets[:, None]: one row of p per offset)."""
  p = _unit("p", p)
  if offset is None or (np.ndim(offset) == 0 and not offset):
    return p
  return expit(logit(np.clip(p, _EDGE, 1.0 - _EDGE)) + np.asarray(offset, np.float64))


def offsets_before(records: Iterable[Mapping], step: int) -> dict[tuple[str, str], float]:
  """(probe, task) -> the `recalibration` of the last audited record (`checkpoint_step`, `probe`,
  `task`, `recalibration`: a watcher timeline) before `step`: what the checkpoint at `step` carries."""
  out: dict[tuple[str, str], float] = {}
  for r in sorted((r for r in records if int(r["checkpoint_step"]) < step and r.get("recalibration") is not None),
                  key=lambda r: int(r["checkpoint_step"])):
    out[(str(r["probe"]), str(r["task"]))] = float(r["recalibration"])
  return out


def audit_questions(question_ids: Sequence[str], n: int, *, seed: int, task: str) -> list[str]:
  """The question ids of a uniform random audit (SRSWOR) of n of a task's questions, drawn from
  (seed, task) alone: a label job and anyone checking it draw the same audit. n >= N audits all."""
  ids = list(question_ids)
  if int(n) < 2:
    raise ValueError(f"audit: need at least 2 questions per task for an interval, got {n}")
  if n >= len(ids):
    return ids
  rng = np.random.default_rng([int(seed), zlib.crc32(task.encode())])
  return [ids[i] for i in draw_audit(len(ids), int(n), seed=rng).indices]


def audit_tasks(predictions: Iterable[Mapping], audit_labels: Iterable[Mapping], *, alpha: float = 0.05,
                stale_tolerance: float = 0.1, offsets: Mapping[str, float] | None = None) -> dict[str, dict]:
  """task -> `audited_accuracy` at one checkpoint, joining prediction records (`task`,
  `question_id`, `p`) with label records of the audited questions (`task`, `question_id`, `c`,
  `k`); `offsets` (task -> the previous audit's `recalibration`) are carried into the stale test.
  Tasks without audit labels are left out; an audited question the probe did not score, or one
  labelled twice, is an error naming it."""
  p_by_task: dict[str, dict[str, float]] = {}
  for r in predictions:
    p_by_task.setdefault(str(r["task"]), {})[str(r["question_id"])] = float(r["p"])
  audited: dict[str, dict[str, tuple[float, float]]] = {}
  for r in audit_labels:
    task, qid = str(r["task"]), str(r["question_id"])
    if task not in p_by_task:
      continue
    if qid not in p_by_task[task]:
      raise ValueError(f"audit labels: question {task}/{qid} was not predicted (labels of another "
                       "question set or --config.data.limit?)")
    if qid in audited.setdefault(task, {}):
      raise ValueError(f"audit labels: question {task}/{qid} is labelled twice")
    audited[task][qid] = (float(r["c"]) / float(r["k"]), float(r["k"]))
  out = {}
  for task, ys in sorted(audited.items()):
    ps = p_by_task[task]
    qids = sorted(ys)
    out[task] = audited_accuracy(list(ps.values()), [ys[q][0] for q in qids], [ps[q] for q in qids],
                                 k_audit=[ys[q][1] for q in qids], alpha=alpha, stale_tolerance=stale_tolerance,
                                 offset=(offsets or {}).get(task))
  return out
