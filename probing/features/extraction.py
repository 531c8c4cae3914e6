"""Activation features from one prefill pass, and the on-disk feature store.

`extract` runs one jitted forward pass per batch of left-padded question prompts (no
generation) and pools inside the jit, so [batch, tokens, layers, hidden] never exists:
  * `last`  [N, L, D]: the residual stream at the last prompt token, per requested layer;
  * `mean`  [N, L, D]: the mean over prompt tokens (padding masked), per layer;
  * `tokens` [N, C, D] + `tokens_mask` [N, C]: one layer's states of the last C prompt tokens
    (right-aligned; rows with fewer tokens are zero and masked on the left), for token probes;
  * hybrid mode: the sequence is prompt + reference in the same pass; prompt states are pooled
    exactly as above (attention is causal, so they equal plain extraction) and the teacher-forced
    loss of the reference tokens gives `nll_sum`, `nll_mean`, `ref_len` [N]. Logits are computed
    only at the reference positions, so hybrid costs about what plain extraction does.
Prompts that share a long token prefix (a task's few-shot examples) run it once: each row
continues its cached keys/values (`models.olmo3.SharedPrefix`) and mean pooling adds the
prefix's state sums, so the features equal the full-prompt pass at a fraction of the tokens
(`share_prefix`; the sidecar records `shared_prefix_tokens`).
Layer i is hidden state i of `models.olmo3`: 0 is the embedding output, i the residual after
block i - 1. Prompts longer than `max_prompt_tokens` keep their last tokens; references keep
their first `max_reference_tokens` (counts of both are recorded).

The jitted pass is `probing.features.forward`; the store format (and its readers) `probing.features.store`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx
from jax.sharding import Mesh

from models import io, multihost
from models import sharding as sharding_lib
from probing.features import forward
from probing.features.store import (FORMAT, POOLINGS, SIDECAR, STORE_FILE, FeatureError, FeatureSet, _sha,
                                    behaviour_hash, extraction_code_version, fingerprint, finished_meta,
                                    load_features, read_shards, shard_path, write_npz)

_STORE_DTYPES = ("float32", "float16")
_FLOAT_KEYS = ("last", "mean", "tokens")  # stored in spec.dtype; NLLs stay float32


@dataclasses.dataclass(frozen=True)
class ExtractSpec:
  """What one extraction computes. Layers index hidden states (0 = embeddings)."""
  layers: tuple[int, ...]
  pooling: tuple[str, ...] = POOLINGS
  token_layer: int | None = None
  token_cap: int = 64
  hybrid: bool = False
  reference_eos: bool = False  # append EOS to the reference (tasks whose answers end in EOS)
  batch_size: int = 16  # per process
  max_prompt_tokens: int = 2048
  max_reference_tokens: int = 512
  length_bucket: int = 64  # pad lengths to a multiple, so few shapes compile
  nll_chunk: int = 128  # reference positions per LM-head chunk (bounds [B, chunk, V] logits)
  dtype: str = "float32"
  # Prompts that all start with the same tokens (few-shot examples) run that prefix once and
  # continue it per row (`models.olmo3.SharedPrefix`), when it is at least this many tokens.
  share_prefix: bool = True
  min_shared_prefix: int = 32

  def __post_init__(self):
    object.__setattr__(self, "layers", tuple(sorted(set(int(i) for i in self.layers))))
    object.__setattr__(self, "pooling", tuple(self.pooling))
    bad = [p for p in self.pooling if p not in POOLINGS]
    if bad:
      raise FeatureError(f"pooling {bad} unknown; expected some of {POOLINGS}")
    if not self.layers and self.token_layer is None and not self.hybrid:
      raise FeatureError("ExtractSpec asks for nothing: give layers, token_layer or hybrid=True")
    if self.dtype not in _STORE_DTYPES:
      raise FeatureError(f"dtype {self.dtype!r}: expected one of {_STORE_DTYPES}")
    for name in ("token_cap", "batch_size", "max_prompt_tokens", "max_reference_tokens",
                 "length_bucket", "nll_chunk", "min_shared_prefix"):
      if int(getattr(self, name)) < 1:
        raise FeatureError(f"ExtractSpec.{name} must be >= 1, got {getattr(self, name)!r}")

  def check_model(self, num_layers: int) -> None:
    wanted = list(self.layers) + ([] if self.token_layer is None else [self.token_layer])
    bad = [i for i in wanted if not 0 <= i <= num_layers]
    if bad:
      raise FeatureError(f"layers {bad} out of range: the model has hidden states 0..{num_layers}")

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["layers"], d["pooling"] = list(self.layers), list(self.pooling)
    return d


# ----------------------------------------------------------------------------- tokenization


def _encode(tokenizer, questions: Sequence[Any], spec: ExtractSpec):
  """Token lists of prompts (left-truncated) and, in hybrid mode, references (right-truncated)."""
  batch = getattr(tokenizer, "encode_batch", None)
  encode = batch if batch is not None else (lambda texts: [tokenizer.encode(t) for t in texts])
  if spec.hybrid:
    missing = [q.id for q in questions if not getattr(q, "reference", None)]
    if missing:
      raise FeatureError(f"question {missing[0]!r}: hybrid extraction needs a non-empty reference")
  prompt_ids = encode([q.prompt for q in questions])
  ref_ids = encode([q.reference for q in questions]) if spec.hybrid else None
  prompts, refs, cut_p, cut_r = [], [], 0, 0
  for i, q in enumerate(questions):
    p = list(prompt_ids[i])
    if not p:
      raise FeatureError(f"question {q.id!r}: prompt encodes to no tokens")
    if len(p) > spec.max_prompt_tokens:
      p, cut_p = p[-spec.max_prompt_tokens:], cut_p + 1
    prompts.append(p)
    if spec.hybrid:
      r = list(ref_ids[i]) + ([int(tokenizer.eos_id)] if spec.reference_eos else [])
      if len(r) > spec.max_reference_tokens:
        r, cut_r = r[:spec.max_reference_tokens], cut_r + 1
      refs.append(r)
  return prompts, (refs if spec.hybrid else None), cut_p, cut_r


def shared_prefix_length(prompts: Sequence[Sequence[int]], spec: ExtractSpec) -> int:
  """Tokens every prompt starts with that can run once (0 when fewer than spec.min_shared_prefix).

  Every row keeps at least its last prompt token, and its last `token_cap` ones when token
  states are extracted, so pooling and token states never need the prefix's per-row states.
  """
  if not spec.share_prefix or len(prompts) < 2:
    return 0
  keep = spec.token_cap if spec.token_layer is not None else 1
  cap = min(len(p) for p in prompts) - keep
  if cap < spec.min_shared_prefix:
    return 0
  first, n = np.asarray(prompts[0][:cap]), cap
  for p in prompts[1:]:  # the common prefix only shrinks: no [N, cap] array for large tasks
    differ = np.flatnonzero(np.asarray(p[:n]) != first[:n])
    if differ.size:
      n = int(differ[0])
      if n < spec.min_shared_prefix:
        return 0
  return n


# ----------------------------------------------------------------------------- extraction


@dataclasses.dataclass(frozen=True)
class _Plan:
  """What an extraction runs, fixed before any device work (identical on every process)."""
  ids: list[str]
  prompts: list[list[int]]  # without the shared prefix
  refs: list[list[int]] | None
  prefix_ids: list[int]  # the shared prefix, run once ([] when none)
  prefix_len: int
  meta: dict  # the sidecar, less what is only known at the end (timing, code_version, created)
  batches: list[list[int]]  # global batches of question indices, shortest questions first
  rows_of: list[int]  # rows per process of each global batch
  pooled_layers: tuple[int, ...]
  num_layers: int
  pad_id: int

  def mine(self, g: int, pi: int) -> list[int]:
    """Process `pi`'s rows of global batch `g`."""
    return self.batches[g][pi * self.rows_of[g]:(pi + 1) * self.rows_of[g]]


def _plan(model, tokenizer, questions: Sequence[Any], spec: ExtractSpec, pc: int, *, checkpoint: str,
          checkpoint_step: int, task: str, prompt_format_hash: str) -> _Plan:
  """Tokens, the store's meta and fingerprint, and the batch plan of `questions` on `pc` processes.
  The fingerprint names what the store holds, not how it was run: any process count reads and
  continues a store another count wrote."""
  num_layers = model.config.num_hidden_layers
  spec.check_model(num_layers)
  ids = [str(q.id) for q in questions]
  if not ids:
    raise FeatureError("no questions to extract")
  if len(set(ids)) != len(ids):
    dup = sorted({q for q in ids if ids.count(q) > 1})[:3]
    raise FeatureError(f"duplicate question ids {dup} (task {task!r})")
  pad_id = getattr(tokenizer, "pad_id", None)
  pad_id = 0 if pad_id is None else int(pad_id)
  prompts, refs, cut_p, cut_r = _encode(tokenizer, questions, spec)
  prefix_len = shared_prefix_length(prompts, spec)
  prefix_ids = prompts[0][:prefix_len]
  prompts = [p[prefix_len:] for p in prompts]
  meta = {"format": FORMAT, "checkpoint": checkpoint, "checkpoint_step": int(checkpoint_step),
          "task": task, "question_ids": ids, "layers": list(spec.layers), "pooling": list(spec.pooling),
          "token_layer": spec.token_layer, "token_cap": spec.token_cap, "hybrid": spec.hybrid,
          "reference_eos": spec.reference_eos, "dtype": spec.dtype,
          "hidden_size": model.config.hidden_size, "tokenizer_hash": behaviour_hash(tokenizer),
          "prompt_format_hash": prompt_format_hash, "spec": spec.to_dict(),
          "num_processes": pc, "files": [STORE_FILE],
          "truncated_prompts": cut_p, "truncated_references": cut_r, "shared_prefix_tokens": prefix_len}
  meta["fingerprint"] = fingerprint(meta)
  # Batches of similar length (sorted by total tokens); global batch g holds every process's
  # rows of that batch, so all processes agree on its padded shapes without communicating.
  lengths = [len(p) + (len(refs[i]) if refs else 0) for i, p in enumerate(prompts)]
  order = sorted(range(len(ids)), key=lambda i: (lengths[i], i))
  gb = spec.batch_size * pc
  batches = [order[g * gb:(g + 1) * gb] for g in range(-(-len(order) // gb))]
  # Rows per process of each batch: the last, partial batch is cut to a multiple of 8 rather than
  # padded to `batch_size` with dummy rows (a short task is often all one partial batch).
  rows_of = [min(spec.batch_size, forward.round_up(-(-len(rows) // pc), 8)) for rows in batches]
  return _Plan(ids, prompts, refs, prefix_ids, prefix_len, meta, batches, rows_of,
               spec.layers if spec.pooling else (), num_layers, pad_id)


def _load_finished(out_dir: str) -> FeatureSet:
  """A complete store as process 0 reads it, on every process."""
  meta = multihost.from_process_zero(lambda: load_features(out_dir).meta)
  arrays = multihost.broadcast_arrays(
      {k: v for k, v in load_features(out_dir).arrays.items()} if multihost.is_writer() else None)
  return FeatureSet(meta, arrays)


def _resume(out_dir: str | None, plan: _Plan, overwrite: bool) -> tuple[str | None, np.ndarray, dict]:
  """The shard directory, which global batches are done, and the done rows by question id (on
  every process: process 0 reads the shards and sends what it found)."""
  if out_dir is None:
    return None, np.zeros(len(plan.batches), bool), {}
  shard_dir = os.path.join(out_dir, "shards")
  found: dict[str, np.ndarray] = {}

  def read():
    found.update(read_shards(shard_dir, plan.meta["fingerprint"], overwrite))
    return sorted({str(q) for q in found.get("question_id", ())} & set(plan.ids))

  have = set(multihost.from_process_zero(read))
  done = np.array([all(plan.ids[i] in have for i in rows) for rows in plan.batches])
  need = sorted({i for g in np.flatnonzero(done) for i in plan.batches[g]})
  rows = {}
  if need:  # the done batches' rows, first found copy of each question
    if multihost.is_writer():
      qids = [str(q) for q in found["question_id"]]
      first = {}
      for j, q in enumerate(qids):
        first.setdefault(q, j)
      take = np.asarray([first[plan.ids[i]] for i in need], np.int64)
      rows = {k: v[take] for k, v in found.items() if k != "question_id"}
    rows = multihost.broadcast_arrays(rows)
    rows["question_id"] = np.asarray([plan.ids[i] for i in need], dtype=str)
  return shard_dir, done, rows


def _run_prefix(graphdef, state, plan: _Plan, spec: ExtractSpec) -> dict:
  """The shared prefix's K/V and state sums: run once, every batch continues them."""
  depth = forward.needed_layers(plan.pooled_layers, spec.token_layer, spec.hybrid, plan.num_layers)[-1]
  kv, sums = forward.prefix_runner(graphdef, plan.pooled_layers, depth)(
      state, jnp.asarray([plan.prefix_ids], jnp.int32))
  return {"prefix_kv": kv, "prefix_sums": sums}


def _run_batch(graphdef, state, plan: _Plan, spec: ExtractSpec, g: int, prefix_args: dict, *,
               mesh: Mesh | None, pc: int, shard_dir: str | None) -> tuple[dict, float]:
  """Global batch `g` through the compiled pass: all its rows (on every process) and seconds.

  Process p's devices get rows [p * bg, (p + 1) * bg) of the global batch (its rows of the
  plan, then dummies); the outputs are gathered whole, so every process holds every row.
  """
  bg = plan.rows_of[g]
  # Shapes come from the whole global batch so every process compiles the same program.
  t, r_pad = forward.batch_shapes(plan.prompts, plan.refs, plan.batches[g], spec.length_bucket)
  blocks = [forward.assemble(plan.prompts, plan.refs, plan.mine(g, p), bg, t, plan.pad_id) for p in range(pc)]
  batch = {k: np.concatenate([b[k] for b in blocks], axis=0) for k in blocks[0]}
  out_sharding = None if mesh is None else sharding_lib.batch_sharding(mesh, 1, batch_size=bg * pc)
  fn = forward.compiled_pass(graphdef, plan.pooled_layers, spec.pooling if spec.layers else (),
                             spec.token_layer, spec.token_cap, spec.hybrid, r_pad, spec.nll_chunk,
                             plan.num_layers, out_sharding, plan.prefix_len)
  t1 = time.perf_counter()
  out = fn(state, **forward.to_device(batch, mesh, bg * pc), **prefix_args)
  whole = {k: multihost.gather(v) for k, v in out.items()}
  seconds = time.perf_counter() - t1
  keep = np.concatenate([p * bg + np.arange(len(plan.mine(g, p))) for p in range(pc)])
  arrays = {k: (v[keep].astype(spec.dtype) if k in _FLOAT_KEYS else v[keep]) for k, v in whole.items()}
  arrays["question_id"] = np.asarray([plan.ids[i] for i in plan.batches[g]], dtype=str)
  if shard_dir is not None and multihost.is_writer():
    write_npz(shard_path(shard_dir, pc, g), arrays)
  return arrays, seconds


def _persist(plan: _Plan, results: list, done_rows: dict, t0: float, t_fwd: float, *, out_dir: str | None,
             shard_dir: str | None) -> FeatureSet:
  """Every row in question order (on every process); with `out_dir` process 0 also writes the store:
  one rows file, then the sidecar, which marks it complete."""
  parts = [r for r in results if r is not None and len(r["question_id"])]
  if done_rows:
    parts.append(done_rows)
  merged = _merge_rows(parts, plan.ids)
  timing = {"total_s": time.perf_counter() - t0, "forward_s": t_fwd, "batches": len(plan.batches)}
  meta = dict(plan.meta, timing=timing, code_version=extraction_code_version(),
              created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
  if out_dir is not None and multihost.is_writer():
    write_npz(os.path.join(out_dir, STORE_FILE), merged)
    io.write_json(os.path.join(out_dir, SIDECAR), meta)
    if epath.Path(shard_dir).exists():
      epath.Path(shard_dir).rmtree()
  return FeatureSet(meta, {k: v for k, v in merged.items() if k != "question_id"})


def extract(model, tokenizer, questions: Sequence[Any], spec: ExtractSpec, *, mesh: Mesh | None = None,
            checkpoint: str = "", checkpoint_step: int = -1, task: str = "", prompt_format_hash: str = "",
            out_dir: str | os.PathLike | None = None, overwrite: bool = False,
            on_batch: Callable[[int, int], None] | None = None) -> FeatureSet:
  """Features of `questions` (objects with .id, .prompt, .reference) from one prefill pass each.

  With `out_dir` (a local or `gs://` path), rows are persisted as a store (see module docstring)
  and a killed run resumes from its finished batches; an existing complete store with the same
  fingerprint is returned as is. In multi-process runs every process calls this with the same questions and arguments;
  each places its rows of every batch on its own devices, every process gets all rows back,
  and process 0 alone reads and writes the store. `on_batch(i, n)` is called after each batch.
  """
  pc = jax.process_count()
  t0 = time.perf_counter()
  plan = _plan(model, tokenizer, questions, spec, pc, checkpoint=checkpoint, checkpoint_step=checkpoint_step,
               task=task, prompt_format_hash=prompt_format_hash)
  if out_dir is not None:
    out_dir = os.fspath(out_dir)
    finished = multihost.from_process_zero(
        lambda: finished_meta(out_dir, plan.meta, overwrite) is not None)
    if finished:
      return _load_finished(out_dir)
  shard_dir, done, done_rows = _resume(out_dir, plan, overwrite)
  graphdef, state = nnx.split(model)
  prefix_args = {} if done.all() or not plan.prefix_len else _run_prefix(graphdef, state, plan, spec)
  n_batches = len(plan.batches)
  results, t_fwd = [None] * n_batches, 0.0  # None: a done batch, its rows are in done_rows
  for g in range(n_batches):
    if done[g]:
      continue
    results[g], seconds = _run_batch(graphdef, state, plan, spec, g, prefix_args, mesh=mesh, pc=pc,
                                     shard_dir=shard_dir)
    t_fwd += seconds
    if on_batch is not None:
      on_batch(g, n_batches)
  return _persist(plan, results, done_rows, t0, t_fwd, out_dir=out_dir, shard_dir=shard_dir)


@dataclasses.dataclass(frozen=True)
class _TaskQuestion:
  id: str
  prompt: str
  reference: str | None


def extract_tasks(model, tokenizer, questions: Mapping[str, Sequence[Any]], spec: ExtractSpec, *,
                  mesh: Mesh | None = None, checkpoint: str = "", checkpoint_step: int = -1,
                  prompt_format_hashes: Mapping[str, str] | None = None,
                  on_batch: Callable[[int, int], None] | None = None) -> list[FeatureSet]:
  """In-memory features of several tasks' questions ({task: questions}) from one extraction
  (`on_batch(i, n)` after each of its n batches, as in `extract`).

  The union is sorted by length and batched together, so short tasks fill batches instead of
  each task padding its own: fewer, fuller forward passes (the monitor and latency path use it).
  Returns one FeatureSet per task, in the mapping's order, as `extract` would for that task (all
  rows, on every process of a multi-process run).
  """
  tagged = [_TaskQuestion(f"{task}\x00{q.id}", q.prompt, getattr(q, "reference", None))
            for task, qs in questions.items() for q in qs]
  if not tagged:
    raise FeatureError("no questions to extract")
  union = extract(model, tokenizer, tagged, spec, mesh=mesh, checkpoint=checkpoint,
                  checkpoint_step=checkpoint_step, task="+".join(questions), on_batch=on_batch)
  owner = np.asarray([q.split("\x00", 1)[0] for q in union.question_ids], dtype=object)
  out = []
  for task in questions:
    rows = np.flatnonzero(owner == task)
    meta = dict(union.meta, task=task, prompt_format_hash=(prompt_format_hashes or {}).get(task, ""),
                question_ids=[union.question_ids[i].split("\x00", 1)[1] for i in rows])
    out.append(FeatureSet(meta, {k: v[rows] for k, v in union.arrays.items()}))
  return out


def _merge_rows(parts: Sequence[Mapping[str, np.ndarray]], all_ids: Sequence[str]):
  """Concatenates batch outputs (and resumed rows) and puts them into question order."""
  merged = {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}
  got = [str(q) for q in merged["question_id"]]
  if sorted(got) != sorted(all_ids):
    raise FeatureError("internal: extracted and resumed rows do not cover the questions")
  rank = {q: i for i, q in enumerate(all_ids)}
  order = np.argsort([rank[q] for q in got], kind="stable")
  return {k: v[order] for k, v in merged.items()}


def spec_from_config(c: Mapping[str, Any], **overrides) -> ExtractSpec:
  """An ExtractSpec from a config's `extract` section (a ConfigDict or dict)."""
  d = dict(c)
  d.update(overrides)
  names = {f.name for f in dataclasses.fields(ExtractSpec)}
  unknown = sorted(set(d) - names)
  if unknown:
    raise FeatureError(f"extract config: unknown field(s) {unknown}")
  return ExtractSpec(**d)
