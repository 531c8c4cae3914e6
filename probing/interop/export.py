"""Predicted pass@1 in lm-eval's output format, so dashboards that read lm-eval runs read ours.

Per checkpoint, as lm-eval lays out a run (`<dir>/<model_name_sanitized>/`):
`samples_<task>_<date>.jsonl` (one row per question: `doc_id`, `doc`, `filtered_resps` = [p],
`filter` = 'probe', `metrics` = ['acc'], `acc` = p, and the sha256 hashes lm-eval writes) and
`results_<date>.json` (`results[task]` holds `acc,probe` = predicted accuracy and
`acc_stderr,probe`, its standard error over questions; beside it `config`, `versions`,
`n-samples`, `higher_is_better`, `date`). The distinct filter name 'probe' keeps predicted
values apart from measured ones. Samples are written first and the results file, which names
the run, last; each atomically.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import re
import time
from typing import Any, Mapping, Sequence

import numpy as np

from models import io
from models.version import code_version

FILTER = "probe"


def sanitize_model_name(name: str) -> str:
  """lm-eval's folder name for a model (lm_eval/utils.py::sanitize_model_name)."""
  return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def date_id(now: float | None = None) -> str:
  """lm-eval's file date: ISO time with ':' -> '-' (no '_', which its name parsers split on)."""
  return datetime.datetime.fromtimestamp(time.time() if now is None else now).isoformat().replace(":", "-")


def _sha(text: str) -> str:
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _stderr(p: np.ndarray) -> float | str:
  return float(np.std(p, ddof=1) / math.sqrt(len(p))) if len(p) > 1 else "N/A"


def write_lm_eval(out_dir: str, data, p: np.ndarray, questions: Mapping[str, Sequence[Any]], *, checkpoint: str,
                  checkpoint_step: int | None = None, probe: str = "", card: Mapping | None = None,
                  formats: Mapping[str, str] | None = None, limit: int | None = None,
                  total_questions: Mapping[str, int] | None = None, seconds: float | None = None,
                  now: float | None = None) -> dict[str, Any]:
  """Writes one checkpoint's predictions (rows of `data` at `checkpoint`) in lm-eval's format.

  `questions`: task -> the questions predicted, in order (their position is the `doc_id`);
  `formats`: task -> prompt-format hash (the task's 'version'); `total_questions`: task -> the
  task's full size (`n-samples.original`). Returns {'dir', 'results', 'samples': {task: path}}.
  """
  now = time.time() if now is None else now
  date = date_id(now)
  folder = os.path.join(out_dir, sanitize_model_name(checkpoint))
  os.makedirs(folder, exist_ok=True)
  p = np.asarray(p, np.float64)
  at = np.asarray(data.checkpoint) == checkpoint
  results, samples, n_samples, versions = {}, {}, {}, {}
  for task, qs in questions.items():
    rows = {str(data.question_id[i]): i for i in np.flatnonzero(at & (np.asarray(data.task) == task))}
    missing = [q.id for q in qs if str(q.id) not in rows]
    if missing:
      raise ValueError(f"no prediction for {len(missing)} {task} question(s) at {checkpoint}, e.g. {missing[:3]}")
    ps = np.asarray([p[rows[str(q.id)]] for q in qs])
    lines = []
    for doc_id, (q, pq) in enumerate(zip(qs, ps)):
      doc = {"question_id": q.id, "task": task}
      lines.append({"doc_id": doc_id, "doc": doc, "target": q.reference, "arguments": {},
                    "resps": [], "filtered_resps": [float(pq)], "filter": FILTER, "metrics": ["acc"],
                    "doc_hash": _sha(json.dumps(doc, indent=2, ensure_ascii=False)), "prompt_hash": _sha(q.prompt),
                    "target_hash": _sha(str(q.reference)), "acc": float(pq), "checkpoint_step": checkpoint_step})
    samples[task] = os.path.join(folder, f"samples_{task}_{date}.jsonl")
    io.write_jsonl(samples[task], lines, ensure_ascii=False)
    results[task] = {"name": task, "alias": task, "sample_len": len(qs), f"acc,{FILTER}": float(ps.mean()),
                     f"acc_stderr,{FILTER}": _stderr(ps)}
    n_samples[task] = {"original": int((total_questions or {}).get(task, len(qs))), "effective": len(qs)}
    versions[task] = (formats or {}).get(task)
  card = card or {}
  doc = {
      "results": results, "group_subtasks": {t: [] for t in results},
      "configs": {t: {"task": t, "output_type": "probe", "prompt_format_hash": versions[t],
                      "metadata": {"predicted_by": "olmo-probe", "probe": probe}} for t in results},
      "versions": versions, "higher_is_better": {t: {"acc": True} for t in results}, "n-samples": n_samples,
      "config": {"model": "olmo-probe", "model_args": f"checkpoint={checkpoint},probe={probe}",
                 "batch_size": None, "batch_sizes": [], "device": None, "use_cache": None, "limit": limit,
                 "bootstrap_iters": 0, "gen_kwargs": None, "probe_family": card.get("family"),
                 "probe_layers": card.get("layers"), "probe_pooling": card.get("pooling")},
      "git_hash": code_version(), "date": now, "model_source": "olmo-probe", "model_name": checkpoint,
      "model_name_sanitized": sanitize_model_name(checkpoint), "checkpoint_step": checkpoint_step,
      "total_evaluation_time_seconds": str(seconds if seconds is not None else ""),
  }
  results_path = os.path.join(folder, f"results_{date}.json")
  io.write_json(results_path, doc, indent=2, ensure_ascii=False)
  return {"dir": folder, "results": results_path, "samples": samples}
