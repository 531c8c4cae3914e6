"""Predicted pass@k at later checkpoints from each question's p, against the measured one.

A probe gives p, the chance one sample is right; k samples independent given the question fail
together with probability (1 - p)^k. Averaged over a task, a p that is right on average still
overstates pass@k (Jensen): the true pass@1 of a question is spread around p (mostly 0 or 1
where p says 0.3). The calibrated variant puts a Beta(p phi, (1 - p) phi) spread around each p,
phi fitted by beta-binomial likelihood on the probe-training checkpoints' validation questions.

From the probe alone the error is its task-level bias at a later checkpoint, which no spread
model removes. Every later checkpoint is audited, though, and a task's bias moves slowly between
checkpoints: the one-pass prediction reads p, with the Beta spread, through the offset at which
the task's previous later audit (k samples per question) measured the same pass@k
(`probing.demo.carry`); one offset per k, so the spread model's own error at large k is fitted
away with the bias. It needs no generation at the checkpoint it predicts; the first later
checkpoint, with no audit before it, reads the probe as trained. The
audited variant uses the audit every later checkpoint gets anyway
(`probing.demo.audit`): a random n questions per task with k samples each give an unbiased
measured pass@k per audited question, and PPI++ with the predicted pass@k as control variate
estimates the task's pass@k (finite population, all the cell's questions), as for pass@1.
"""
from __future__ import annotations

import zlib
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy.special import betaln, expit, logit

from probing.demo import carry as carry_lib
from probing.demo.records import cell_key, join_cells, num
from probing.eval import audit as audit_lib
from probing.eval import audited as audited_lib
from probing.eval import intervals as intervals_lib
from probing.eval import pass_at_k as pak

__all__ = ["pass_at_k_summary", "fit_concentration", "spread_pass_at_k"]

_EPS = 1e-6


def spread_pass_at_k(p, k: int, concentration: float | None) -> np.ndarray:
  """E[1 - (1 - pi)^k] with pi ~ Beta(p phi, (1 - p) phi) around each p (phi = concentration):
  phi -> inf (or None) gives 1 - (1 - p)^k, phi -> 0 gives p (pi is 0 or 1)."""
  p = np.asarray(p, np.float64)
  if concentration is None:
    return pak.pass_at_k_from_p(p, k)
  q = np.clip(p, _EPS, 1 - _EPS)
  a, b = q * concentration, (1 - q) * concentration
  return -np.expm1(betaln(a, b + k) - betaln(a, b))


def fit_concentration(p, c, k) -> float:
  """phi maximizing the beta-binomial likelihood c ~ BetaBin(k, p phi, (1 - p) phi) (grid search)."""
  q = np.clip(np.asarray(p, np.float64), _EPS, 1 - _EPS)[:, None]
  c, k = np.asarray(c, np.float64)[:, None], np.asarray(k, np.float64)[:, None]
  grid = np.exp(np.linspace(np.log(0.05), np.log(1e4), 241))[None, :]
  a, b = q * grid, (1 - q) * grid
  ll = (betaln(c + a, k - c + b) - betaln(a, b)).sum(0)
  return float(grid[0, int(np.argmax(ll))])


def _mean_matched(p: np.ndarray, target: float) -> np.ndarray | None:
  """p shifted on the logit scale so its mean is `target` (None at 0 or 1: no shift reaches it)."""
  if not 0.0 < target < 1.0:
    return None
  return audited_lib.recalibrate(p, audited_lib.offset_for_mean(p, target))


def _pass_at_k_offsets(k: int, phi: float | None):
  """fit(cell, draws) for `carry_lib.carried_offsets`: per audit draw, the logit offset at which
  the mean predicted pass@k (Beta spread phi) of the audited questions equals their mean unbiased
  measured pass@k (questions with fewer than k samples left out; a mean of 0 or 1 moved half a
  sample inside; no such question: offset 0)."""
  def fit(cell, draws) -> list[float]:
    idx = np.stack(draws)
    c, kk = cell["c"][idx].astype(int), cell["k"][idx].astype(int)
    use = kk >= k
    measured = np.where(use, pak.unbiased_pass_at_k(c, np.maximum(kk, k), k), 0.0)  # c <= kk: valid everywhere
    n = use.sum(1)
    half = 0.5 / np.maximum((kk * use).sum(1), 1)
    target = np.clip(measured.sum(1) / np.maximum(n, 1), half, 1.0 - half)
    out = carry_lib.match_offsets(cell["p"][idx], use.astype(np.float64), target,
                                  lambda q: spread_pass_at_k(q, k, phi))
    return list(np.where(n > 0, out, 0.0))
  return fit


def _replicates(by_task: dict[str, list]) -> np.ndarray:
  """The mean over tasks of each task's mean |error| over its cells, per bootstrap replicate."""
  if not by_task:
    return np.full(1, np.nan)
  with np.errstate(invalid="ignore"):
    return np.nanmean(np.stack([np.nanmean(np.stack(v), 0) for _, v in sorted(by_task.items())]), 0)


def _by_task(errors: dict[str, list]) -> tuple[float | None, dict[str, float]]:
  per_task = {t: float(np.mean(v)) for t, v in sorted(errors.items()) if v}
  return (num(np.mean(list(per_task.values()))) if per_task else None), per_task


def _audited(cells: dict, k: int, phi: float | None, *, n: int, draws: int, seed: int) -> dict:
  """Per task: mean |PPI++ estimate - measured| of the cell's mean pass@k over `draws` random
  audits of n questions (SRSWOR from all the cell's questions with >= k samples), the control
  variate being each question's predicted pass@k; the mean coverage of the t intervals beside it."""
  errs: dict[str, list] = {}
  cover: list[bool] = []
  for (task, step), cell in cells.items():
    ok = cell["k"] >= k
    if ok.sum() < max(3, n + 1):
      continue
    y = pak.unbiased_pass_at_k(cell["c"][ok].astype(int), cell["k"][ok].astype(int), k)
    f = spread_pass_at_k(cell["p"][ok], k, phi)
    truth = float(y.mean())
    rng = np.random.default_rng([int(seed), zlib.crc32(cell_key(task, step).encode()), n, k])
    for _ in range(int(draws)):
      idx = audit_lib.draw_audit(len(y), n, seed=rng).indices
      r = audited_lib.audited_accuracy(f, y[idx], f[idx])
      errs.setdefault(task, []).append(abs(r["ppi"]["estimate"] - truth))
      lo, hi = r["ppi"]["ci"]
      cover.append(lo - 1e-12 <= truth <= hi + 1e-12)
  mean, per_task = _by_task(errs)
  return {"abs_error_mean": mean, "per_task": per_task, "coverage": num(np.mean(cover)) if cover else None,
          "audit_questions_per_task": int(n), "draws": int(draws),
          "population": "each later (task, checkpoint) cell's questions with >= k samples"}


def pass_at_k_summary(predictions: Iterable[Mapping], labels: Iterable[Mapping], *, family: str,
                      ks: Sequence[int] = (1, 2, 4, 8), audit_size: int = 32, draws: int = 200,
                      seed: int = 0, n_boot: int = 1000) -> dict:
  """summary.json `pass_at_k`: `{str(k): {abs_error_mean, per_task, probe_alone, calibrated,
  mean_matched, audited, per_cell}}`.

  Held-out (split 'test') questions at later checkpoints (checkpoint_role 'later'): predicted
  pass@k per question, averaged per (task, checkpoint) cell, against the mean unbiased measured
  pass@k from (c, k samples) of the same questions; an error figure is the mean over tasks of
  each task's mean |error| over its cells (questions with fewer than k samples are left out).
  `abs_error_mean`/`per_task`: the one-pass prediction, the Beta spread (`spread_pass_at_k`, phi
  fitted on the validation questions of the probe-training checkpoints only) of p through the
  offset at which the task's previous later audit measured this pass@k (`probing.demo.carry`;
  the mean |error| over its `draws` audits); `minus_probe_alone`: its paired difference from
  `probe_alone` with a 95% question-cluster bootstrap interval (the held-out questions of each
  task drawn with replacement, `n_boot` times, the same draws for both). A mean |error| itself
  gets no percentile interval: resampling adds its own noise to every |error|, so the replicates
  sit above the point (the interval would miss it); in a difference the shift hits both sides.
  `probe_alone`: 1 - (1 - p)^k from the probe as trained;
  `calibrated`: the probe as trained with the Beta spread. `mean_matched` is a diagnostic,
  not a predictor: each cell's p shifted (logit scale) to the cell's measured mean pass@1, so
  what remains is the spread (Jensen) error alone, raw and calibrated. `audited`: the PPI++
  estimate from a random audit of `audit_size` questions (`_audited`), `draws` audits per cell;
  the audit's generation is what it costs.
  """
  predictions, labels = list(predictions), list(labels)
  test = join_cells(predictions, labels, family, split="test", role="later")
  try:
    fit = join_cells(predictions, labels, family, split="val", role="train")
    phi = fit_concentration(*(np.concatenate([v[f] for v in fit.values()]) for f in ("p", "c", "k")))
  except ValueError:  # no validation rows at the training checkpoints: nothing to fit on
    phi = None
  later = join_cells(predictions, labels, family, role="later")
  questions: dict[str, set] = {}
  for (task, _), cell in test.items():
    questions.setdefault(task, set()).update(map(str, cell["qid"]))
  boot = intervals_lib.question_draws(questions, int(n_boot), seed)
  out = {}
  for k in (int(x) for x in ks):
    offsets = carry_lib.carried_offsets(later, sorted({s for _, s in later}), audit_size=audit_size, draws=draws,
                                        seed=seed, fit=_pass_at_k_offsets(k, phi))
    errs: dict[str, dict[str, list]] = {m: {} for m in ("carried", "raw", "calibrated", "matched_raw",
                                                        "matched_calibrated")}
    per_cell = {}
    reps: dict[str, dict[str, list]] = {"carried": {}, "raw": {}}  # task -> per cell: |error| per replicate
    for (task, step), cell in test.items():
      ok = cell["k"] >= k
      if not ok.any():
        continue
      p, c, kk = cell["p"][ok], cell["c"][ok], cell["k"][ok]
      measured = float(np.mean(pak.unbiased_pass_at_k(c.astype(int), kk.astype(int), k)))
      row = {"questions": int(ok.sum()), "measured": measured,
             "predicted": float(np.mean(spread_pass_at_k(p, k, None))),
             "calibrated": float(np.mean(spread_pass_at_k(p, k, phi)))}
      carried = np.asarray(offsets.get((task, step)) or [0.0])[:, None]  # [draws, 1]
      guesses = spread_pass_at_k(expit(logit(np.clip(p, _EPS, 1 - _EPS))[None, :] + carried), k, phi).mean(1)
      row["carried"] = float(guesses[0])
      errs["carried"].setdefault(task, []).append(float(np.mean(np.abs(guesses - measured))))
      w = np.stack([boot[task][str(q)] for q in cell["qid"][ok]], 1)  # [n_boot, questions]
      with np.errstate(invalid="ignore", divide="ignore"):
        mean_of = lambda x: (x @ w.T) / w.sum(1)  # noqa: E731  weighted mean over a replicate's questions
        measured_b = mean_of(pak.unbiased_pass_at_k(c.astype(int), kk.astype(int), k))
        reps["raw"].setdefault(task, []).append(np.abs(mean_of(spread_pass_at_k(p, k, None)) - measured_b))
        reps["carried"].setdefault(task, []).append(
            np.abs(mean_of(spread_pass_at_k(expit(logit(np.clip(p, _EPS, 1 - _EPS))[None, :] + carried), k, phi))
                   - measured_b).mean(0))
      q = _mean_matched(p, float(np.mean(c / kk)))
      if q is not None:
        row["matched_raw"] = float(np.mean(spread_pass_at_k(q, k, None)))
        row["matched_calibrated"] = float(np.mean(spread_pass_at_k(q, k, phi)))
      per_cell[cell_key(task, step)] = row
      for m, key in (("raw", "predicted"), ("calibrated", "calibrated"), ("matched_raw", "matched_raw"),
                     ("matched_calibrated", "matched_calibrated")):
        if key in row:
          errs[m].setdefault(task, []).append(abs(row[key] - measured))
    (raw, raw_t), (cal, cal_t) = _by_task(errs["raw"]), _by_task(errs["calibrated"])
    carried, carried_t = _by_task(errs["carried"])
    rep_carried, rep_raw = _replicates(reps["carried"]), _replicates(reps["raw"])
    out[str(k)] = {"abs_error_mean": carried, "per_task": carried_t,
                   "minus_probe_alone": {"diff": None if carried is None or raw is None else carried - raw,
                                         "ci": list(intervals_lib.interval(rep_carried - rep_raw)),
                                         "interval": f"95% question-cluster bootstrap, {int(n_boot)} draws"},
                   "predictor": "Beta spread of p through the offset at which the task's previous later "
                                "audit measured this pass@k (the probe as trained at a task's first later "
                                "checkpoint)",
                   "probe_alone": {"abs_error_mean": raw, "per_task": raw_t},
                   "calibrated": {"abs_error_mean": cal, "per_task": cal_t, "concentration": phi,
                                  "fitted_on": "validation questions of the probe-training checkpoints"
                                  if phi is not None else "nothing (no validation rows): same as raw"},
                   "mean_matched": {"abs_error_mean": _by_task(errs["matched_raw"])[0],
                                    "abs_error_mean_calibrated": _by_task(errs["matched_calibrated"])[0],
                                    "note": "diagnostic: p shifted to each cell's measured pass@1"},
                   "audited": _audited(later, k, phi, n=audit_size, draws=draws, seed=seed),
                   "per_cell": per_cell}
  return out
