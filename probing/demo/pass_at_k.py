"""Predicted pass@k at later checkpoints from each question's p, against the measured one.

A probe gives p, the chance one sample is right; k samples independent given the question fail
together with probability (1 - p)^k. Averaged over a task, a p that is right on average still
overstates pass@k (Jensen): the true pass@1 of a question is spread around p (mostly 0 or 1
where p says 0.3). The calibrated variant puts a Beta(p phi, (1 - p) phi) spread around each p,
phi fitted by beta-binomial likelihood on the probe-training checkpoints' validation questions.

From the probe alone the error is its task-level bias at a later checkpoint, which no spread
model removes. Every later checkpoint is audited (`probing.demo.audit`: a random n questions per
task, k samples each), and the audit fixes that bias: the prediction for every question outside
it reads p, with the Beta spread, through the logit offset at which the audited questions'
predicted pass@k is their measured pass@k, one offset per k (so the spread model's own error at
large k is fitted away with the bias), fitted on this checkpoint's audit pooled with the task's
previous later audit (a bias moves slowly between checkpoints, and one 32-question audit is a
noisy target at k = 8). The one-pass variant needs no generation at the checkpoint it predicts:
the previous later audit alone (`probing.demo.carry`); a task's first later checkpoint, with no
audit before it, reads the probe as trained. The audited variant estimates the task's pass@k
itself: PPI++ with the predicted pass@k as control variate (finite population, all the cell's
questions), as for pass@1.
"""
from __future__ import annotations

import zlib
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy.special import betaln

from probing.demo import carry as carry_lib
from probing.demo.records import cell_key, join_cells, num
from probing.eval import audit as audit_lib
from probing.eval import audited as audited_lib
from probing.eval import intervals as intervals_lib
from probing.eval import pass_at_k as pak

__all__ = ["pass_at_k_summary", "fit_concentration", "pass_at_k_offsets", "spread_pass_at_k"]

_EPS = 1e-6


def spread_pass_at_k(p, k: int, concentration: float | None) -> np.ndarray:
  """E[1 - (1 - pi)^k] with pi ~ Beta(p phi, (1 - p) phi) around each p (phi = concentration):
  phi -> inf (or None) gives 1 - (1 - p)^k, phi -> 0 gives p (pi is 0 or 1). For integer k,
  E[(1 - pi)^k] = B(a, b + k) / B(a, b) = prod_{j<k} (1 - a / (a + b + j)), summed in log1p."""
  p = np.asarray(p, np.float64)
  if concentration is None:
    return pak.pass_at_k_from_p(p, k)
  a = np.clip(p, _EPS, 1 - _EPS) * concentration
  return -np.expm1(sum(np.log1p(-a / (concentration + j)) for j in range(int(k))))


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


def pass_at_k_offsets(k: int, phi: float | None):
  """fit(audits) -> one logit offset per audit draw d, pooled over `audits` [(cell, indices
  [draws, n])]: the offset at which the mean predicted pass@k (Beta spread phi) of draw d's
  audited questions of every cell equals their mean unbiased measured pass@k (questions with
  fewer than k samples left out; a mean of 0 or 1 moved half a sample inside; none: offset 0)."""
  def fit(audits) -> np.ndarray:
    p, c, kk = (np.concatenate([cell[f][idx] for cell, idx in audits], 1) for f in ("p", "c", "k"))
    use = kk >= k
    measured = np.where(use, pak.unbiased_pass_at_k(c.astype(int), np.maximum(kk, k).astype(int), k), 0.0)
    n = use.sum(1)
    half = 0.5 / np.maximum((kk * use).sum(1), 1)
    target = np.clip(measured.sum(1) / np.maximum(n, 1), half, 1.0 - half)
    out = carry_lib.match_offsets(p, use.astype(np.float64), target, lambda q: spread_pass_at_k(q, k, phi))
    return np.where(n > 0, out, 0.0)
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


def _held_out_errors(y: np.ndarray, held: np.ndarray, w: np.ndarray, guesses: Mapping[str, np.ndarray]
                     ) -> tuple[dict[str, float], dict[str, np.ndarray], np.ndarray, np.ndarray]:
  """Per predictor (question guesses [draws, N]): mean over draws of |mean guess - mean measured
  pass@k y| over draw d's held-out questions (`held` [draws, N]), and the same per bootstrap
  replicate (question weights `w` [n_boot, N]); with each draw's held-out count and measured mean."""
  h = held.astype(np.float64)
  count, den_b = h.sum(1), w @ h.T  # [draws], [n_boot, draws]
  measured, measured_b = (h @ y) / count, (w @ (h * y).T)
  errors, reps = {}, {}
  with np.errstate(invalid="ignore", divide="ignore"):
    for name, f in guesses.items():
      errors[name] = float(np.nanmean(np.abs((h * f).sum(1) / count - measured)))
      reps[name] = np.nanmean(np.abs(w @ (h * f).T - measured_b) / den_b, 1)
  return errors, reps, count, measured


def pass_at_k_summary(predictions: Iterable[Mapping], labels: Iterable[Mapping], *, family: str,
                      ks: Sequence[int] = (1, 2, 4, 8), audit_size: int = 32, draws: int = 200,
                      seed: int = 0, n_boot: int = 1000) -> dict:
  """summary.json `pass_at_k`: `{str(k): {abs_error_mean, per_task, minus_probe_alone, one_pass,
  probe_alone, calibrated, mean_matched, audited, per_cell}}`.

  Held-out (split 'test') questions at later checkpoints (checkpoint_role 'later'), questions with
  fewer than k samples left out: predicted pass@k per question, averaged per (task, checkpoint)
  cell, against the mean unbiased measured pass@k from (c, k samples) of the same questions; an
  error figure is the mean over tasks of each task's mean |error| over its cells. The audit of a
  cell is drawn `draws` times (`probing.demo.carry.audit_draws`, `audit_size` questions of all
  the cell's questions); draw d's error is over the test questions outside it.
  `abs_error_mean`/`per_task`: the audit-calibrated prediction, the Beta spread (phi fitted on the
  validation questions of the probe-training checkpoints only) of p through the offset
  (`pass_at_k_offsets`) fitted on draw d of this cell's audit pooled with draw d of the task's
  previous later audit; `one_pass`: through the previous later audit's offset alone, no generation
  at this checkpoint (the probe as trained at a task's first later checkpoint);
  `probe_alone`: 1 - (1 - p)^k from the probe as trained. The three are scored on the same
  draws; `minus_probe_alone` is a paired difference with a 95% question-cluster bootstrap interval
  (each task's test questions drawn with replacement, `n_boot` times, the same draws for all). A
  mean |error| itself gets no percentile interval: resampling adds its own noise to every |error|,
  so the replicates sit above the point (the interval would miss it); in a difference the shift
  hits both sides. Diagnostics on all the test questions: `calibrated`, the probe as trained with
  the Beta spread; `mean_matched`, each cell's p shifted (logit scale) to the cell's measured mean
  pass@1, so what remains is the spread (Jensen) error alone, raw and calibrated. `audited`: the
  PPI++ estimate of the cell's pass@k from its audit (`_audited`); the audit's generation is what
  it costs. `per_cell` shows draw 0 of the draw-based predictors beside `held_out_measured`.
  """
  predictions, labels = list(predictions), list(labels)
  later = join_cells(predictions, labels, family, role="later")
  try:
    fit = join_cells(predictions, labels, family, split="val", role="train")
    phi = fit_concentration(*(np.concatenate([v[f] for v in fit.values()]) for f in ("p", "c", "k")))
  except ValueError:  # no validation rows at the training checkpoints: nothing to fit on
    phi = None
  previous = carry_lib.previous_cells(later, sorted({s for _, s in later}))
  audits = {key: np.stack(carry_lib.audit_draws(*key, len(cell["p"]), audit_size, draws, seed))
            for key, cell in later.items()}
  questions: dict[str, set] = {}
  for (task, _), cell in later.items():
    questions.setdefault(task, set()).update(map(str, cell["qid"][cell["split"] == "test"]))
  if not any(questions.values()):
    raise ValueError(f"no held-out (split 'test') questions of probe {family!r} at later checkpoints")
  boot = intervals_lib.question_draws(questions, int(n_boot), seed)
  draw_based = ("audit_calibrated", "one_pass", "probe_alone")
  out = {}
  for k in (int(x) for x in ks):
    fit_offsets = pass_at_k_offsets(k, phi)
    errs: dict[str, dict[str, list]] = {m: {} for m in draw_based + ("calibrated", "matched_raw",
                                                                     "matched_calibrated")}
    reps: dict[str, dict[str, list]] = {m: {} for m in draw_based}  # task -> per cell: |error| per replicate
    per_cell = {}
    for (task, step), cell in later.items():
      test = (cell["split"] == "test") & (cell["k"] >= k)
      if not test.any():
        continue
      prev = previous[(task, step)]
      before = [(later[prev], audits[prev])] if prev is not None else []
      idx = audits[(task, step)]
      offsets = {"audit_calibrated": fit_offsets([(cell, idx)] + before),
                 "one_pass": fit_offsets(before) if before else np.zeros(len(idx))}
      guesses = {m: spread_pass_at_k(audited_lib.recalibrate(cell["p"], s[:, None]), k, phi)
                 for m, s in offsets.items()}
      guesses["probe_alone"] = np.broadcast_to(spread_pass_at_k(cell["p"], k, None), (len(idx), len(cell["p"])))
      held = np.repeat(test[None, :], len(idx), 0)
      np.put_along_axis(held, idx, False, 1)
      w = np.stack([boot[task][str(q)] if t else np.zeros(int(n_boot)) for q, t in zip(cell["qid"], test)], 1)
      y = np.where(cell["k"] >= k, pak.unbiased_pass_at_k(cell["c"].astype(int),
                                                         np.maximum(cell["k"], k).astype(int), k), 0.0)
      e, r, count, measured_d = _held_out_errors(y, held, w, guesses)
      for m in draw_based:
        errs[m].setdefault(task, []).append(e[m])
        reps[m].setdefault(task, []).append(r[m])
      p, c, kk = cell["p"][test], cell["c"][test], cell["k"][test]
      measured = float(np.mean(y[test]))
      row = {"questions": int(test.sum()), "measured": measured,
             "predicted": float(np.mean(spread_pass_at_k(p, k, None))),
             "calibrated": float(np.mean(spread_pass_at_k(p, k, phi))),
             "held_out_questions": int(count[0]), "held_out_measured": float(measured_d[0]),
             **{m: float(guesses[m][0][held[0]].mean()) for m in ("audit_calibrated", "one_pass")}}
      q = _mean_matched(p, float(np.mean(c / kk)))
      if q is not None:
        row["matched_raw"] = float(np.mean(spread_pass_at_k(q, k, None)))
        row["matched_calibrated"] = float(np.mean(spread_pass_at_k(q, k, phi)))
      per_cell[cell_key(task, step)] = row
      for m in ("calibrated", "matched_raw", "matched_calibrated"):
        if m in row:
          errs[m].setdefault(task, []).append(abs(row[m] - measured))
    (mean, per_task), alone = _by_task(errs["audit_calibrated"]), _by_task(errs["probe_alone"])
    one_pass, rep_alone = _by_task(errs["one_pass"]), _replicates(reps["probe_alone"])

    def paired(m: str, mean_m: float | None) -> dict:
      return {"diff": None if mean_m is None or alone[0] is None else mean_m - alone[0],
              "ci": list(intervals_lib.interval(_replicates(reps[m]) - rep_alone)),
              "interval": f"95% question-cluster bootstrap, {int(n_boot)} draws"}
    out[str(k)] = {"abs_error_mean": mean, "per_task": per_task,
                   "minus_probe_alone": paired("audit_calibrated", mean),
                   "predictor": "Beta spread of p through the offset at which this checkpoint's audit "
                                "pooled with the task's previous later audit measured this pass@k; "
                                "scored on the test questions outside this checkpoint's audit",
                   "one_pass": {"abs_error_mean": one_pass[0], "per_task": one_pass[1],
                                "minus_probe_alone": paired("one_pass", one_pass[0]),
                                "predictor": "Beta spread of p through the offset at which the task's previous "
                                             "later audit measured this pass@k (the probe as trained at a "
                                             "task's first later checkpoint): no generation at this checkpoint"},
                   "probe_alone": {"abs_error_mean": alone[0], "per_task": alone[1]},
                   "calibrated": {"abs_error_mean": _by_task(errs["calibrated"])[0],
                                  "per_task": _by_task(errs["calibrated"])[1], "concentration": phi,
                                  "fitted_on": "validation questions of the probe-training checkpoints"
                                  if phi is not None else "nothing (no validation rows): same as raw"},
                   "mean_matched": {"abs_error_mean": _by_task(errs["matched_raw"])[0],
                                    "abs_error_mean_calibrated": _by_task(errs["matched_calibrated"])[0],
                                    "note": "diagnostic: p shifted to each cell's measured pass@1"},
                   "audited": _audited(later, k, phi, n=audit_size, draws=draws, seed=seed),
                   "per_cell": per_cell}
  return out
