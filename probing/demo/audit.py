"""What a small random audit buys at later checkpoints: PPI++ task accuracy, pass@k, drift alarms.

Everything here is recomputed from predictions.jsonl and labels.jsonl records (plus the feature
stores for the drift score), so each figure in summary.json can be checked by hand:

  * `audit_summary`: at every later (task, checkpoint) cell, `draws` simulated audits of n
    questions (SRSWOR, known inclusion probabilities) labelled with the cell's measured c/k;
    probe-only, audit-only and PPI++ estimates against the cell's measured accuracy. The cell's
    questions are the population, so the finite-population variants (fpc) are the right ones.
  * `pass_at_k_summary` (in `probing.demo.pass_at_k`, re-exported): predicted against measured
    pass@k of held-out questions.
  * `drift_summary`: representation-shift score and the audit residual test per later cell.
"""
from __future__ import annotations

import zlib
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy.special import ndtri

from probing.demo import carry as carry_lib
from probing.demo.pass_at_k import pass_at_k_summary
from probing.demo.records import cell_key, join_cells, num
from probing.eval import audit as audit_lib
from probing.eval import audited as audited_lib
from probing.eval.drift import ShiftMonitor, residual_test
from probing.probes.data import nll_features

__all__ = ["audit_summary", "pass_at_k_summary", "drift_summary", "cell_key", "join_cells"]


# ----------------------------------------------------------------------------- the audit


def _strata(cell: dict, stratify_by: str | None, bins: int = 4) -> np.ndarray | None:
  """Stratum per question: probe-score quartiles ('probe') or the label's 'difficulty'; strata
  under 4 questions merge into their neighbour so each can take 2 audited questions."""
  if stratify_by is None:
    return None
  if stratify_by == "probe":
    ranks = np.argsort(np.argsort(cell["p"], kind="stable"), kind="stable")
    return ranks * bins // len(ranks)
  if stratify_by != "difficulty":
    raise ValueError(f"stratify_by: expected None, 'probe' or 'difficulty', got {stratify_by!r}")
  d = np.nan_to_num(cell["difficulty"], nan=-1.0)
  levels, inv = np.unique(d, return_inverse=True)
  sizes, merged, cur, run = np.bincount(inv), np.empty(len(levels), int), 0, 0
  for h, size in enumerate(sizes):
    merged[h], run = cur, run + size
    if run >= 4:
      cur, run = cur + 1, 0
  if run and cur:  # a small last stratum joins the one before
    merged[merged == cur] = cur - 1
  return merged[inv]


def _audit_labels(cell: dict, idx: np.ndarray, k: int | None, rng) -> tuple[np.ndarray, np.ndarray]:
  """Audited y and each one's within-question variance: the label's c/k (0 variance: these are
  the measured samples), or c' of k fresh-looking samples drawn without replacement from them."""
  c, kk = cell["c"][idx], cell["k"][idx]
  if k is None or np.all(k >= kk):
    return c / kk, np.zeros(len(idx))
  if k < 1:
    raise ValueError(f"k: audit samples per question must be >= 1, got {k}")
  sub = rng.hypergeometric(c.astype(np.int64), (kk - c).astype(np.int64), int(k)) / k
  within = (1.0 - k / kk) * sub * (1.0 - sub) / max(k - 1, 1)  # unbiased for Var(sub) (k >= 2)
  return sub, within


def _one_draw(cell, n, rng, *, k, strata, alpha):
  """One simulated audit: (audit-only, PPI++) as (value, halfwidth, var) with t intervals."""
  N = len(cell["p"])
  draw = audit_lib.draw_audit(N, n, seed=rng, strata=strata)
  y, within = _audit_labels(cell, draw.indices, k, rng)
  p_aud = cell["p"][draw.indices]
  floor = audited_lib.floor_se(y, cell["k"][draw.indices] if k is None else k, N, alpha) if n < N else 0.0
  ao = audit_lib.audit_only(y, N=N, alpha=alpha)
  if strata is None:
    pp = audit_lib.ppi_plus_plus(cell["p"], y, p_aud, N=N, alpha=alpha)
    var_pp, df = (audited_lib.jackknife_se(cell["p"], y, p_aud) if n > 2 else pp.std_err) ** 2, n - 1
  else:
    pp = audit_lib.stratified(cell["p"], y, p_aud, strata, strata[draw.indices], finite_population=True,
                              alpha=alpha)
    var_pp, df = pp.std_err ** 2, n - 2 * len(np.unique(strata))
  # Two-stage sampling: the fpc shrinks only the between-question part; k < label k adds noise
  # the census of questions does not remove.
  extra = (n / N) * within.mean() / n
  out = []
  for e, var, dof in ((ao, ao.std_err ** 2, n - 1), (pp, var_pp, df)):
    total = max(var + extra, floor ** 2)  # as `audited_accuracy` reports it
    out.append((e.value, audited_lib.t_quantile(alpha, dof) * np.sqrt(total), total, e.lam))
  return out


def _covers(value, hw, truth) -> bool:
  return bool(abs(value - truth) <= hw + 1e-12)  # a census (n = N) hits truth up to rounding


def _simulate_cell(cell, n, draws, rng, *, k, strata, alpha) -> dict:
  truth = float(np.mean(cell["c"] / cell["k"]))
  ao, pp, lam0 = [], [], None
  for d in range(draws):
    a, b = _one_draw(cell, n, rng, k=k, strata=strata, alpha=alpha)
    ao.append(a[:3])
    pp.append(b[:3])
    if d == 0:
      first, lam0 = (a, b), b[3]
  ao, pp = np.asarray(ao), np.asarray(pp)
  with np.errstate(divide="ignore", invalid="ignore"):
    gain = np.where(pp[:, 2] > 0, ao[:, 2] / pp[:, 2], np.where(ao[:, 2] > 0, np.inf, 1.0))
  return {"truth": truth, "probe_only": float(cell["p"].mean()), "n": n, "N": len(cell["p"]),
          "ppi_err": np.abs(pp[:, 0] - truth), "ao_err": np.abs(ao[:, 0] - truth),
          "ppi_cover": np.asarray([_covers(v, h, truth) for v, h, _ in pp]),
          "ao_cover": np.asarray([_covers(v, h, truth) for v, h, _ in ao]),
          "ppi_hw": pp[:, 1], "ao_hw": ao[:, 1], "gain": gain, "first": first, "lam": lam0,
          "var_y": float(np.var(cell["c"] / cell["k"], ddof=1)) if len(cell["p"]) > 1 else 0.0}


def _aggregate(sims: dict[str, dict]) -> dict:
  """Pooled over every (cell, draw) at one audit size; probe-only over cells (it has no draw)."""
  if not sims:
    return {"coverage": None, "coverage_audit_only": None, "abs_error_mean": None,
            "abs_error_audit_only_mean": None, "abs_error_probe_only_mean": None,
            "ess_gain_median": None, "ci_halfwidth_median": None, "ci_halfwidth_audit_only_median": None}
  cat = lambda f: np.concatenate([s[f] for s in sims.values()])  # noqa: E731
  gain = cat("gain")
  return {"coverage": num(cat("ppi_cover").mean()), "coverage_audit_only": num(cat("ao_cover").mean()),
          "abs_error_mean": num(cat("ppi_err").mean()), "abs_error_audit_only_mean": num(cat("ao_err").mean()),
          "abs_error_probe_only_mean": num(np.mean([abs(s["probe_only"] - s["truth"]) for s in sims.values()])),
          "ess_gain_median": num(np.median(gain)), "ci_halfwidth_median": num(np.median(cat("ppi_hw"))),
          "ci_halfwidth_audit_only_median": num(np.median(cat("ao_hw")))}


def _per_cell(s: dict) -> dict:
  (av, ah, _, _), (pv, ph, _, _) = s["first"]
  return {"N": s["N"], "n": s["n"], "truth": s["truth"], "probe_only": {"estimate": s["probe_only"]},
          "audit_only": {"estimate": av, "ci": [av - ah, av + ah]},
          "ppi": {"estimate": pv, "ci": [pv - ph, pv + ph], "lam": num(np.mean(s["lam"]))},
          "coverage": num(s["ppi_cover"].mean()), "coverage_audit_only": num(s["ao_cover"].mean()),
          "abs_error": num(s["ppi_err"].mean()), "abs_error_audit_only": num(s["ao_err"].mean()),
          "ess_gain": num(np.median(s["gain"]))}


def _planning(sims: dict[str, dict], halfwidth: float, alpha: float) -> dict:
  """Audit questions per task for a +-halfwidth interval: n0 = (z S_Y / h)^2 for the audit alone,
  n0 / gain with the probe (the cell's median ESS gain), then the fpc n = n0 / (1 + n0 / N).
  Per task the median over its later cells; `large_task_*` leave out the fpc (N >> n)."""
  z = float(ndtri(1 - alpha / 2))
  per_task: dict[str, list] = {}
  for key, s in sims.items():
    n0 = (z / halfwidth) ** 2 * s["var_y"]
    g = float(np.median(s["gain"]))
    n0_ppi = 0.0 if not np.isfinite(g) else n0 / max(g, 1e-12)
    fpc = lambda m: min(s["N"], max(2.0, m / (1.0 + m / s["N"])))  # noqa: E731
    per_task.setdefault(key.rsplit("@", 1)[0], []).append((fpc(n0_ppi), fpc(n0), n0_ppi, n0, s["N"]))
  med = lambda rows, i: int(np.ceil(np.median([r[i] for r in rows])))  # noqa: E731
  return {"target_halfwidth": halfwidth,
          "questions_needed_per_task_ppi": {t: med(r, 0) for t, r in sorted(per_task.items())},
          "questions_needed_per_task_audit_only": {t: med(r, 1) for t, r in sorted(per_task.items())},
          "questions_per_task": {t: med(r, 4) for t, r in sorted(per_task.items())},
          "large_task_questions_needed_ppi": {t: med(r, 2) for t, r in sorted(per_task.items())},
          "large_task_questions_needed_audit_only": {t: med(r, 3) for t, r in sorted(per_task.items())}}


def audit_summary(predictions: Iterable[Mapping], labels: Iterable[Mapping], *, family: str,
                  later_steps: Sequence[int], sizes: Sequence[int] = (32, 64, 128), default_size: int = 32,
                  draws: int = 200, k: int | None = None, seed: int = 0, stratify_by: str | None = None,
                  alpha: float = 0.05, target_halfwidth: float = 0.03) -> dict:
  """summary.json `audit`: simulated random audits of every later (task, checkpoint) cell.

  Per cell (population: its N questions, truth: their mean measured c/k) and audit size n,
  `draws` SRSWOR audits (stratified by probe-score quartiles or difficulty with `stratify_by`)
  labelled with the audited questions' c/k (or, with `k`, c' of k samples drawn from the label's);
  each gives the audit-only mean and the PPI++ estimate (power-tuned lam, fpc) with 95% t
  intervals on n - 1 df (the normal one under-covers skewed pass@1 at n = 32), the PPI++ one
  with a jackknife standard error (`probing.eval.audited.jackknife_se`; linearized for the stratified variant),
  no standard error below `probing.eval.audited.floor_se` (an audit with no success has variance 0).
  Top-level figures are at `default_size`; `by_size` at each size; `per_cell` at the default
  size, with the first draw as the representative one; `planning` from the default size's ESS
  gains. n > N is capped at N and listed under `capped`.
  """
  if int(draws) < 1:
    raise ValueError(f"draws: need >= 1 simulated audit per cell, got {draws}")
  later = {int(s) for s in later_steps}
  cells = {c: v for c, v in join_cells(predictions, labels, family).items() if c[1] in later}
  if not cells:
    raise ValueError(f"no predictions of {family!r} at later steps {sorted(later)}")
  sizes = sorted({int(n) for n in sizes} | {int(default_size)})
  sims: dict[int, dict] = {n: {} for n in sizes}
  capped: dict[str, dict] = {}
  for (task, step), cell in cells.items():
    key, N = cell_key(task, step), len(cell["p"])
    strata = _strata(cell, stratify_by)
    for n in sizes:
      m = min(n, N)
      if m < n:
        capped.setdefault(key, {"questions": N, "sizes": []})["sizes"].append(n)
      if m < 2:
        continue
      rng = np.random.default_rng([int(seed), zlib.crc32(key.encode()), n])
      sims[n][key] = _simulate_cell(cell, m, int(draws), rng, k=k, strata=strata, alpha=alpha)
  by_size = {str(n): _aggregate(sims[n]) for n in sizes}
  default = sims[int(default_size)]
  out = dict(by_size[str(default_size)])
  out.update({"audit_questions_per_task": int(default_size),
              "by_size": {n: {f: v for f, v in b.items() if f != "abs_error_probe_only_mean"}
                          for n, b in by_size.items()},
              "per_cell": {key: _per_cell(s) for key, s in default.items()},
              "planning": _planning(default, target_halfwidth, alpha),
              "capped": capped,
              "settings": {"family": family, "draws": int(draws), "sizes": sizes, "seed": int(seed),
                           "k": k, "stratify_by": stratify_by, "alpha": alpha,
                           "interval": audited_lib.INTERVAL,
                           "population": "each later (task, checkpoint) cell's questions (finite, fpc)"}})
  return out


# ----------------------------------------------------------------------------- drift


def _task_features(feature_sets, layers, pooling, center, nll) -> dict[str, dict[int, tuple[list, np.ndarray]]]:
  """task -> step -> (question ids, [N, F] rows): the probe's pooled inputs (centered per cell
  when the probe centers) and its gold-answer NLL columns when it reads them."""
  out: dict[str, dict[int, tuple[list, np.ndarray]]] = {}
  for fs in feature_sets:
    parts = []
    if layers:
      x = fs.pooled(pooling, layers).reshape(len(fs), -1).astype(np.float64)
      parts.append(x - x.mean(0) if center else x)
    if nll:
      parts.append(nll_features(fs.arrays["nll_mean"], fs.arrays["nll_sum"]).astype(np.float64))
    if not parts:
      raise ValueError("drift_summary: no features (give layers, nll or both)")
    out.setdefault(str(fs.meta["task"]), {})[int(fs.meta["checkpoint_step"])] = (
        fs.question_ids, np.concatenate(parts, 1))
  return out


def _aligned(by_step: dict[int, tuple[list, np.ndarray]]) -> tuple[dict[int, np.ndarray], bool]:
  """Rows of every step restricted to the questions all steps share, in one order (paired)."""
  common = set.intersection(*(set(q) for q, _ in by_step.values()))
  if len(common) < 2:
    return {s: x for s, (_, x) in by_step.items()}, False
  order = sorted(common)
  out = {}
  for s, (q, x) in by_step.items():
    pos = {qid: i for i, qid in enumerate(q)}
    out[s] = x[[pos[qid] for qid in order]]
  return out, True


def drift_summary(predictions: Iterable[Mapping], labels: Iterable[Mapping], feature_sets: Sequence, *,
                  family: str, train_steps: Sequence[int], later_steps: Sequence[int],
                  layers: Sequence[int] = (), pooling: str = "last+mean", center: bool = False,
                  nll: bool = False, audit_size: int = 32, draws: int = 200, seed: int = 0,
                  alpha: float = 0.01, residual_alpha: float = 0.05, stale_tolerance: float = 0.1,
                  carry: bool = True) -> dict:
  """summary.json `drift`: `{cells: {"task@step": {...}}, by_task: {...}, settings}`.

  Per later cell: `score`, the largest backwards step along the task's learning direction from
  any earlier checkpoint to this one (`probing.eval.drift.ShiftMonitor`; the drawdown from the
  task's best checkpoint so far, `previous_step`), against `threshold` (fitted on consecutive
  probe-training checkpoints only), from the rows `layers`/`pooling` (centered per cell when
  `center`, as a centering probe reads them) and the gold-answer NLL columns when `nll`. The
  probe's own inputs are the natural choice, but pooled activations move with training whatever
  a skill does (they never fire on the testbed's regression); `layers=(), nll=True` (the NLL
  every demo store holds) is the score that does. Residual test: `residual_p_value` of the
  audit's first draw (`probing.demo.carry.audit_draws`, n = audit_size) for H0: |mean(Y - p)| <=
  stale_tolerance (PPI++ corrects a smaller bias; a probe off by more is stale),
  `residual_alarm_rate` the share of `draws` audits rejecting at `residual_alpha`. With `carry`, p
  is the probe through the offset the task's previous later audit fitted (same draw;
  `probing.demo.carry`): the alarm asks whether the task moved away from the probe since the last
  audit, not again whether the probe as trained is off. The `*_as_trained` fields are the same
  test on the probe as trained. alarm = score_alarm or residual_alarm. `true_bias` (mean y - p
  over all the cell's questions, p as the test read it on the first draw) is for evaluating the
  alarms only; no alarm reads it.
  """
  if int(draws) < 1:
    raise ValueError(f"draws: need >= 1 audit draw, got {draws}")
  train = sorted(int(s) for s in train_steps)
  later = sorted(int(s) for s in later_steps)
  cells = join_cells(predictions, labels, family)
  feats = _task_features(feature_sets, tuple(layers), pooling, center, nll)
  offsets = carry_lib.carried_offsets({c: v for c, v in cells.items() if c[1] in later}, later,
                                      audit_size=audit_size, draws=draws, seed=seed) if carry else {}
  out, by_task = {}, {}
  for task in sorted(feats):
    rows, paired = _aligned({s: v for s, v in feats[task].items() if s in train or s in later})
    missing = [s for s in train if s not in rows]
    if missing:
      raise ValueError(f"drift_summary: task {task!r} has no features at training steps {missing}")
    monitor = ShiftMonitor.fit([rows[s] for s in train], alpha=alpha, paired=paired)
    seq = train + [s for s in later if s in rows]
    for i, step in enumerate(seq):
      if step not in later or (task, step) not in cells:
        continue
      key, cell = cell_key(task, step), cells[(task, step)]
      # Drawdown: the largest backwards step from any earlier checkpoint (the task's best so far),
      # so a regression stays flagged at every checkpoint after it until the probe is retrained.
      prev = max(seq[:i], key=lambda s: monitor.score(rows[s], rows[step]))
      check = monitor.check(rows[prev], rows[step])
      N, y = len(cell["p"]), cell["c"] / cell["k"]
      carried = offsets.get((task, step)) or [None] * int(draws)
      tests, plain, first = [], [], None
      for idx, offset in zip(carry_lib.audit_draws(task, step, N, audit_size, draws, seed), carried):
        p = audited_lib.recalibrate(cell["p"], offset)
        first = p if first is None else first
        tests.append(residual_test(y[idx], p[idx], N, stale_tolerance))
        plain.append(residual_test(y[idx], cell["p"][idx], N, stale_tolerance))
      (m, pv), plain_pv = tests[0], plain[0][1]
      res_alarm = bool(pv < residual_alpha)
      out[key] = {"score": check["score"], "threshold": check["threshold"], "previous_step": prev,
                  "score_alarm": check["alarm"], "carried_offset": carried[0], "residual_mean": m,
                  "residual_p_value": pv, "residual_alarm": res_alarm,
                  "residual_alarm_rate": float(np.mean([t[1] < residual_alpha for t in tests])),
                  "true_bias": float(np.mean(y - first)),
                  "alarm": bool(check["alarm"] or res_alarm),
                  "residual_p_value_as_trained": plain_pv,
                  "residual_alarm_rate_as_trained": float(np.mean([t[1] < residual_alpha for t in plain])),
                  "true_bias_as_trained": float(np.mean(y - cell["p"])),
                  "alarm_as_trained": bool(check["alarm"] or plain_pv < residual_alpha)}
    task_cells = [v for k, v in out.items() if k.rsplit("@", 1)[0] == task]
    by_task[task] = {"threshold": monitor.threshold, "training_scores": list(monitor.train_scores),
                     **{f"{a}_rate": float(np.mean([v[a] for v in task_cells])) if task_cells else None
                        for a in ("alarm", "score_alarm", "residual_alarm", "alarm_as_trained")}}
  return {"cells": out, "by_task": by_task,
          "settings": {"family": family, "layers": list(layers), "pooling": pooling, "center": center,
                       "nll": nll, "audit_size": int(audit_size), "draws": int(draws), "alpha": alpha,
                       "residual_alpha": residual_alpha, "stale_tolerance": stale_tolerance,
                       "carry": bool(carry), "train_steps": train, "later_steps": later}}
