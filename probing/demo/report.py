"""The demo's bars, report.md with figures, and the headline table printed at the end."""
from __future__ import annotations

import os

import numpy as np

from probing.demo import audit_figures
from probing.eval import metrics, report

PRIOR = "task_difficulty_prior"
DEMO_SECONDS = 600.0


OPS = {">=": lambda v, b: v >= b, ">": lambda v, b: v > b, "<=": lambda v, b: v <= b}


def _bar(value, bar, op=">="):
  return {"value": value, "bar": bar, "op": op, "met": None if value is None else bool(OPS[op](value, bar))}


def _mean(summary: dict, name: str, key: str):
  block = summary[key].get(name) or (summary["baselines"].get(name) or {}).get(key) or {}
  return block.get("mean")


def bars(summary: dict) -> dict:
  """Every bar of the demo, with the measured value and whether it is met."""
  out = {}
  head = summary.get("headline") or {}
  for key, bar in (("later_checkpoints", 0.03), ("same_checkpoint", 0.05)):
    h = head.get(key)
    value = None if h is None else h["diff"]
    out[f"headline_{key}"] = {**_bar(value, bar), "family": head.get("family"),
                              "best_baseline": None if h is None else h["best_baseline"],
                              "ci": None if h is None else [h["ci_low"], h["ci_high"]]}
  later = out["headline_later_checkpoints"]
  out["headline_later_ci_low"] = _bar(None if later["ci"] is None else later["ci"][0], 0.0, ">")
  if "hybrid" in summary["auroc_later_checkpoints"]:
    base = ((summary["settings"].get("probe_configs") or {}).get("hybrid") or {}).get("head", {}).get("base", "linear")
    parts = {p: _mean(summary, p, "auroc_later_checkpoints") for p in (base, "gold_nll_sum", "gold_nll_mean")}
    parts = {p: v for p, v in parts.items() if v is not None}
    hyb = _mean(summary, "hybrid", "auroc_later_checkpoints")
    best = max(parts, key=parts.get) if parts else None
    out["hybrid_over_best_part_later"] = {**_bar(None if hyb is None or best is None else hyb - parts[best], 0.02),
                                          "best_part": best}
  checks = summary.get("testbed_checks")
  if checks is not None:
    out["testbed_checks_all_met"] = {**_bar(float(checks["all_met"]), 1.0), "met": checks["all_met"]}
  errors = {f: (summary["task_accuracy_abs_error"].get(f) or {}).get("mean") for f in summary["task_accuracy_abs_error"]}
  best_err = min((f for f in errors if errors[f] is not None), key=lambda f: errors[f], default=None)
  out["task_accuracy_abs_error_later"] = {**_bar(errors.get(best_err), 0.05, "<="), "family": best_err,
                                         "per_family": errors}
  lat = summary.get("latency_seconds") or {}
  out["latency_ratio_testbed"] = _bar(lat.get("ratio"), 10.0)
  real = summary.get("latency_seconds_real_task") or {}
  out["latency_ratio_real_task"] = _bar(real.get("ratio"), 20.0)
  out.update(audit_bars(summary))
  if summary.get("total_seconds") is not None:
    out["demo_seconds"] = _bar(summary["total_seconds"], DEMO_SECONDS, "<=")
  return out


def audit_bars(summary: dict) -> dict:
  """The audited-accuracy, pass@k and drift bars (absent when the audit did not run)."""
  a, out = summary.get("audit"), {}
  if not a:
    return out
  cov = [v["coverage"] for v in a["by_size"].values() if v.get("coverage") is not None]
  out["audit_coverage_every_size"] = _bar(min(cov) if cov else None, 0.90)
  out["audit_error_vs_audit_only"] = _bar(None if a["abs_error_mean"] is None else
                                          a["abs_error_audit_only_mean"] - a["abs_error_mean"], 0.0)
  out["audit_error_vs_probe_only"] = _bar(None if a["abs_error_mean"] is None else
                                          a["abs_error_probe_only_mean"] - a["abs_error_mean"], 0.0, ">")
  pk = summary.get("pass_at_k") or {}
  worst = max((v["abs_error_mean"] for v in pk.values() if v.get("abs_error_mean") is not None), default=None)
  out["pass_at_k_abs_error_worst_k"] = _bar(worst, 0.05, "<=")
  one_pass = [(v.get("one_pass") or {}).get("abs_error_mean") for v in pk.values()]
  one_pass = [e for e in one_pass if e is not None]
  if one_pass:  # no generation at the predicted checkpoint: the previous audit alone
    out["pass_at_k_one_pass_abs_error_worst_k"] = _bar(max(one_pass), 0.05, "<=")
  audited = [(v.get("audited") or {}).get("abs_error_mean") for v in pk.values()]
  audited = [e for e in audited if e is not None]
  if audited:
    out["pass_at_k_audited_abs_error_worst_k"] = _bar(max(audited), 0.05, "<=")
  cells = (summary.get("drift") or {}).get("cells") or {}
  reg = [v["alarm"] for key, v in cells.items() if key.startswith("syn_inc@")
         and int(key.split("@")[1]) >= _drop_step(summary)]
  other = [v["alarm"] for key, v in cells.items() if not key.startswith("syn_inc@")]
  if reg:
    out["drift_alarm_on_regression"] = _bar(float(np.mean(reg)), 1.0)
  if other:
    out["drift_false_alarm_rate"] = _bar(float(np.mean(other)), 0.20, "<=")
  return out


def _drop_step(summary: dict) -> int:
  """The first later checkpoint after the regression skill's peak (testbed: syn_inc)."""
  acc = (summary.get("measured_accuracy") or {}).get("syn_inc") or {}
  if not acc:
    return 1 << 62
  peak = max(acc, key=lambda s: acc[s]["pass1"])
  return min((int(s) for s in acc if int(s) > int(peak)), default=1 << 62)


def _fmt(v, fmt=".3f"):
  return "–" if v is None else format(v, fmt)


def _ci(block: dict) -> str:
  if block.get("mean") is None:
    return "–"
  if block.get("ci_low") is None:
    return _fmt(block["mean"])
  return f"{block['mean']:.3f} [{block['ci_low']:.3f}, {block['ci_high']:.3f}]"


def headline(summary: dict) -> str:
  """The table printed at the end of the demo: the headline comparison, then every predictor
  with its 95% question-cluster bootstrap CI."""
  lines = []
  head = summary.get("headline") or {}
  for key, label in (("same_checkpoint", "same checkpoints"), ("later_checkpoints", "later checkpoints")):
    h = head.get(key)
    if h:
      lines.append(f"- {label}: {h['verdict']} (paired, 95% CI)")
  if head.get("family"):
    lines.append(f"- family chosen by the {head['chosen_by']}")
  lines.append("")
  rows = []
  for group, names in (("", summary["auroc_same_checkpoint"]), ("baseline: ", summary["baselines"]),
                       ("reference: ", summary.get("references") or {})):
    for name in names:
      block = names[name] if group else {"auroc_same_checkpoint": summary["auroc_same_checkpoint"][name],
                                         "auroc_later_checkpoints": summary["auroc_later_checkpoints"][name],
                                         "task_accuracy_abs_error": summary["task_accuracy_abs_error"][name]}
      rows.append({"probe": group + name, "AUROC same [95% CI]": _ci(block["auroc_same_checkpoint"]),
                   "AUROC later [95% CI]": _ci(block["auroc_later_checkpoints"]),
                   "|acc err| later": block["task_accuracy_abs_error"]["mean"]})
  lines.append(report.markdown_table(rows, ["probe", "AUROC same [95% CI]", "AUROC later [95% CI]",
                                            "|acc err| later"]))
  for key, label in (("latency_seconds", "testbed"), ("latency_seconds_real_task", "real-task shapes")):
    lat = summary.get(key)
    if lat:
      lines.append(f"latency ({label}): generative {lat['generative_eval']:.2f}s vs probe "
                   f"({lat.get('probe_family')}) {lat['probe']:.2f}s = {lat['ratio']:.1f}x faster")
      if lat.get("stop_tokens_median") is not None:
        lines.append(f"  generation stops at each question's reference length (median {lat['stop_tokens_median']:.0f} "
                     f"tokens; {lat['long_frac']:.0%} of questions run to {lat['max_new_tokens']}), shared "
                     f"few-shot prefix {lat['generative_shared_prefix_tokens']} tokens")
      if lat.get("per_family"):
        lines.append("  per family: " + ", ".join(f"{f} {v['probe']:.2f}s ({v['ratio']:.1f}x)"
                                                  for f, v in lat["per_family"].items()))
      au = lat.get("audited")
      if au:
        lines.append(f"  audited estimate: probe {au['probe_seconds']:.2f}s + audit generation "
                     f"{au['audit_generation_seconds']:.2f}s ({au['audit_questions']} questions) vs generation "
                     f"alone at matched precision {au['generation_alone_seconds']:.2f}s "
                     f"({au['generation_alone_questions']:.0f} questions) = "
                     f"{_fmt(au['speedup_at_matched_precision'], '.2f')}x")
  missed = [k for k, v in (summary.get("bars") or {}).items() if isinstance(v, dict) and v.get("met") is False]
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
    if p["split"] != "test" or ":" in p["probe"]:
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
    auroc = {f: {t: v["mean"] for t, v in b["per_task"].items()} for f, b in summary[key].items()}
    auroc.update({f"baseline: {b}": {t: x["mean"] for t, x in v[key]["per_task"].items()}
                  for b, v in summary["baselines"].items()
                  if b in ("task_difficulty_prior", "gold_nll_sum", "metadata_lr", "surface_lr")})
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
  if summary.get("audit"):
    figs.append(("Audited task accuracy at later checkpoints: PPI++ (probe + a random audit of "
                 f"{summary['audit']['audit_questions_per_task']} questions per task) and audit-only 95% CIs, "
                 "probe-only estimate, measured accuracy",
                 audit_figures.plot_audited_accuracy(summary["audit"], os.path.join(fig_dir, "audited_accuracy.png"))))
    figs.append(("Predicted vs measured pass@k at later checkpoints (held-out questions)",
                 audit_figures.plot_pass_at_k(summary["pass_at_k"], os.path.join(fig_dir, "pass_at_k.png"))))
  sections = [("Headline", headline(summary)), ("Bars", _bars_text(summary["bars"]))]
  if summary.get("audit"):
    sections.append(("Audited task accuracy", _audit_text(summary)))
  if summary.get("testbed_checks"):
    sections.append(("Testbed checks", _checks_text(summary["testbed_checks"])))
  sections.append(("Settings", _settings_text(summary)))
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
      ci = f" 95% CI [{_fmt(v['ci'][0])}, {_fmt(v['ci'][1])}]" if v.get("ci") else ""
      vs = f" vs {v['best_baseline']}" if v.get("best_baseline") else ""
      lines.append(f"- {name}{fam}{vs}: {_fmt(v['value'])}{ci} (bar {v['op']} {v['bar']}): {state}")
  return "\n".join(lines)


def _audit_text(summary: dict) -> str:
  a = summary["audit"]
  lines = [f"- family {a.get('family')}; {a['audit_questions_per_task']} audited questions per (task, checkpoint); "
           f"coverage of the PPI++ 95% CI {_fmt(a['coverage'])}, mean |error| PPI++ {_fmt(a['abs_error_mean'])}, "
           f"audit only {_fmt(a['abs_error_audit_only_mean'])}, probe only {_fmt(a['abs_error_probe_only_mean'])}; "
           f"median ESS gain {_fmt(a['ess_gain_median'], '.2f')}, median half-width {_fmt(a['ci_halfwidth_median'])}"]
  for n, v in a["by_size"].items():
    lines.append(f"- n = {n}: coverage {_fmt(v['coverage'])}, |error| {_fmt(v['abs_error_mean'])} (audit only "
                 f"{_fmt(v['abs_error_audit_only_mean'])}), ESS gain {_fmt(v['ess_gain_median'], '.2f')}, "
                 f"half-width {_fmt(v['ci_halfwidth_median'])}")
  plan = a.get("planning") or {}
  if plan:
    lines.append(f"- planning: for a ±{plan.get('target_halfwidth')} half-width, PPI++ needs "
                 f"{plan.get('questions_needed_per_task_ppi')} and audit alone "
                 f"{plan.get('questions_needed_per_task_audit_only')} questions per task")
  for k, v in (summary.get("pass_at_k") or {}).items():
    au = v.get("audited") or {}
    alone = (v.get("probe_alone") or {}).get("abs_error_mean")
    diff = v.get("minus_probe_alone") or {}
    lo, hi = diff.get("ci") or (None, None)
    one = v.get("one_pass") or {}
    one_lo, one_hi = (one.get("minus_probe_alone") or {}).get("ci") or (None, None)
    lines.append(f"- pass@{k}: mean |predicted - measured| {_fmt(v.get('abs_error_mean'))} through this and the "
                 f"previous audit's offset ({_fmt(alone)} from the probe as trained, difference "
                 f"{_fmt(diff.get('diff'), '+.3f')} [{_fmt(lo, '+.3f')}, {_fmt(hi, '+.3f')}]); "
                 f"{_fmt(one.get('abs_error_mean'))} from one pass through the previous audit's offset alone "
                 f"(difference {_fmt((one.get('minus_probe_alone') or {}).get('diff'), '+.3f')} "
                 f"[{_fmt(one_lo, '+.3f')}, {_fmt(one_hi, '+.3f')}]); "
                 f"{_fmt(au.get('abs_error_mean'))} audited (PPI++, n = {au.get('audit_questions_per_task')}, "
                 f"coverage {_fmt(au.get('coverage'))})")
  cells = (summary.get("drift") or {}).get("cells") or {}
  fired = sorted(key for key, v in cells.items() if v.get("alarm"))
  lines.append(f"- drift alarm ('probe stale: relabel') on {len(fired)} of {len(cells)} later cells: "
               + (", ".join(fired) if fired else "none"))
  plain = sorted(key for key, v in cells.items() if v.get("alarm_as_trained"))
  if any("alarm_as_trained" in v for v in cells.values()):
    lines.append(f"- the same alarm on the probe as trained (no offset carried from the previous audit): "
                 f"{len(plain)} of {len(cells)} cells")
  return "\n".join(lines)


def _checks_text(checks: dict) -> str:
  lines = []
  for name, v in checks.items():
    if isinstance(v, dict) and "met" in v:
      state = {True: "met", False: "MISSED", None: "not measured"}[v["met"]]
      extra = f" {v['skills']}" if v.get("skills") is not None else ""
      lines.append(f"- {name}: {_fmt(v['value'])} (bar {v['op']} {v['bar']}){extra}: {state}")
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
      f"- {mon_line}", f"- stage wall times: {stages}", f"- {s['selection']}",
      "- selection scores (" + (summary.get("selection") or {}).get("protocol", "none") + "): "
      + ", ".join(f"{f} {_fmt(v)}" for f, v in ((summary.get("selection") or {}).get("scores") or {}).items())])
