"""The demo's evaluation: predictions of every family and baseline, the summary metrics, latency.

AUROCs are computed on held-out questions within each (task, checkpoint) cell with >= 5
positive and >= 5 negative sampled outcomes, then averaged. "same" = the probes' own training
checkpoints, "later" = every checkpoint after them. Each number is recomputable from
labels.jsonl and predictions.jsonl (`summary_from_records`). Evaluators receive a small
`Context` (the checkpoint split and how to get rows and splits), never the pipeline object.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np

from models import continuous, sampling
from probing import features as features_lib
from probing import labels as labels_lib
from probing import tasks as task_registry
from probing.eval import intervals, metrics
from probing.eval.baselines import baselines as cheap_baselines, references
from probing.probes import train_probe
from probing.tasks.olmo_eval import shipped_tokenizer_path
from probing.tokenizer import HFTokenizer

BASELINE_PREFIX = "baseline:"  # cheap signals a skeptic would use instead of a probe
REFERENCE_PREFIX = "reference:"  # another trainer of a probe on the same activations
N_BOOT = 1000


@dataclasses.dataclass
class Context:
  """What the evaluators need from an experiment.

  `data(steps, family)` -> (ProbeData, ProbeConfig, TrainConfig) of those checkpoints;
  `split(data, train_upto)` -> (Split, per-row question role 'train'/'val'/'test').
  """
  train_steps: list[int]
  later_steps: list[int]
  data: Callable
  split: Callable
  min_train_checkpoints: int
  questions: dict | None = None  # (task, question_id) -> Question, for the content baselines
  load_model: Callable | None = None  # step -> that checkpoint's model (a submodel copies its blocks)


def prediction_records(ctx: Context, probes: dict) -> list[dict]:
  """One record per (checkpoint_step, task, question_id, probe) over every checkpoint."""
  steps = ctx.train_steps + ctx.later_steps
  records, done_baselines = [], False
  for family, probe in probes.items():
    data, _, _ = ctx.data(steps, family)
    split, roles = ctx.split(data, ctx.train_steps[-1])
    # A per-cell centering probe (the hybrid) takes its cell means from non-test questions only.
    preds = {family: probe.predict(data, center_rows=roles != "test")}
    if not done_baselines:  # baselines fitted on the same training rows, once
      for name, p in cheap_baselines(data, split, questions=ctx.questions).items():
        preds[BASELINE_PREFIX + name] = p
      for name, p in references(data, split).items():
        preds[REFERENCE_PREFIX + name] = p
      done_baselines = True
    for name, p in preds.items():
      for i in range(len(data)):
        records.append({"checkpoint": data.checkpoint[i], "checkpoint_step": int(data.step[i]),
                        "task": data.task[i], "question_id": data.question_id[i], "probe": name,
                        "p": float(p[i]), "split": str(roles[i]),
                        "checkpoint_role": "train" if data.step[i] <= ctx.train_steps[-1] else "later"})
  return records


def selection_scores(ctx: Context, families) -> dict:
  """Forward chaining inside the probe-training checkpoints: each family trained on all but the
  last of them, scored (mean within-cell AUROC) on the last one's non-test questions. The one
  protocol every choice is made on; test questions and later checkpoints never enter it."""
  out = {}
  fit_steps, select_step = ctx.train_steps[:-1], ctx.train_steps[-1]
  for family in families:
    data, head, train_cfg = ctx.data(ctx.train_steps, family)
    split, roles = ctx.split(data, fit_steps[-1])
    source = ctx.load_model(fit_steps[-1]) if head.encoder == "submodel" else None
    probe = train_probe(data, split, head, train_cfg, olmo_source=source)
    p = probe.predict(data, center_rows=roles != "test")
    rows = np.flatnonzero((data.step == select_step) & (roles != "test"))
    recs = [{"task": data.task[i], "checkpoint_step": int(data.step[i]), "question_id": data.question_id[i],
             "p": float(p[i]), "c": float(data.c[i]), "k": float(data.k[i])} for i in rows]
    out[family] = metrics.primary_auroc(recs)["mean"]
  return out


def _join(predictions: list[dict], labels: list[dict]) -> dict[str, list[dict]]:
  """probe -> metric records (task, checkpoint_step, question_id, p, c, k, greedy, role) of test rows."""
  index = {(r["checkpoint_step"], r["task"], r["question_id"]): r for r in labels}
  out: dict[str, list[dict]] = {}
  for p in predictions:
    if p["split"] != "test":
      continue
    lab = index[(p["checkpoint_step"], p["task"], p["question_id"])]
    out.setdefault(p["probe"], []).append({
        "task": p["task"], "checkpoint_step": p["checkpoint_step"], "question_id": p["question_id"],
        "p": p["p"], "c": lab["c"], "k": lab["k"], "greedy": lab.get("greedy"), "role": p["checkpoint_role"]})
  return out


def _auroc_block(records: list[dict], boot: dict | None = None) -> dict:
  """Mean within-cell AUROC `{mean, ci_low, ci_high, cells, per_task: {task: {mean, ci_low,
  ci_high}}, ...}`; the CI from the role's shared bootstrap draws."""
  if not records:
    return {"mean": None, "ci_low": None, "ci_high": None, "cells": 0, "per_task": {}, "n_cells": 0,
            "n_cells_skipped": 0}
  summary = metrics.auroc_summary(records)
  prim = summary["primary"]
  out = {"mean": prim["mean"], "ci_low": None, "ci_high": None, "cells": prim["n_cells"],
         "per_task": {t: {"mean": v, "ci_low": None, "ci_high": None} for t, v in prim["per_task"].items()},
         "n_cells": prim["n_cells"], "n_cells_skipped": prim["n_cells_skipped"]}
  if boot is not None:
    ci = intervals.summarize(boot)
    out.update(ci_low=ci["ci_low"], ci_high=ci["ci_high"])
    for t, v in ci["per_task"].items():
      out["per_task"][t].update(ci_low=v["ci_low"], ci_high=v["ci_high"])
  for key in ("greedy", "pass1_ge_0.5"):
    if key in summary:
      out[f"{key}_mean"] = summary[key]["mean"]
  return out


def _accuracy_error(records: list[dict]) -> dict:
  """|mean predicted p - measured accuracy| per (task, later checkpoint), averaged per task."""
  cells: dict[tuple, list] = {}
  for r in records:
    cells.setdefault((r["task"], r["checkpoint_step"]), []).append((r["p"], r["c"] / r["k"]))
  per_task: dict[str, list] = {}
  for (task, _), rows in cells.items():
    p, y = np.asarray(rows).T
    per_task.setdefault(task, []).append(abs(float(p.mean() - y.mean())))
  per_task_mean = {t: float(np.mean(v)) for t, v in sorted(per_task.items())}
  return {"per_task": per_task_mean, "mean": float(np.mean(list(per_task_mean.values()))) if per_task_mean else None}


def _role_intervals(joined: dict[str, list[dict]], role: str) -> dict[str, dict]:
  """Every predictor's bootstrap result on one checkpoint role, from the same question draws."""
  recs = {probe: [r for r in rs if r["role"] == role] for probe, rs in joined.items()}
  recs = {probe: rs for probe, rs in recs.items() if rs}
  return intervals.bootstrap_auroc(recs, n_boot=N_BOOT) if recs else {}


def summary_from_records(predictions: list[dict], labels: list[dict], *, activation_only=(),
                         selection: dict | None = None) -> dict:
  """The metric part of summary.json, from the two jsonl files' records alone.

  Every AUROC carries a 95% question-cluster bootstrap CI; `paired_differences` gives each
  family minus each baseline on the same draws. `headline`: the activation-only family chosen
  on the selection protocol (`selection`: family -> score; without it, the family with the best
  same-checkpoint AUROC) against the best baseline of each role, picked on the test questions
  themselves, which favours the baseline.
  """
  joined = _join(predictions, labels)
  boot = {role: _role_intervals(joined, role) for role in ("train", "later")}
  groups: dict[str, dict] = {"families": {}, "baselines": {}, "references": {}}
  for probe, recs in sorted(joined.items()):
    same = [r for r in recs if r["role"] == "train"]
    later = [r for r in recs if r["role"] == "later"]
    block = {"auroc_same_checkpoint": _auroc_block(same, boot["train"].get(probe)),
             "auroc_later_checkpoints": _auroc_block(later, boot["later"].get(probe)),
             "task_accuracy_abs_error": _accuracy_error(later),
             "ece_later": metrics.ece([r["p"] for r in later], [r["c"] for r in later], [r["k"] for r in later])
             if later else None}
    group, name = ("baselines", probe[len(BASELINE_PREFIX):]) if probe.startswith(BASELINE_PREFIX) else (
        ("references", probe[len(REFERENCE_PREFIX):]) if probe.startswith(REFERENCE_PREFIX) else ("families", probe))
    groups[group][name] = block
  fams = groups["families"]
  pick = lambda key: {f: b[key] for f, b in fams.items()}  # noqa: E731
  out = {"auroc_same_checkpoint": pick("auroc_same_checkpoint"),
         "auroc_later_checkpoints": pick("auroc_later_checkpoints"),
         "task_accuracy_abs_error": pick("task_accuracy_abs_error"),
         "ece_later_checkpoints": pick("ece_later"), "baselines": groups["baselines"],
         "references": groups["references"]}
  out["paired_differences"] = {
      key: {f: {b: intervals.paired_difference(boot[role][f], boot[role][BASELINE_PREFIX + b])
                for b in groups["baselines"] if BASELINE_PREFIX + b in boot[role]}
            for f in fams if f in boot[role]}
      for key, role in (("same_checkpoint", "train"), ("later_checkpoints", "later"))}
  out["headline"] = headline(out, boot, [f for f in activation_only if f in fams], selection)
  return out


def headline(summary: dict, boot: dict, activation_only: list[str], selection: dict | None) -> dict:
  """The chosen activation-only family minus the best baseline, same and later checkpoints."""
  if not activation_only:
    return {"family": None, "reason": "no activation-only family ran"}
  if selection:
    family = max(activation_only, key=lambda f: -1 if selection.get(f) is None else selection[f])
    chosen_by = "selection protocol (forward chaining inside the probe-training checkpoints)"
  else:
    family = max(activation_only, key=lambda f: summary["auroc_same_checkpoint"][f]["mean"] or -1)
    chosen_by = "same-checkpoint test AUROC (no selection scores given)"
  out = {"family": family, "chosen_by": chosen_by}
  for key, role, auroc_key in (("same_checkpoint", "train", "auroc_same_checkpoint"),
                               ("later_checkpoints", "later", "auroc_later_checkpoints")):
    bases = {b: v[auroc_key]["mean"] for b, v in summary["baselines"].items() if v[auroc_key]["mean"] is not None}
    if not bases or family not in boot[role]:
      out[key] = None
      continue
    best = max(bases, key=bases.get)
    diff = intervals.paired_difference(boot[role][family], boot[role][BASELINE_PREFIX + best])
    verdict = ("beats" if diff["ci_low"] is not None and diff["ci_low"] > 0 else
               "loses to" if diff["ci_high"] is not None and diff["ci_high"] < 0 else "cannot be told from")
    out[key] = {"family_auroc": summary[auroc_key][family], "best_baseline": best,
                "baseline_auroc": summary["baselines"][best][auroc_key], **diff,
                "verdict": f"{family} {verdict} the best baseline ({best}): "
                           f"{diff['diff']:+.3f} [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}]"}
  return out


def cross_checkpoint(ctx: Context, family: str) -> metrics.CrossCheckpointMatrix:
  """`family` retrained with each split point i, scored at every j > i."""
  steps = ctx.train_steps + ctx.later_steps
  data, head, train_cfg = ctx.data(steps, family)
  labels = {(int(s), t, q): (c, k) for s, t, q, c, k in zip(data.step, data.task, data.question_id, data.c, data.k)}
  by_upto = {}
  for upto in steps[ctx.min_train_checkpoints - 1:-1]:
    split, roles = ctx.split(data, upto)
    probe = train_probe(data, split, head, train_cfg)
    p = probe.predict(data)
    test = (roles == "test") & (data.step > upto)
    by_upto[upto] = [{"task": data.task[i], "checkpoint_step": int(data.step[i]), "question_id": data.question_id[i],
                      "p": float(p[i]), "c": labels[(int(data.step[i]), data.task[i], data.question_id[i])][0],
                      "k": labels[(int(data.step[i]), data.task[i], data.question_id[i])][1]}
                     for i in np.flatnonzero(test)]
  return metrics.cross_checkpoint_matrix(by_upto, test_steps=steps[1:])


# ----------------------------------------------------------------------------- latency


def _timed(fn, repeats: int = 2) -> dict:
  """Cold (first, compiling) and warm (median of the rest) wall seconds of fn()."""
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return {"cold": times[0], "warm": float(np.median(times[1:])) if len(times) > 1 else times[0]}


def latency_same_checkpoint(setup: labels_lib.Setup, questions: dict, tokenizer, probes: dict, headline: str,
                            step: int) -> dict:
  """Generative labels (k samples + greedy, decoded and scored) vs one-pass extraction + the probe,
  for the same loaded checkpoint (`setup`, from `probing.labels.setup`) and questions. Loading the
  checkpoint is common to both and excluded; warm runs (after compilation), the first run
  reported as `cold`."""
  def generative():
    for task in setup.tasks:
      labels_lib.label_questions(setup, task, questions[task.name])

  def probe_pass(probe):  # every task's questions in one extraction, as the monitor runs it
    return lambda: probe.predict_model(setup.model, tokenizer, questions, checkpoint="latency",
                                       checkpoint_step=step, mesh=setup.mesh)

  gen = _timed(generative, 2)
  per_family = {f: _timed(probe_pass(p), 3) for f, p in probes.items()}
  prb = per_family[headline]
  c = setup.config
  return {"generative_eval": gen["warm"], "probe": prb["warm"], "ratio": gen["warm"] / prb["warm"],
          "cold": {"generative_eval": gen["cold"], "probe": prb["cold"]},
          "per_family": {f: {"probe": t["warm"], "ratio": gen["warm"] / t["warm"], "probe_cold": t["cold"]}
                         for f, t in per_family.items()},
          "questions": sum(len(q) for q in questions.values()), "checkpoint_step": step,
          "num_samples": int(c.num_samples), "greedy": bool(c.greedy), "probe_family": headline,
          "probe_includes": "one prefill pass (the probe's layers, pooling and gold NLL) and the probe head",
          "generative_includes": "k samples + greedy per question, decoding, stop strings, scoring"}


def audited_clock(latency: dict, audit: dict) -> dict:
  """The fair clock for the audited estimate at one later checkpoint (`latency`: the testbed's
  `latency_same_checkpoint`; `audit`: summary.json `audit`).

  The audited estimate costs the probe pass plus generating the audit (n questions per task);
  per-question generation time is the measured generative evaluation's (warm) over its questions.
  At matched precision, generation alone must label m questions per (task, checkpoint) cell to
  reach the PPI++ interval's width: with the fpc, (1 - m/N)/m = (1 - n/N)/(n g) for the cell's
  ESS gain g, i.e. 1/m = 1/N + (1/n - 1/N)/g (m <= N). Summed over the later cells' tasks at
  one checkpoint (the per-task medians), that is the generation time the audited estimate saves.
  """
  cells = audit.get("per_cell") or {}
  n = int(audit["audit_questions_per_task"])
  per_q = latency["generative_eval"] / max(1, latency["questions"])
  by_task: dict[str, list[float]] = {}
  for key, c in cells.items():
    g, N = c.get("ess_gain"), int(c["N"])
    m = N if g is None or not np.isfinite(g) or g <= 0 else 1.0 / (1.0 / N + (1.0 / min(n, N) - 1.0 / N) / g)
    by_task.setdefault(key.rsplit("@", 1)[0], []).append(min(float(N), m))
  tasks = sorted(by_task)
  audit_q = n * len(tasks)
  alone_q = float(sum(np.median(v) for v in by_task.values()))
  audited = latency["probe"] + audit_q * per_q
  return {"audit_questions": audit_q, "audit_generation_seconds": audit_q * per_q,
          "probe_seconds": latency["probe"], "audited_seconds": audited,
          "generation_alone_questions": alone_q, "generation_alone_seconds": alone_q * per_q,
          "speedup_at_matched_precision": alone_q * per_q / audited if audited > 0 else None,
          "generation_seconds_per_question": per_q, "tasks": tasks,
          "includes": "probe: one prefill pass over every question and the head; audit: k samples + "
                      "greedy of n random questions per task; generation alone: as many questions as "
                      "reach the PPI++ interval's width (median over each task's later cells)"}


class _FoldedTokenizer:
  """A real BPE tokenizer whose ids are folded into the testbed vocabulary (for shapes only)."""

  def __init__(self, inner, vocab_size: int, reserved: int = 3):
    self.inner, self.vocab_size, self.reserved = inner, vocab_size, reserved
    self.pad_id, self.eos_id, self.bos_id = 0, 2, 1

  def encode(self, text):
    return self._fold(self.inner.encode(text))

  def encode_batch(self, texts):
    return [self._fold(ids) for ids in self.inner.encode_batch(texts)]

  def _fold(self, ids):
    return [self.reserved + i % (self.vocab_size - self.reserved) for i in ids]

  def fingerprint(self):
    return "folded:" + self.inner.fingerprint()


def stop_lengths(questions, tok, max_new: int, long_frac: float, seed: int = 0) -> np.ndarray:
  """Where each question's samples stop on the fair clock: at its reference solution's token length
  (what a trained model writes), except a seeded `long_frac` of questions that run to the budget
  (as early checkpoints ramble)."""
  lengths = np.minimum([len(t) for t in tok.encode_batch([q.reference for q in questions])], max_new)
  long = np.random.default_rng(seed).permutation(len(questions))[:int(round(long_frac * len(questions)))]
  lengths[long] = max_new
  return np.maximum(lengths, 1)


def latency_real_task(model, probe, rc, *, stand_in_task: str, mesh=None) -> dict:
  """One real task's shapes (`rc`: the demo config's real_task section; prompt lengths from its
  BPE tokenizer, k samples) on the testbed model: the labels are meaningless, the timing is real.
  The generative side runs as the label job does (the continuous sampler, the few-shot prefix every
  prompt shares run once), with stops where a trained model would stop (`stop_lengths`): the
  testbed model never emits the task's stop strings, so each question's samples are given its
  stop length as their budget, grouped by that length rounded up to 32 tokens (the padding counts
  against generation; `mesh`: the one the model's weights are on). The probe reads the features
  as if they were of `stand_in_task` (a task it knows): the head's cost is what is timed."""
  task = task_registry.get(rc.task)
  questions = list(task.questions(rc.questions))
  tok = _FoldedTokenizer(HFTokenizer(shipped_tokenizer_path(rc.tokenizer)), model.config.vocab_size)
  prompts = [tok.encode(q.prompt) for q in questions]  # for the shapes; each side times its own
  max_new = int(rc.max_new_tokens or task.max_new_tokens)
  stops = stop_lengths(questions, tok, max_new, float(rc.long_frac))
  budgets = np.minimum(-(-stops // 32) * 32, max_new)
  ids = [f"{task.name}/{q.id}" for q in questions]
  prefix = continuous.common_prefix_length(prompts)
  generated = []

  def generative():
    encoded = tok.encode_batch([q.prompt for q in questions])
    total = 0
    for budget in sorted(set(budgets.tolist())):
      rows = [i for i in range(len(questions)) if budgets[i] == budget]
      params = sampling.SamplingParams(temperature=1.0, top_p=1.0, num_samples=int(rc.num_samples),
                                       max_new_tokens=int(budget), seed=0)
      out = continuous.generate(model, [encoded[i] for i in rows], [ids[i] for i in rows], params,
                                pad_id=tok.pad_id, eos_id=None, share_prefix=True, prefix_len=prefix, mesh=mesh)
      total += sum(len(t) for per_q in out for t in per_q)
    generated.append(total)

  longest = max(len(p) for p in prompts)
  spec = probe.extract_spec(max_prompt_tokens=max(2048, longest), max_reference_tokens=max_new, batch_size=8)
  shared: list[int] = []

  def probe_pass():
    fs = features_lib.extract(model, tok, questions, spec, task=stand_in_task, checkpoint="latency",
                              checkpoint_step=0)
    # The probe refuses features of another tokenizer; here that is the point (shapes only).
    fs.meta["tokenizer_hash"] = (probe.card.get("features") or [{}])[0].get("tokenizer_hash")
    shared.append(fs.meta["shared_prefix_tokens"])
    probe.predict(probe.build_data([fs]))

  gen, prb = _timed(generative, 2), _timed(probe_pass, 3)
  return {"generative_eval": gen["warm"], "probe": prb["warm"], "ratio": gen["warm"] / prb["warm"],
          "cold": {"generative_eval": gen["cold"], "probe": prb["cold"]}, "task": rc.task,
          "questions": len(questions), "num_samples": int(rc.num_samples), "max_new_tokens": max_new,
          "generated_tokens": generated[-1], "useful_tokens": int(stops.sum()) * int(rc.num_samples),
          "long_frac": float(rc.long_frac), "stop_tokens_median": float(np.median(stops)),
          "generative_shared_prefix_tokens": prefix,
          "prompt_tokens_median": float(np.median([len(p) for p in prompts])),
          "prompt_tokens_max": longest, "tokenizer": rc.tokenizer, "shared_prefix_tokens": shared[-1],
          "probe_family": probe.card["family"],
          "probe_includes": "tokenization, one prefill (prompt + gold solution for the NLL; the few-shot "
                            "prefix every prompt shares runs once) and the probe head; tokenization is "
                            "timed on both sides, checkpoint loading on neither",
          "generative_includes": "tokenization, the continuous sampler with the shared few-shot prefix run "
                                 "once, k samples per question stopping at its reference length (a "
                                 "long_frac of questions at max_new_tokens), budgets rounded up to 32"}
