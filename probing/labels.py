"""Generative evaluation -> per-question pass@1 labels, one JSONL record per question, resumable.

For one checkpoint and a list of tasks: sample k completions per question (plus optionally a
greedy one) with `models.sampling`, decode, cut at the task's stop strings, score with
`task.score_many`, and append one record per (checkpoint, task, question_id) to
`<out>/<checkpoint>.jsonl`; provenance goes to the sidecar `<checkpoint>.provenance.json`.
The config is `configs/experiments/label.py`: inputs under `data`, the output dir `out`.

The label file (`<checkpoint>.jsonl`) has one reader, `read_label_file`, behind `read_finished`
(resuming) and `read_labels` (training).

Two samplers give the same labels for the same seed (`config.sampler`): 'continuous' (default,
`models.continuous`) runs a task's questions through decode slots sized by `config.kv_cache_gib`
and refilled as rows stop, k samples and the greedy answer together, and writes records as
questions finish; 'static' decodes batches of `batch_size` questions, each until its longest row
stops.

Resumable because every sample's random stream depends only on (seed, task/question id, sample
index), so a question's tokens do not depend on which others run beside it; the static sampler
also cuts batches from the full ordered question list (a rerun recomputes a partly written batch
whole and writes only its missing records, so it runs the very same programs). Records are
appended with flush + fsync, and a torn last line is cut off on restart.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import time
from typing import Any, Callable, Sequence

import jax
from etils import epath
from flax import nnx

from models import continuous, io, kv_budget, multihost, sampling
from models import sharding as sharding_lib
from models.config import as_dtype
from models.version import code_version
from probing import checkpoints
from probing import tasks as task_registry
from probing import tokenizer as tokenizer_lib
from probing.eval import audited as audited_lib

# Settings that change what a record holds: a resumed run must use the same ones.
RESULT_KEYS = ("checkpoint", "num_samples", "temperature", "top_p", "max_new_tokens", "seed", "greedy",
               "dtype")
_CONFIG_KEY = {"dtype": "data.model_dtype"}  # result keys whose config field is named otherwise


class LabelError(ValueError):
  """Bad input found before any work starts (the launch script exits non-zero with it)."""


@dataclasses.dataclass
class Setup:
  """Everything validated and loaded before the first batch."""
  config: Any
  model: Any
  tokenizer: tokenizer_lib.Tokenizer
  tasks: list
  checkpoint: str
  checkpoint_step: int | None
  mesh: Any
  params: sampling.SamplingParams  # template: per-task max_new_tokens/stops are filled in


def setup(config) -> Setup:
  """Validates settings, tasks, tokenizer and checkpoint (in that order, cheapest first; the
  weights are read last, after every check)."""
  d = config.data
  try:
    params = sampling.SamplingParams(temperature=float(config.temperature), top_p=float(config.top_p),
                                     num_samples=int(config.num_samples), seed=int(config.seed))
  except (ValueError, TypeError) as e:
    raise LabelError(f"invalid sampling settings: {e}") from e
  if config.max_new_tokens is not None and config.max_new_tokens < 1:
    raise LabelError(f"max_new_tokens must be >= 1, got {config.max_new_tokens}")
  if config.batch_size < 1 or (d.limit is not None and d.limit < 1):
    raise LabelError("batch_size and data.limit must be >= 1")
  if config.sampler not in ("static", "continuous"):
    raise LabelError(f"sampler must be 'static' or 'continuous', got {config.sampler!r}")
  if not (config.kv_cache_gib > 0 and config.max_slots >= 1):
    raise LabelError(f"kv_cache_gib must be > 0 and max_slots >= 1, got {config.kv_cache_gib}, {config.max_slots}")
  try:
    names = task_registry.expand(d.tasks or "")
  except KeyError as e:
    raise LabelError(f"{e.args[0]} (--config.data.tasks)") from e
  if not names:
    raise LabelError("no tasks given (set --config.data.tasks=name1,name2)")
  tasks = [task_registry.get(name) for name in names]
  try:
    # Several processes always share the work over a mesh of all devices (one process alone
    # would otherwise decode everything on its first device).
    mesh = sharding_lib.make_mesh(d.mesh) if d.mesh or jax.process_count() > 1 else None
  except ValueError as e:
    raise LabelError(f"--config.data.mesh: {e}") from e
  try:
    as_dtype(d.model_dtype)
  except (ValueError, TypeError) as e:
    raise LabelError(f"--config.data.model_dtype: {e}") from e
  try:
    ck = checkpoints.inspect_checkpoint(d.checkpoint or "", tokenizer=d.tokenizer, name=d.checkpoint_name,
                                        step=d.checkpoint_step, require_step=False,
                                        stage_lengths=tuple(d.stage_lengths))
    ck = checkpoints.load_weights(ck, mesh=mesh, dtype=d.model_dtype)
  except (checkpoints.CheckpointError, tokenizer_lib.TokenizerError) as e:
    raise LabelError(str(e)) from e
  return Setup(config, ck.model, ck.tokenizer, tasks, ck.name, ck.step, mesh, params)


def stop_tokens(tok: tokenizer_lib.Tokenizer, stop_strings: Sequence[str]):
  """(single ids, id sequences) that end a row early without changing `task.truncate`'s result.

  A token whose own text contains a stop string is safe to stop on (the text is cut there
  anyway); so is the tokenization of a stop string. Other spellings are cut after decoding.
  """
  ids = {tok.eos_id}
  seqs = set()
  if stop_strings:
    for i in range(tok.vocab_size):
      try:
        text = tok.decode([i])
      except ValueError:
        continue
      if any(s in text for s in stop_strings):
        ids.add(i)
    for s in stop_strings:
      enc = tuple(tok.encode(s))
      if len(enc) > 1:
        seqs.add(enc)
  return tuple(sorted(ids)), tuple(sorted(seqs))


# ----------------------------------------------------------------------------- the output file


def read_label_file(path: str | os.PathLike, *, repair: bool = False) -> list[dict]:
  """Every record of one labels file, in order. A torn last line (a killed append) is ignored,
  or with `repair` cut off the file; lines without a question_id (headers) are skipped."""
  data = epath.Path(path).read_bytes()
  end = data.rfind(b"\n") + 1
  if repair and end < len(data) and io.is_remote(path):  # an object is replaced whole
    io.replace_from_tmp(path, lambda f: f.write(data[:end]), "wb")
  elif repair and end < len(data):
    with open(path, "r+b") as f:
      f.truncate(end)
      f.flush()
      os.fsync(f.fileno())
  out = []
  for n, line in enumerate(data[:end].splitlines(), 1):
    if not line.strip():
      continue
    try:
      rec = json.loads(line)
    except json.JSONDecodeError as e:
      raise LabelError(f"{path}:{n}: corrupt record ({e}); move the file away to start over") from e
    if "question_id" in rec:
      out.append(rec)
  return out


def read_finished(path: str) -> dict[tuple[str, str, str], dict]:
  """Records already written, by key; cuts a torn last line (a killed write) off the file."""
  if not epath.Path(path).exists():
    return {}
  return {(r["checkpoint"], r["task"], r["question_id"]): r for r in read_label_file(path, repair=True)}


def read_labels(paths: str | os.PathLike | Sequence[str]) -> list[dict]:
  """Label records from JSONL files (comma-separated or a list; a directory means its *.jsonl)."""
  if isinstance(paths, (str, os.PathLike)):
    paths = [p for p in str(paths).split(",") if p]
  files = []
  for p in paths:
    path = epath.Path(p)
    if not path.exists():
      raise LabelError(f"labels {p!r}: no such file or directory")
    files += (sorted(os.path.join(p, f.name) for f in path.iterdir() if f.name.endswith(".jsonl"))
              if path.is_dir() else [p])
  out = [r for f in files for r in read_label_file(f)]
  if not out:
    raise LabelError(f"no label records in {files}")
  return out


def _get(config, dotted: str):
  for part in dotted.split("."):
    config = config[part]
  return config


def _write_provenance(path: str, s: Setup, has_records: bool) -> None:
  """Writes (or checks and extends) the sidecar; a resumed run must not change RESULT_KEYS.

  A sidecar beside a labels file with no records (a run that failed before its first batch)
  describes nothing and is replaced, so a corrected rerun is not refused.
  """
  c = s.config
  result = {k: (s.checkpoint if k == "checkpoint" else _get(c, _CONFIG_KEY.get(k, k))) for k in RESULT_KEYS}
  prov = {"result_settings": result, "tokenizer_hash": tokenizer_lib.tokenizer_hash(s.tokenizer),
          "tokenizer": repr(s.tokenizer), "code_version": code_version(), "checkpoint": s.checkpoint,
          "checkpoint_step": s.checkpoint_step, "tasks": {}, "config": json.loads(c.to_json())}
  if epath.Path(path).exists() and has_records:
    old = json.loads(epath.Path(path).read_text())
    for key in ("result_settings", "tokenizer_hash"):
      if old.get(key) != prov[key]:
        raise LabelError(f"{path}: existing labels were made with {key}={old.get(key)}, this run has "
                         f"{prov[key]}; use another --config.out, or --config.data.overwrite=True to replace them")
    prov["tasks"] = dict(old.get("tasks", {}))
    prov["code_versions"] = sorted(set(old.get("code_versions", [old.get("code_version")])) | {code_version()})
  for t in s.tasks:
    if prov["tasks"].get(t.name, t.format_hash()) != t.format_hash():
      raise LabelError(f"{path}: task {t.name} had prompt format {prov['tasks'][t.name]}, now "
                       f"{t.format_hash()}; use another --config.out, or --config.data.overwrite=True")
    prov["tasks"][t.name] = t.format_hash()
  io.write_json(path, prov, indent=2, sort_keys=True)


# ----------------------------------------------------------------------------- the run


def _records(s: Setup, task, questions, prompts, samples, greedy, max_new, stops, generate_s) -> list[dict]:
  """Decodes, truncates and scores generated tokens (per question: k lists, and a greedy one or None)."""
  tok = s.tokenizer
  t1 = time.perf_counter()
  k = s.params.num_samples
  texts = [task.truncate(tok.decode(t)) for per_q in samples for t in per_q]
  flat_q = [q for q in questions for _ in range(k)]
  if greedy is not None:
    texts += [task.truncate(tok.decode(g)) for g in greedy]
    flat_q += list(questions)
  scores = [float(x) for x in task.score_many(flat_q, texts)]
  t2 = time.perf_counter()
  stop_set = set(stops[0])
  records = []
  for i, q in enumerate(questions):
    sc = scores[i * k:(i + 1) * k]
    correct = sum(x >= 0.5 for x in sc)
    rec = {"checkpoint": s.checkpoint, "checkpoint_step": s.checkpoint_step, "task": task.name,
           "question_id": q.id, "difficulty": q.difficulty, "k": k, "c": correct, "pass1": correct / k,
           "scores": sc, "completions": texts[i * k:(i + 1) * k],
           "num_tokens": [len(t) for t in samples[i]], "prompt_tokens": len(prompts[i]),
           "finished": [bool(t) and (t[-1] in stop_set or len(t) < max_new) for t in samples[i]],
           "greedy": None, "greedy_completion": None, "greedy_num_tokens": None,
           "timings": {"batch_questions": len(questions), "batch_generate_s": round(generate_s, 4),
                       "batch_score_s": round(t2 - t1, 4)}}
    if greedy is not None:
      g = scores[len(questions) * k + i]
      rec.update(greedy=int(g >= 0.5), greedy_completion=texts[len(questions) * k + i],
                 greedy_num_tokens=len(greedy[i]))
    records.append(rec)
  return records


def _sampling_params(s: Setup, max_new: int, stops) -> sampling.SamplingParams:
  return dataclasses.replace(s.params, max_new_tokens=max_new, stop_token_ids=stops[0], stop_sequences=stops[1])


def _label_batch(s: Setup, task, questions, graph_state, max_new, stops) -> list[dict]:
  """The static sampler: one batch (k samples, then greedy) generated, decoded and scored."""
  tok, c = s.tokenizer, s.config
  prompts = tok.encode_batch([q.prompt for q in questions])
  ids = [f"{task.name}/{q.id}" for q in questions]
  kw = dict(pad_id=tok.pad_id, eos_id=tok.eos_id, mesh=s.mesh, batch_multiple=c.batch_size,
            graphdef_state=graph_state)
  params = _sampling_params(s, max_new, stops)
  t0 = time.perf_counter()
  samples = sampling.generate(s.model, prompts, ids, params, **kw)
  greedy = (sampling.generate(s.model, prompts, ids, dataclasses.replace(params, temperature=0.0, num_samples=1),
                              **kw) if c.greedy else None)
  greedy = None if greedy is None else [g[0] for g in greedy]
  return _records(s, task, questions, prompts, samples, greedy, max_new, stops, time.perf_counter() - t0)


def decode_rows(s: Setup, prompts, prefix_len: int, max_new: int) -> int:
  """Decode slots of a continuous run: what `kv_cache_gib` holds (models.kv_budget), <= max_slots."""
  c = s.config
  rest = max(len(p) for p in prompts) - prefix_len
  rows = kv_budget.slots_for_budget(s.model.config, c.kv_cache_gib, prompt_tokens=rest, max_new_tokens=max_new,
                                    prefix_tokens=prefix_len)
  if rows < 1:
    raise LabelError(f"kv_cache_gib={c.kv_cache_gib} holds no decode slot of this task; raise it")
  return min(rows, c.max_slots)


def _label_stream(s: Setup, task, questions, graph_state, max_new, stops, prefix_len=None):
  """The continuous sampler: every question in one run of decode slots (k samples and the greedy
  answer together); yields records in groups of `batch_size` questions as they finish."""
  tok, c = s.tokenizer, s.config
  prompts = tok.encode_batch([q.prompt for q in questions])
  if not c.share_prefix:
    prefix_len = 0
  elif prefix_len is None:
    prefix_len = continuous.common_prefix_length(prompts)
  ids = [f"{task.name}/{q.id}" for q in questions]
  done, t0 = [], time.perf_counter()

  def flush():
    rows = [questions[i] for i, _, _ in done], [prompts[i] for i, _, _ in done]
    samples, greedy = [x for _, x, _ in done], ([g for _, _, g in done] if c.greedy else None)
    out = _records(s, task, *rows, samples, greedy, max_new, stops, time.perf_counter() - t0)
    done.clear()
    return out

  for item in continuous.stream(s.model, prompts, ids, _sampling_params(s, max_new, stops), pad_id=tok.pad_id,
                                eos_id=tok.eos_id, greedy=c.greedy, rows=decode_rows(s, prompts, prefix_len, max_new),
                                share_prefix=bool(prefix_len), prefix_len=prefix_len, mesh=s.mesh,
                                graphdef_state=graph_state):
    done.append(item)
    if len(done) >= c.batch_size:
      yield flush()
      t0 = time.perf_counter()
  if done:
    yield flush()


def _task_records(s: Setup, task, todo, graph_state, task_prompts=None):
  """Records of `todo` (static: batches; continuous: one list of questions), a group at a time."""
  max_new = int(s.config.max_new_tokens or task.max_new_tokens)
  stops = stop_tokens(s.tokenizer, task.stop_sequences)
  if s.config.sampler == "static":
    for batch in todo:
      yield _label_batch(s, task, batch, graph_state, max_new, stops)
  elif todo and todo[0]:
    # The prefix every prompt of the task shares, so a resumed subset runs the same programs.
    shared = task_prompts is not None and s.config.share_prefix
    prefix = continuous.common_prefix_length(task_prompts) if shared else None
    yield from _label_stream(s, task, todo[0], graph_state, max_new, stops, prefix)


def run(config, *, log: Callable[[str], None] = print) -> dict:
  """Labels every (task, question) not yet in the output file; returns a summary.

  In a multi-process run every process samples its share of each batch and gets all tokens back;
  process 0 alone reads what is already done (and tells the others) and writes the files.
  """
  s = setup(config)
  if not config.out:
    raise LabelError("set --config.out (the labels directory)")
  stem = os.path.join(config.out, re.sub(r"[^\w.+-]", "_", s.checkpoint))
  out_path, prov_path = stem + ".jsonl", stem + ".provenance.json"

  def prepare():
    io.mkdirs(config.out)
    done = read_finished(out_path)
    try:
      _write_provenance(prov_path, s, has_records=bool(done))
    except LabelError:
      if not config.data.overwrite:
        raise
      log(f"labels: replacing {len(done)} records made with other settings (data.overwrite)")
      epath.Path(out_path).unlink()
      done = {}
      _write_provenance(prov_path, s, has_records=False)
    return sorted(done)

  finished = {tuple(k) for k in multihost.from_process_zero(prepare)}
  plan = []
  for task in s.tasks:
    qs = list(task.questions(config.data.limit))
    if config.data.get("audit"):  # a uniform random audit: what PPI++ and the stale alarm need
      keep = set(audited_lib.audit_questions([q.id for q in qs], config.data.audit, seed=config.seed, task=task.name))
      qs = [q for q in qs if q.id in keep]
    missing = lambda q, t=task: (s.checkpoint, t.name, q.id) not in finished
    if config.sampler == "static":  # whole batches of the ordered list: a rerun runs the same programs
      batches = [qs[i:i + config.batch_size] for i in range(0, len(qs), config.batch_size)]
      todo = [b for b in batches if any(missing(q) for q in b)]
    else:  # a question's tokens do not depend on which others run beside it
      todo = [[q for q in qs if missing(q)]]
    plan.append((task, todo, sum(len(b) for b in todo), qs))
  total = sum(n for _, _, n, _ in plan)
  log(f"labels: {s.checkpoint} (step {s.checkpoint_step}) -> {out_path}; {len(finished)} records "
      f"already there, {total} questions to do ({config.sampler} sampler)")
  graph_state = nnx.split(s.model)
  done_q = new_records = gen_tokens = 0
  t_start = time.perf_counter()
  writer = multihost.is_writer()
  # An open append handle locally; an object store path is rewritten whole on each append.
  local_writer = writer and not io.is_remote(out_path)
  with (open(out_path, "a") if local_writer else contextlib.nullcontext(out_path)) as f:
    for task, todo, n, qs in plan:
      if not n:
        continue
      prompts = s.tokenizer.encode_batch([q.prompt for q in qs]) if config.share_prefix else None
      for records in _task_records(s, task, todo, graph_state, prompts):
        fresh = [r for r in records if (s.checkpoint, task.name, r["question_id"]) not in finished]
        if writer:
          io.append_jsonl(f, fresh)
        new_records += len(fresh)
        done_q += len(records)
        gen_tokens += sum(sum(r["num_tokens"]) + (r["greedy_num_tokens"] or 0) for r in records)
        elapsed = time.perf_counter() - t_start
        rate = done_q / elapsed
        log(f"{task.name}: {done_q}/{total} questions, {rate:.2f} q/s, {gen_tokens / elapsed:.0f} tok/s, "
            f"ETA {(total - done_q) / rate:.0f} s")
  return {"out": out_path, "provenance": prov_path, "new_records": new_records,
          "records": len(finished) + new_records, "seconds": time.perf_counter() - t_start}


def label_questions(s: Setup, task, questions: Sequence) -> list[dict]:
  """Records for `questions` of `task`, in memory (no files), in question order: the core of `run`,
  for callers that time or embed generative evaluation on an already loaded model."""
  questions = list(questions)
  if s.config.sampler == "static":
    bs = s.config.batch_size
    todo = [questions[i:i + bs] for i in range(0, len(questions), bs)]
  else:
    todo = [questions]
  records = {r["question_id"]: r for group in _task_records(s, task, todo, nnx.split(s.model)) for r in group}
  return [records[q.id] for q in questions]


__all__ = ["LabelError", "RESULT_KEYS", "Setup", "label_questions", "read_finished",
           "read_label_file", "read_labels", "run", "setup", "stop_tokens"]
