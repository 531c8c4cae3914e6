"""lm-evaluation-harness `--log_samples` files (`samples_<task>_<date>.jsonl`) -> outcomes.

A file holds one row per (document, filter): `doc_id`, `doc`, `arguments`, `resps` (requests x
repeats), `filtered_resps`, `filter` and one float per metric. With several repeats lm-eval
keeps only the first repeat's extraction (its filters end in `take_first`) and scores only
that, so the chosen filter's extraction steps are re-applied here to every repeat and each
is scored by our task's own scorer: k = repeats, c = repeats correct. A filter is read from
the run's `results_<date>.json` beside the file (its task config), else from lm-eval's own
GSM8K definitions. Rows whose filter cannot be re-applied (code execution, log-likelihood
choices) take the row's metric: pass@1 over n repeats is c/n, a single repeat's 0/1 is c.
"""
from __future__ import annotations

import glob
import json
import os
import re
from typing import Any

from probing.interop.matching import Matcher, QuestionIndex, doc_ids, doc_texts, subtask_of
from probing.interop.rows import InteropError, Outcome, binary_outcome, is_pass_at_1, read_jsonl, unit_value

FORMAT = "lm_eval"
# lm-eval's gsm8k.yaml filters, for files whose results JSON is not at hand.
GSM8K_FILTERS = {
    "strict-match": [{"function": "regex", "regex_pattern": r"#### (\-?[0-9\.\,]+)"}, {"function": "take_first"}],
    "flexible-extract": [{"function": "regex", "group_select": -1, "regex_pattern": r"(-?[$0-9.,]{2,})|(-?[0-9]+)"},
                         {"function": "take_first"}],
}
_SELECT = ("take_first", "take_first_k", "majority_vote")  # choose among repeats: dropped per repeat
_PER_SAMPLE_METRICS = ("exact_match", "acc", "pass@1", "pass_at_1")


def _regex(text: str, regex_pattern: str, group_select: int = 0, fallback: str = "[invalid]") -> str:
  """lm-eval's `regex` filter on one response (lm_eval/filters/extraction.py::RegexFilter)."""
  found = re.findall(regex_pattern, text)
  if not found:
    return fallback
  try:
    m = found[group_select]
  except IndexError:
    return fallback
  if isinstance(m, tuple):
    m = next((x for x in m if x), fallback)
  return m.strip()


_MAPS = {
    "regex": _regex,
    "remove_whitespace": lambda t: t.strip(),
    "lowercase": lambda t: t.lower(),
    "uppercase": lambda t: t.upper(),
}


def per_repeat(steps: list[dict]):
  """A function applying the filter's extraction steps to one response, or None when a step
  is not one we can re-apply."""
  fns = []
  for step in steps:
    name = step.get("function")
    if name in _SELECT:
      continue
    if name not in _MAPS:
      return None
    kwargs = {k: v for k, v in step.items() if k != "function"}
    fns.append((_MAPS[name], kwargs))

  def apply(text: str) -> str:
    for fn, kwargs in fns:
      text = fn(text if isinstance(text, str) else "", **kwargs)
    return text
  return apply


def filter_steps(path: str, source_task: str | None, date: str | None, name: str) -> tuple[list[dict] | None, str]:
  """(steps of filter `name`, where they were read) from the run's results JSON, else the
  built-in GSM8K ones, else (None, why)."""
  if name == "none":
    return [{"function": "take_first"}], "lm-eval's default 'none' filter"
  folder = os.path.dirname(os.path.abspath(path))
  candidates = ([os.path.join(folder, f"results_{date}.json")] if date else []) + sorted(
      glob.glob(os.path.join(folder, "results_*.json")), reverse=True)
  for results in dict.fromkeys(candidates):
    if not os.path.isfile(results):
      continue
    try:
      with open(results, encoding="utf-8") as f:
        configs = json.load(f).get("configs", {})
    except (json.JSONDecodeError, AttributeError, OSError):
      continue
    for entry in (configs.get(source_task) or {}).get("filter_list") or []:
      if isinstance(entry, dict) and entry.get("name") == name:
        return list(entry.get("filter") or []), os.path.basename(results)
  if source_task == "gsm8k" and name in GSM8K_FILTERS:
    return GSM8K_FILTERS[name], "lm-eval's gsm8k.yaml"
  return None, f"no results_*.json beside the file defines filter {name!r} of task {source_task!r}"


def file_task(path: str) -> tuple[str | None, str | None]:
  """(task, date) of `samples_<task>_<date>.jsonl`, split at the last '_' as lm-eval's own
  `get_file_task_name` does; (None, None) for another name."""
  base = os.path.basename(path)
  if not (base.startswith("samples_") and base.endswith(".jsonl")) or "_" not in base[len("samples_"):]:
    return None, None
  stem = base[len("samples_"):-len(".jsonl")]
  return stem[:stem.rfind("_")] or None, stem[stem.rfind("_") + 1:]


def _generation(row: dict) -> tuple[list[str] | None, dict | None]:
  """(the repeats of a generate_until row, its gen_kwargs), or (None, None) for other types."""
  args = (row.get("arguments") or {}).get("gen_args_0") if isinstance(row.get("arguments"), dict) else None
  gen = args.get("arg_1") if isinstance(args, dict) else None
  resps = row.get("resps")
  if isinstance(resps, list) and len(resps) == 1 and isinstance(resps[0], list) and resps[0] and all(
      isinstance(r, str) for r in resps[0]) and (isinstance(gen, dict) or gen is None):
    return list(resps[0]), gen if isinstance(gen, dict) else None
  return None, None


def greedy_run(gen: dict | None) -> bool:
  """Whether HF-style generation kwargs decode greedily (lm-eval's default when unset)."""
  gen = gen or {}
  if "do_sample" in gen:
    return not gen["do_sample"]
  return float(gen.get("temperature") or 0.0) == 0.0


def _metric(path: str, line: int, row: dict, metric: str | None) -> tuple[str, float]:
  names = [metric] if metric else [m for m in row.get("metrics") or [] if m in row] + [
      m for m in _PER_SAMPLE_METRICS if m in row]
  if not names or names[0] not in row:
    raise InteropError(f"{path}:{line}: no per-document metric {metric or _PER_SAMPLE_METRICS!r} in the row "
                       f"(keys {sorted(row)})")
  return names[0], unit_value(path, line, names[0], row[names[0]])


def check_row(path: str, line: int, row: dict) -> None:
  if "doc_id" not in row or not ("resps" in row or "filtered_resps" in row):
    hint = ("; it looks like an OLMES predictions row: use --format=olmes" if "model_output" in row
            else "")
    raise InteropError(f"{path}:{line}: not an lm-eval samples row (needs doc_id and resps){hint}")


def read(path: str, task, index: QuestionIndex, *, filter: str | None = None,  # pylint: disable=redefined-builtin
         metric: str | None = None, allow_unmatched: bool = False) -> tuple[list[Outcome], dict[str, Any]]:
  """Outcomes of one samples file for our `task`, and what was used to get them."""
  rows = read_jsonl(path)
  for line, row in rows:
    check_row(path, line, row)
  source_task, date = file_task(path)
  filters = list(dict.fromkeys(str(row.get("filter", "none")) for _, row in rows))
  chosen = filter or filters[0]  # lm-eval writes filters in the task's filter_list order
  if chosen not in filters:
    raise InteropError(f"{path}: no rows with filter {chosen!r}; the file has {filters}")
  steps, steps_from = filter_steps(path, source_task, date, chosen)
  extract = per_repeat(steps) if steps is not None else None
  matcher = Matcher(index, path, allow_unmatched=allow_unmatched, subtask=subtask_of(source_task, task.name))
  out, greedy_runs = [], set()
  for line, row in rows:
    if str(row.get("filter", "none")) != chosen:
      continue
    doc = row.get("doc") if isinstance(row.get("doc"), dict) else None
    args = row.get("arguments")
    prompt = args.get("gen_args_0", {}).get("arg_0") if isinstance(args, dict) else None
    texts = doc_texts(doc) + ([(prompt, [])] if isinstance(prompt, str) else [])
    qid = matcher(line, f"doc_id {row['doc_id']}", doc_ids(doc), texts,
                  position=row["doc_id"] if isinstance(row["doc_id"], int) else None)
    if qid is None:
      continue
    q = index.questions[qid]
    repeats, gen = _generation(row)
    source = {"line": line, "doc_id": row["doc_id"], "filter": chosen}
    if repeats is not None and extract is not None:
      extracted = [extract(r) for r in repeats]
      scores = [float(s) for s in task.score_many([q] * len(repeats), extracted)]
      c = sum(s >= 0.5 for s in scores)
      shown = next((m for m in ([metric] if metric else row.get("metrics") or []) if m in row), None)
      if shown is not None:  # lm-eval's own verdict on the first repeat, kept for comparison
        source.update(metric=shown, first_repeat_value=row[shown])
      greedy = int(scores[0] >= 0.5) if greedy_run(gen) else None
      greedy_runs.add(greedy_run(gen))
      out.append(Outcome(qid, len(repeats), c, greedy, scores, repeats, extracted, source))
      continue
    name, value = _metric(path, line, row, metric)
    n = len(repeats) if repeats is not None else 1
    if is_pass_at_1(name):
      k, c = n, round(value * n)
    elif n == 1:
      k, c = 1, binary_outcome(path, line, name, value)
    else:
      raise InteropError(f"{path}:{line}: filter {chosen!r} ({[s.get('function') for s in steps or []] or steps_from})"
                         f" cannot be re-applied to each of the {n} repeats, and metric {name!r} scores only the "
                         "first; choose --filter=none (our scorer on the raw samples) or a regex filter")
    greedy = c if repeats is not None and greedy_run(gen) and k == 1 else None
    greedy_runs.add(repeats is not None and greedy_run(gen))
    source.update(metric=name, value=value)
    out.append(Outcome(qid, k, c, greedy, None, repeats, None, source))
  info = {"source_task": source_task, "filter": chosen, "filters_in_file": filters,
          "filter_steps": steps, "filter_from": steps_from if extract is not None else "row metric",
          "metric": metric, "rows": len(rows), "greedy_run": sorted(greedy_runs), "skipped": matcher.skipped}
  return out, info
