"""The demo's bars, report.md with figures, and the headline table printed at the end."""
from __future__ import annotations

import os

import numpy as np

from probing.eval import metrics, report

ACTIVATION_FAMILIES = ("linear", "mlp", "attention", "submodel")
PRIOR = "task_difficulty_prior"


def _mean(block: dict, family: str, key: str):
  v = (block.get(key) or {}).get(family) or {}
  return v.get("mean") if isinstance(v, dict) else None


def _bar(value, bar, op=">="):
  met = None if value is None else (value >= bar if op == ">=" else value <= bar)
  return {"value": value, "bar": bar, "op": op, "met": met}


def bars(summary: dict) -> dict:
  """Every bar of the demo, with the measured value and whether it is met."""
  same = {f: _mean(summary, f, "auroc_same_checkpoint") for f in summary["auroc_same_checkpoint"]}
  later = {f: _mean(summary, f, "auroc_later_checkpoints") for f in summary["auroc_later_checkpoints"]}
  base = summary["baselines"]
  prior_same = (base.get(PRIOR) or {}).get("auroc_same_checkpoint", {}).get("mean")
  prior_later = (base.get(PRIOR) or {}).get("auroc_later_checkpoints", {}).get("mean")
  acts = [f for f in ACTIVATION_FAMILIES if same.get(f) is not None]
  best_same = max(acts, key=lambda f: same[f]) if acts else None
  best_later = max(acts, key=lambda f: later.get(f) or -1) if acts else None
  out = {
      "best_activation_same": {**_bar(same.get(best_same), 0.78), "family": best_same},
      "best_activation_later": {**_bar(later.get(best_later), 0.72), "family": best_later},
      "best_activation_same_minus_prior": {**_bar(None if best_same is None or prior_same is None
                                                  else same[best_same] - prior_same, 0.05), "family": best_same},
      "best_activation_later_minus_prior": {**_bar(None if best_later is None or prior_later is None
                                                   else later[best_later] - prior_later, 0.03), "family": best_later},
  }
  if "hybrid" in same:
    out["hybrid_same"] = _bar(same["hybrid"], 0.85)
    out["hybrid_later"] = _bar(later.get("hybrid"), 0.80)
  errors = {f: (summary["task_accuracy_abs_error"].get(f) or {}).get("mean") for f in summary["task_accuracy_abs_error"]}
  best_err = min((f for f in errors if errors[f] is not None), key=lambda f: errors[f], default=None)
  out["task_accuracy_abs_error_later"] = {**_bar(errors.get(best_err), 0.05, "<="), "family": best_err,
                                         "per_family": errors}
  lat = summary.get("latency_seconds") or {}
  out["latency_ratio_testbed"] = _bar(lat.get("ratio"), 10.0)
  real = summary.get("latency_seconds_real_task") or {}
  out["latency_ratio_real_task"] = _bar(real.get("ratio"), 20.0)
  task_prior_same = (base.get("task_prior") or {}).get("auroc_same_checkpoint", {}).get("mean")
  task_prior_later = (base.get("task_prior") or {}).get("auroc_later_checkpoints", {}).get("mean")
  out["every_family_beats_task_prior"] = {
      f: {"same": same[f], "later": later.get(f), "task_prior_same": task_prior_same,
          "task_prior_later": task_prior_later,
          "met": bool(same[f] is not None and task_prior_same is not None and same[f] > task_prior_same
                      and (later.get(f) or 0) > (task_prior_later or 0))} for f in same}
  rivals = {}
  for f in same:
    for b in ("gold_nll_sum", "gold_nll_mean", "sklearn_logreg"):
      bs = (base.get(b) or {}).get("auroc_same_checkpoint", {}).get("mean")
      bl = (base.get(b) or {}).get("auroc_later_checkpoints", {}).get("mean")
      if bs is not None and same[f] is not None and bs >= same[f] - 0.005 and (bl or 0) >= (later.get(f) or 0) - 0.005:
        rivals.setdefault(f, []).append(b)
  out["baselines_as_good_as_family"] = rivals
  return out


def _fmt(v, fmt=".3f"):
  return "–" if v is None else format(v, fmt)


def headline(summary: dict) -> str:
  """The table printed at the end of the demo."""
  rows = []
  for f in summary["auroc_same_checkpoint"]:
    rows.append({"probe": f, "AUROC same": summary["auroc_same_checkpoint"][f]["mean"],
                 "AUROC later": summary["auroc_later_checkpoints"][f]["mean"],
                 "|acc err| later": summary["task_accuracy_abs_error"][f]["mean"]})
  for b, block in summary["baselines"].items():
    rows.append({"probe": "baseline: " + b, "AUROC same": block["auroc_same_checkpoint"]["mean"],
                 "AUROC later": block["auroc_later_checkpoints"]["mean"],
                 "|acc err| later": block["task_accuracy_abs_error"]["mean"]})
  lines = [report.markdown_table(rows, ["probe", "AUROC same", "AUROC later", "|acc err| later"])]
  for key, label in (("latency_seconds", "testbed"), ("latency_seconds_real_task", "real-task shapes")):
    lat = summary.get(key)
    if lat:
      lines.append(f"latency ({label}): generative {lat['generative_eval']:.2f}s vs probe "
                   f"({lat.get('probe_family')}) {lat['probe']:.2f}s = {lat['ratio']:.1f}x faster")
      if lat.get("per_family"):
        lines.append("  per family: " + ", ".join(f"{f} {v['probe']:.2f}s ({v['ratio']:.1f}x)"
                                                  for f, v in lat["per_family"].items()))
  missed = [k for k, v in summary["bars"].items() if isinstance(v, dict) and v.get("met") is False]
  lines.append("bars missed: " + (", ".join(missed) if missed else "none"))
  return "\n".join(lines)


def _curves(summary, predictions):
  settings = summary["settings"]
  steps, tasks = settings["train_checkpoints"] + settings["later_checkpoints"], settings["tasks"]
  meas = summary["measured_accuracy"]
  measured = {t: [meas[t][str(s)]["pass1"] for s in steps] for t in tasks}
  pred: dict = {t: {} for t in tasks}
  sums: dict = {}
  for p in predictions:
    if p["split"] != "test" or p["probe"].startswith("baseline:"):
      continue
    sums.setdefault((p["task"], p["probe"], p["checkpoint_step"]), []).append(p["p"])
  for (task, probe, step), ps in sums.items():
    pred[task].setdefault(probe, {})[step] = float(np.mean(ps))
  predicted = {t: {f: [v.get(s) for s in steps] for f, v in per.items()} for t, per in pred.items()}
  monitor = {}
  for r in (summary.get("monitor") or {}).get("records", []):
    monitor.setdefault(r["task"], ([], []))
    monitor[r["task"]][0].append(r["step"])
    monitor[r["task"]][1].append(r["predicted"])
  return steps, measured, predicted, monitor


def write(workdir: str, summary: dict, predictions: list[dict], labels: list[dict]) -> str:
  """Writes figures and report.md into `workdir`; returns the report path."""
  fig_dir = os.path.join(workdir, "figures")
  os.makedirs(fig_dir, exist_ok=True)
  figs = []
  steps, measured, predicted, monitor = _curves(summary, predictions)
  figs.append(("Measured pass@1 (all questions, solid) vs predicted (held-out questions, dashed) per task; "
               "dotted: the in-loop monitor on live params; shaded: probe-training checkpoints",
               report.plot_accuracy_curves(steps, measured, predicted, os.path.join(fig_dir, "accuracy_curves.png"),
                                           train_upto_step=summary["settings"]["train_checkpoints"][-1],
                                           monitor=monitor or None)))
  for key, title in (("auroc_same_checkpoint", "same checkpoints"), ("auroc_later_checkpoints", "later checkpoints")):
    auroc = {f: b["per_task"] for f, b in summary[key].items()}
    auroc.update({f"baseline: {b}": v[key]["per_task"] for b, v in summary["baselines"].items()
                  if b in ("task_difficulty_prior", "gold_nll_sum", "sklearn_logreg")})
    if not any(auroc.values()):
      continue  # no (task, checkpoint) cell had >= 5 positive and >= 5 negative outcomes
    figs.append((f"Primary AUROC per task and probe family, {title} (held-out questions)",
                 report.plot_auroc_by_family(auroc, os.path.join(fig_dir, f"{key}.png"),
                                             f"AUROC, {title}")))
  cross = summary["cross_checkpoint"]
  matrix = np.asarray([[np.nan if v is None else v for v in row] for row in cross["auroc"]], float)
  figs.append((f"Earlier predicts later: {cross['family']} probe trained up to step i, AUROC at step j",
               report.plot_cross_checkpoint_heatmap(matrix, cross["train_upto_steps"], cross["test_steps"],
                                                    os.path.join(fig_dir, "cross_checkpoint.png"))))
  index = {(r["checkpoint_step"], r["task"], r["question_id"]): r for r in labels}
  curves = {}
  for family in summary["auroc_same_checkpoint"]:
    rows = [p for p in predictions if p["probe"] == family and p["split"] == "test" and p["checkpoint_role"] == "later"]
    if rows:
      p = np.asarray([r["p"] for r in rows])
      c = np.asarray([index[(r["checkpoint_step"], r["task"], r["question_id"])]["c"] for r in rows])
      k = np.asarray([index[(r["checkpoint_step"], r["task"], r["question_id"])]["k"] for r in rows])
      curves[family] = tuple(metrics.reliability_curve(p, c, k))
  figs.append(("Reliability at later checkpoints (held-out questions)",
               report.plot_reliability(curves, os.path.join(fig_dir, "reliability.png"))))
  lat = {}
  for key, name in (("latency_seconds", "testbed skills"), ("latency_seconds_real_task", "GSM8K shapes")):
    if summary.get(key):
      lat[name] = {"generative_eval": summary[key]["generative_eval"], "probe": summary[key]["probe"]}
  if lat:
    figs.append(("Wall time per checkpoint, warm: generative evaluation vs probing",
                 report.plot_latency(lat, os.path.join(fig_dir, "latency.png"))))
  sections = [("Headline", headline(summary)), ("Bars", _bars_text(summary["bars"])),
              ("Settings", _settings_text(summary))]
  path = os.path.join(workdir, "report.md")
  report.write_markdown_report(path, title="Probing in-training checkpoints: testbed demo", sections=sections,
                               figures=figs)
  return path


def _bars_text(b: dict) -> str:
  lines = []
  for name, v in b.items():
    if isinstance(v, dict) and "met" in v and "bar" in v:
      state = {True: "met", False: "MISSED", None: "not measured"}[v["met"]]
      fam = f" ({v['family']})" if v.get("family") else ""
      lines.append(f"- {name}{fam}: {_fmt(v['value'])} (bar {v['op']} {v['bar']}): {state}")
  for f, v in b.get("every_family_beats_task_prior", {}).items():
    lines.append(f"- {f} beats the task prior: {'yes' if v['met'] else 'NO'} "
                 f"(same {_fmt(v['same'])} vs {_fmt(v['task_prior_same'])}, later {_fmt(v['later'])} vs "
                 f"{_fmt(v['task_prior_later'])})")
  for f, rivals in b.get("baselines_as_good_as_family", {}).items():
    lines.append(f"- note: baseline(s) {', '.join(rivals)} do as well as {f} (within 0.005 AUROC)")
  return "\n".join(lines)


def _settings_text(summary: dict) -> str:
  s = summary["settings"]
  stages = ", ".join(f"{k}: {v:.1f}s" for k, v in summary["stage_seconds"].items())
  mon = summary.get("monitor") or {}
  mon_line = (f"in-loop monitor ({mon.get('family')}, every {mon.get('every_steps')} steps): "
              f"{_fmt(mon.get('median_warm'), '.3f')}s per call = {_fmt(mon.get('cost_in_train_steps'), '.1f')} "
              f"training steps" if mon else "in-loop monitor: off")
  return "\n".join([
      f"- probe-training checkpoints: {s['train_checkpoints']}; later checkpoints: {s['later_checkpoints']}",
      f"- tasks: {', '.join(s['tasks'])}; families: {', '.join(s['families'])}",
      f"- labels: k={s['labels']['num_samples']}, T={s['labels']['temperature']}; held-out questions: "
      f"{s['test_frac']:.0%} by hash",
      f"- {mon_line}", f"- stage wall times: {stages}", f"- {s['selection']}"])
