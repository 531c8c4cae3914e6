"""Acceptance checks of the testbed, measured by every demo run (`summary.json` `testbed_checks`).

They say whether the testbed can show the claim at all, before any probe is looked at:
- one reference's probability is not the label on the multi-path skills (pass@1 well above
  p_ref, and weakly ranked by it within a (skill, level, checkpoint) cell);
- the declared level alone does not predict success (the task x level prior is weak);
- skills rise both before and after the probe cutoff, and the regression skill falls.
p_ref = exp(-sum NLL of the reference and EOS) at the same checkpoint, read from the
`baseline:gold_nll_sum` predictions (teacher-forced at T=1, whatever the labels' temperature).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Mapping, Sequence

import numpy as np
from scipy.stats import spearmanr

MULTI_PATH = ("sum", "mul", "path", "change", "nodup")
REGRESSION = "inc"
P_REF = "baseline:gold_nll_sum"
PRIOR = "task_difficulty_prior"


def _check(value, bar, op: str) -> dict:
  met = None if value is None else bool(value >= bar if op == ">=" else value <= bar)
  return {"value": None if value is None else float(value), "bar": bar, "op": op, "met": met}


def reference_checks(labels: Sequence[dict], predictions: Sequence[dict], difficulty: Mapping[tuple, int],
                     tasks: Sequence[str]) -> dict:
  """Per multi-path skill: the median over (level, checkpoint) cells of mean pass@1 / mean p_ref
  (cells with mean pass@1 >= 0.05), and the mean within-cell Spearman(p_ref, pass@1) over cells
  where both vary."""
  p_ref = {(r["checkpoint_step"], r["task"], r["question_id"]): r["p"] for r in predictions if r["probe"] == P_REF}
  cells: dict[tuple, list] = defaultdict(list)
  for r in labels:
    key = (r["checkpoint_step"], r["task"], r["question_id"])
    if r["task"] in tasks and key in p_ref:
      cells[(r["task"], difficulty.get((r["task"], r["question_id"])), r["checkpoint_step"])].append(
          (r["c"] / r["k"], p_ref[key]))
  ratio, rho = defaultdict(list), defaultdict(list)
  for (task, _, _), rows in cells.items():
    y, p = np.asarray(rows).T
    if y.mean() >= 0.05:
      ratio[task].append(y.mean() / max(p.mean(), 1e-12))
    if len(rows) >= 5 and np.ptp(y) > 0 and np.ptp(p) > 0:
      rho[task].append(float(spearmanr(p, y).statistic))
  out = {}
  for task in tasks:
    r = float(np.median(ratio[task])) if ratio[task] else None
    s = float(np.mean(rho[task])) if rho[task] else None
    out[f"{task}/pass1_over_p_ref"] = _check(r, 3.0, ">=")
    out[f"{task}/within_cell_spearman_p_ref"] = _check(s, 0.5, "<=")
  return out


def prior_check(baselines: Mapping[str, dict], tasks: Sequence[str], min_skills: int = 4) -> dict:
  """The task x level prior's later-checkpoint AUROC <= 0.60 on at least `min_skills` skills."""
  per_task = ((baselines.get(PRIOR) or {}).get("auroc_later_checkpoints") or {}).get("per_task") or {}
  values = {t: (v["mean"] if isinstance(v, dict) else v) for t, v in per_task.items()}
  weak = [t for t in tasks if values.get(t) is not None and values[t] <= 0.60]
  return {"task_level_prior_weak_skills": {**_check(len(weak), min_skills, ">="), "skills": weak,
                                           "per_skill": values}}


def timing_checks(accuracy: Mapping[str, Mapping[str, dict]], cutoff_step: int, *, regression: str | None) -> dict:
  """When each skill first reaches half its final accuracy (pass@1 at the last checkpoint): at
  least 3 skills after the probe cutoff and 2 at or before it (the regression skill aside); and
  the regression skill's drop from its peak to the end."""
  reg = next((t for t in accuracy if t.endswith("_" + regression)), None) if regression else None
  half_at = {}
  for task, by_step in accuracy.items():
    if task == reg:
      continue  # it falls at the end: "half its final accuracy" times nothing
    steps = sorted(int(s) for s in by_step)
    acc = [by_step[str(s)]["pass1"] for s in steps]
    if acc[-1] < 0.05:
      continue  # never learned: no rise to time
    half_at[task] = next(s for s, a in zip(steps, acc) if a >= 0.5 * acc[-1])
  after = sorted(t for t, s in half_at.items() if s > cutoff_step)
  before = sorted(t for t, s in half_at.items() if s <= cutoff_step)
  out = {"skills_rising_after_cutoff": {**_check(len(after), 3, ">="), "skills": after},
         "skills_rising_before_cutoff": {**_check(len(before), 2, ">="), "skills": before},
         "half_final_accuracy_step": half_at}
  if reg is not None:
    acc = [accuracy[reg][s]["pass1"] for s in sorted(accuracy[reg], key=int)]
    out["regression_drop"] = {**_check(max(acc) - acc[-1], 0.2, ">="), "skill": reg}
  return out


def testbed_checks(labels: Sequence[dict], predictions: Sequence[dict], summary: dict, difficulty: Mapping,
                   cutoff_step: int, tasks: Sequence[str]) -> dict:
  """Every check, `{name: {value, bar, op, met}}`, and `all_met`."""
  multi = [t for t in tasks if t.split("_", 1)[-1] in MULTI_PATH]
  out = {**reference_checks(labels, predictions, difficulty, multi),
         **prior_check(summary.get("baselines", {}), tasks),
         **timing_checks(summary["measured_accuracy"], cutoff_step, regression=REGRESSION)}
  met = [v["met"] for v in out.values() if isinstance(v, dict) and "met" in v]
  out["all_met"] = bool(met) and all(m is True for m in met)
  return out
