"""OLMES / oe-eval per-instance predictions (`task-NNN-<task>-predictions.jsonl`) -> outcomes.

A row holds `doc_id`, `native_id` (the dataset's own id, which our real tasks use as question
ids), `metrics` (`exact_match`, `pass_at_1`, `acc_raw`, ...), `model_output` (one entry per
request: `continuation` for generation, log-likelihoods for multiple choice) and `label`. The
run's other files beside it are read when present: `-requests.jsonl` gives each document's
text (matched by hash when ids differ) and `-metrics.json` its task config (primary metric,
whether decoding was greedy).

k and c: pass_at_1 over n generations is c/n exactly; a single generation's or a multiple
choice's 0/1 metric is c of k = 1; several generations under a non-pass metric are scored
one by one with our task's own scorer.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any

from probing.interop.matching import Matcher, QuestionIndex, doc_ids, doc_texts, subtask_of
from probing.interop.rows import InteropError, Outcome, binary_outcome, is_pass_at_1, read_jsonl, unit_value

FORMAT = "olmes"
NAME = re.compile(r"^(?P<stem>task-(?P<num>\d+)-(?P<task>.+))-predictions\.jsonl$")
_DEFAULT_METRICS = ("pass_at_1", "exact_match", "acc_raw", "acc_per_char", "acc")


def _sibling(path: str, suffix: str) -> str | None:
  m = NAME.match(os.path.basename(path))
  if not m:
    return None
  p = os.path.join(os.path.dirname(os.path.abspath(path)), m["stem"] + suffix)
  return p if os.path.isfile(p) else None


def _requests(path: str | None) -> dict[Any, tuple[dict | None, str | None]]:
  """doc_id -> (doc, prompt text) from the run's requests file (first request of each doc)."""
  out = {}
  if path is None:
    return out
  for _, row in read_jsonl(path):
    req = row.get("request") if isinstance(row.get("request"), dict) else {}
    context = req.get("context")
    if isinstance(context, dict):  # chat requests: {"messages": [{"role", "content"}, ...]}
      context = "\n".join(str(m.get("content", "")) for m in context.get("messages") or [] if isinstance(m, dict))
    out.setdefault(row.get("doc_id"), (row.get("doc") if isinstance(row.get("doc"), dict) else None,
                                       context if isinstance(context, str) else None))
  return out


def _task_config(path: str | None) -> dict:
  if path is None:
    return {}
  try:
    with open(path, encoding="utf-8") as f:
      config = json.load(f).get("task_config")
  except (OSError, json.JSONDecodeError, AttributeError) as e:
    raise InteropError(f"{path}: unreadable OLMES metrics file ({e})") from None
  return config if isinstance(config, dict) else {}


def check_row(path: str, line: int, row: dict) -> None:
  if "doc_id" not in row or not isinstance(row.get("metrics"), dict) or "model_output" not in row:
    hint = ("; it looks like an lm-eval samples row: use --format=lm_eval" if "resps" in row else "")
    raise InteropError(f"{path}:{line}: not an OLMES predictions row (needs doc_id, metrics and "
                       f"model_output){hint}")


def _choose_metric(path: str, line: int, metrics: dict, metric: str | None, primary: str | None) -> str:
  if metric:
    if metric not in metrics:
      raise InteropError(f"{path}:{line}: no metric {metric!r} in the row (it has {sorted(metrics)})")
    return metric
  for name in ((primary,) if primary else ()) + _DEFAULT_METRICS:
    if name in metrics:
      return name
  raise InteropError(f"{path}:{line}: none of the per-instance metrics {list(_DEFAULT_METRICS)} in the row "
                     f"(it has {sorted(metrics)}); choose one with --metric")


def read(path: str, task, index: QuestionIndex, *, metric: str | None = None, allow_unmatched: bool = False,
         **unused) -> tuple[list[Outcome], dict[str, Any]]:
  """Outcomes of one predictions file for our `task`, and what was used to get them."""
  if unused.get("filter"):
    raise InteropError("--filter names an lm-eval filter; for OLMES files choose the metric with --metric")
  rows = read_jsonl(path)
  for line, row in rows:
    check_row(path, line, row)
  m = NAME.match(os.path.basename(path))
  source_task = m["task"].split(":")[0] if m else None
  requests_file, metrics_file = _sibling(path, "-requests.jsonl"), _sibling(path, "-metrics.json")
  docs = _requests(requests_file)
  config = _task_config(metrics_file)
  gen_kwargs = config.get("generation_kwargs") or {}
  greedy_run = bool(gen_kwargs) and (gen_kwargs.get("do_sample") is False or gen_kwargs.get("temperature") == 0)
  matcher = Matcher(index, path, allow_unmatched=allow_unmatched, subtask=subtask_of(source_task, task.name))
  out, used = [], set()
  for line, row in rows:
    doc, prompt = docs.get(row["doc_id"], (None, None))
    texts = doc_texts(doc) + ([(prompt, [])] if prompt else [])
    qid = matcher(line, f"doc_id {row['doc_id']} (native_id {row.get('native_id')!r})",
                  [row.get("native_id")] + doc_ids(doc), texts,
                  position=row["doc_id"] if isinstance(row["doc_id"], int) else None)
    if qid is None:
      continue
    name = _choose_metric(path, line, row["metrics"], metric, config.get("primary_metric"))
    used.add(name)
    value = unit_value(path, line, name, row["metrics"][name])
    outputs = row["model_output"] if isinstance(row["model_output"], list) else [row["model_output"]]
    gens = [o["continuation"] for o in outputs if isinstance(o, dict) and isinstance(o.get("continuation"), str)]
    source = {"line": line, "doc_id": row["doc_id"], "native_id": row.get("native_id"), "metric": name,
              "value": value}
    scores = None
    if gens and is_pass_at_1(name):
      k, c = len(gens), round(value * len(gens))
    elif len(gens) > 1:
      q = index.questions[qid]
      scores = [float(s) for s in task.score_many([q] * len(gens), gens)]
      k, c = len(gens), sum(s >= 0.5 for s in scores)
    else:
      k, c = 1, binary_outcome(path, line, name, value)
    greedy = int(c == k) if gens and greedy_run else None
    out.append(Outcome(qid, k, c, greedy, scores, gens or None,
                       [o.get("model_answer") for o in outputs if isinstance(o, dict)] if gens else None, source))
  info = {"source_task": source_task, "metric": sorted(used), "rows": len(rows), "greedy_run": greedy_run,
          "requests_file": requests_file and os.path.basename(requests_file),
          "metrics_file": metrics_file and os.path.basename(metrics_file), "skipped": matcher.skipped}
  return out, info
