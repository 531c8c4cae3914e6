"""Another tool's per-document results -> our label records for one (checkpoint, task).

`import_labels` reads an lm-eval samples file or an OLMES predictions file, matches every
document to one of our task's questions, and writes `<out>/<checkpoint>.<task>.imported.jsonl`
(records of the schema `probing.labels` writes, so `read_labels` and the probe trainer take
them unchanged) with its sidecar `....imported.provenance.json` (source file and its hash,
format, filter or metric). Everything is read and checked before anything is written; the
sidecar is written first and the records last, each atomically. Importing the same results
again changes nothing; different results for the same (checkpoint, task) need `replace`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

from models import io
from models.version import code_version
from probing import tasks as task_registry
from probing.interop import lm_eval, olmes
from probing.interop.matching import QuestionIndex
from probing.interop.rows import InteropError

READERS = {lm_eval.FORMAT: lm_eval.read, olmes.FORMAT: olmes.read}
SUFFIX = ".imported"


def _safe(name: str) -> str:
  return re.sub(r"[^\w.+-]", "_", name)


def label_stem(out_dir: str, checkpoint: str, task: str) -> str:
  """`<out>/<checkpoint>.<task>.imported`: + '.jsonl' (records), + '.provenance.json' (sidecar)."""
  return os.path.join(out_dir, f"{_safe(checkpoint)}.{_safe(task)}{SUFFIX}")


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _records(outcomes, index: QuestionIndex, checkpoint: str, step: int, task: str, fmt: str) -> list[dict]:
  order = {qid: i for i, qid in enumerate(index.questions)}
  out = []
  for o in sorted(outcomes, key=lambda o: order[o.question_id]):
    q = index.questions[o.question_id]
    out.append({"checkpoint": checkpoint, "checkpoint_step": step, "task": task, "question_id": q.id,
                "difficulty": q.difficulty, "k": int(o.k), "c": int(o.c), "pass1": o.c / o.k,
                "scores": o.scores, "completions": o.completions, "extracted": o.extracted,
                "greedy": o.greedy, "source": dict(o.source, format=fmt)})
  return json.loads(json.dumps(out))  # as a reader will see them (compared on re-import)


def _read_label_file(path: str) -> list[dict]:
  """`probing.labels.read_label_file`, imported only when a labels file is there to read (the
  module loads JAX for generation; an import into a fresh directory needs none of it)."""
  from probing import labels  # pylint: disable=import-outside-toplevel
  return labels.read_label_file(path)


def _others(out_dir: str, target: str, checkpoint: str, task: str) -> str | None:
  """Another labels file in `out_dir` already holding records of (checkpoint, task)."""
  for name in sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []:
    path = os.path.join(out_dir, name)
    if name.endswith(".jsonl") and path != target and os.path.isfile(path):
      if any(str(r.get("checkpoint")) == checkpoint and r.get("task") == task
             for r in _read_label_file(path)):
        return path
  return None


def _difference(old: list[dict], new: list[dict]) -> str:
  by_q = {r.get("question_id"): r for r in old}
  for r in new:
    was = by_q.get(r["question_id"])
    if was is None:
      return f"question {r['question_id']!r} is new"
    for key in ("k", "c", "greedy"):
      if was.get(key) != r.get(key):
        return f"question {r['question_id']!r}: {key} {was.get(key)!r} -> {r.get(key)!r}"
    src = {k: v for k, v in r["source"].items() if k not in ("line", "doc_id")}
    if {k: (was.get("source") or {}).get(k) for k in src} != src:
      return f"question {r['question_id']!r} now comes from {src}"
  return f"{len(old)} records there, {len(new)} now"


def import_labels(fmt: str, path: str, task: str, checkpoint: str, checkpoint_step: int, out_dir: str, *,
                  filter: str | None = None, metric: str | None = None,  # pylint: disable=redefined-builtin
                  allow_unmatched: bool = False, replace: bool = False) -> dict[str, Any]:
  """Imports one results file; returns a summary ('status': 'written' or 'unchanged')."""
  if fmt not in READERS:
    raise InteropError(f"unknown format {fmt!r}; expected one of {sorted(READERS)}")
  if not checkpoint:
    raise InteropError("name the checkpoint the results belong to (--checkpoint=ID)")
  if checkpoint_step is None or int(checkpoint_step) < 0:
    raise InteropError("give the checkpoint's monotone training step (--checkpoint_step=N)")
  if not out_dir:
    raise InteropError("name the labels directory to write (--out=DIR)")
  if not os.path.isfile(path):
    raise InteropError(f"{path}: no such file")
  try:
    t = task_registry.get(task)
  except KeyError as e:
    raise InteropError(str(e.args[0])) from None
  index = QuestionIndex(t.name, t.questions())
  outcomes, info = READERS[fmt](path, t, index, filter=filter, metric=metric, allow_unmatched=allow_unmatched)
  if not outcomes:
    raise InteropError(f"{path}: no document matched a {t.name} question (skipped {info['skipped']})")
  records = _records(outcomes, index, checkpoint, int(checkpoint_step), t.name, fmt)
  stem = label_stem(out_dir, checkpoint, t.name)
  target, sidecar = stem + ".jsonl", stem + ".provenance.json"
  other = _others(out_dir, target, checkpoint, t.name)
  if other:
    raise InteropError(f"{other} already holds labels of checkpoint {checkpoint!r} task {t.name!r}; two "
                       "sources for one (checkpoint, task) would be read twice: use another --out")
  prov = {"imported": dict(info, format=fmt, source_file=os.path.abspath(path), source_sha256=_sha256(path),
                           documents=len(records)),
          "checkpoint": checkpoint, "checkpoint_step": int(checkpoint_step), "tasks": {t.name: t.format_hash()},
          "labels_prompt": "the source tool's own prompt and decoding (see imported)",
          "code_version": code_version()}
  summary = {"out": target, "provenance": sidecar, "records": len(records), "skipped": info["skipped"],
             "format": fmt, "filter": info.get("filter"), "metric": info.get("metric")}
  old = _read_label_file(target) if os.path.exists(target) else None
  if old == records:
    if not os.path.exists(sidecar):  # a crash between the two writes
      io.write_json(sidecar, prov, indent=2, sort_keys=True)
    return summary | {"status": "unchanged"}
  if old is not None and not replace:
    raise InteropError(f"{target} already holds other labels of checkpoint {checkpoint!r} task {t.name!r} "
                       f"({_difference(old, records)}); pass --replace to overwrite them")
  os.makedirs(out_dir, exist_ok=True)
  io.write_json(sidecar, prov, indent=2, sort_keys=True)
  io.write_jsonl(target, records, sort_keys=True)
  return summary | {"status": "written"}
