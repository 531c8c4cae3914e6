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

Store format (one directory per (checkpoint, task), version `FORMAT`; readers and writers
live in `probing.feature_store`, re-exported here).
  features.json                   sidecar, written last (its presence marks a complete store):
                                  format, checkpoint, checkpoint_step, task, question_ids (store
                                  order), layers, pooling, token_layer, token_cap, hybrid,
                                  reference_eos, dtype, hidden_size, tokenizer_hash, shared_prefix_tokens,
                                  prompt_format_hash, code_version, num_processes, files,
                                  truncated_prompts, truncated_references, timing, created.
  features.pXXXXX-of-YYYYY.npz    the rows process XXXXX extracted: `question_id` (str), `last`,
                                  `mean`, `tokens`, `tokens_mask`, `prompt_len`, and in hybrid
                                  mode `nll_sum`, `nll_mean`, `ref_len`. Float arrays are in
                                  `dtype` (float32 or float16). `load_features` merges all
                                  process files back into sidecar order.
  shards/                         while running: `spec.json` (run fingerprint) and one
                                  `pXXXXX-bYYYYYY.npz` per finished batch. A killed run resumes
                                  from them; they are merged and removed at the end.
Every file is written to a temporary name and `os.replace`d, so readers never see a partial file.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from models import sharding as sharding_lib
from models.olmo3 import SharedPrefix
from probing.feature_store import (FORMAT, POOLINGS, SIDECAR, FeatureError, FeatureSet, _atomic_json,  # noqa: F401
                                   _atomic_npz, _process_file, _read_npz, _sha, code_version,
                                   find_stores, load_feature_sets, load_features, store_dir,
                                   tokenizer_hash)

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


@functools.lru_cache(maxsize=8)
def _prefix_runner(graphdef, layers: tuple[int, ...], depth: int):
  """jit: (state, prefix ids [1, P]) -> (per-block K/V, [L, D] sums of the prefix's states)."""

  def run(state, ids):
    pre = nnx.merge(graphdef, state).prefix_cache(ids, layers, depth)
    sums = jnp.stack([pre.hidden_states[i][0].astype(jnp.float32).sum(axis=0) for i in layers]) if layers \
        else jnp.zeros((0,), jnp.float32)
    return pre.kv, sums

  return jax.jit(run)


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def _shapes(prompts, refs, rows, spec: ExtractSpec) -> tuple[int, int]:
  """Padded length T and reference window R of a batch (R = 0 without references)."""
  lr = [len(refs[i]) for i in rows] if refs is not None else [0]
  r_pad = _round_up(max(lr), 8) if refs is not None else 0
  longest = max(len(prompts[i]) + (len(refs[i]) if refs is not None else 0) for i in rows)
  return _round_up(max(longest, r_pad + 1), spec.length_bucket), r_pad


def _assemble(prompts, refs, rows, batch_size: int, t: int, pad_id: int) -> dict[str, np.ndarray]:
  """Left-padded [B, t] arrays of prompt (+ reference) for `rows`; missing rows are dummies."""
  ids = np.full((batch_size, t), pad_id, np.int32)
  valid = np.zeros((batch_size, t), bool)
  prompt_mask = np.zeros((batch_size, t), bool)
  last = np.full((batch_size,), t - 1, np.int32)
  valid[len(rows):, -1] = prompt_mask[len(rows):, -1] = True  # dummy rows: one pad token
  for b, i in enumerate(rows):
    ref = refs[i] if refs is not None else []
    seq = prompts[i] + ref
    ids[b, t - len(seq):] = seq
    valid[b, t - len(seq):] = True
    prompt_mask[b, t - len(seq):t - len(ref)] = True
    last[b] = t - len(ref) - 1
  return {"ids": ids, "valid": valid, "prompt_mask": prompt_mask, "last": last}


# ----------------------------------------------------------------------------- the jitted pass


def _depth(layers, token_layer, hybrid: bool, num_layers: int) -> tuple[int, ...]:
  """The hidden states one pass needs (sorted)."""
  want = set(layers) | ({token_layer} if token_layer is not None else set())
  return tuple(sorted(want | ({num_layers} if hybrid else set())))


@functools.lru_cache(maxsize=32)
def _compiled(graphdef, layers: tuple[int, ...], pooling: tuple[str, ...], token_layer, token_cap: int,
              hybrid: bool, r_pad: int, nll_chunk: int, num_layers: int, out_sharding, prefix_len: int = 0):
  """The jitted prefill + pooling for one static configuration (cached across calls).

  With `prefix_len` > 0 the rows continue a shared prefix (`prefix_kv`, and `prefix_sums` of its
  states at `layers` for mean pooling): the ids hold only what follows it.
  """

  def forward(state, ids, valid, prompt_mask, last, prefix_kv=None, prefix_sums=None):
    model = nnx.merge(graphdef, state)
    want = _depth(layers, token_layer, hybrid, num_layers)
    prefix = None if not prefix_len else SharedPrefix(prefix_len, prefix_kv, {})
    hs = model(ids, valid, layers=want, return_logits=False, prefix=prefix).hidden_states
    out = {}
    pm = prompt_mask.astype(jnp.float32)
    count = jnp.maximum(pm.sum(axis=1) + prefix_len, 1.0)
    if "last" in pooling:
      out["last"] = jnp.stack([jnp.take_along_axis(hs[i], last[:, None, None], axis=1)[:, 0]
                               .astype(jnp.float32) for i in layers], axis=1)
    if "mean" in pooling:
      out["mean"] = jnp.stack([(jnp.einsum("btd,bt->bd", hs[i], pm.astype(hs[i].dtype),
                                           preferred_element_type=jnp.float32)
                                + (prefix_sums[j][None] if prefix_len else 0.0)) / count[:, None]
                               for j, i in enumerate(layers)], axis=1)
    if token_layer is not None:
      idx = last[:, None] + jnp.arange(-(token_cap - 1), 1)[None, :]
      ok = idx >= 0
      idx = jnp.maximum(idx, 0)
      tmask = ok & jnp.take_along_axis(prompt_mask, idx, axis=1)
      tok = jnp.take_along_axis(hs[token_layer], idx[:, :, None], axis=1).astype(jnp.float32)
      out["tokens"], out["tokens_mask"] = jnp.where(tmask[:, :, None], tok, 0.0), tmask
    out["prompt_len"] = prompt_mask.sum(axis=1).astype(jnp.int32) + prefix_len
    if hybrid:
      t = ids.shape[1]
      h = hs[num_layers][:, t - r_pad - 1:t - 1]
      target = ids[:, t - r_pad:]
      rmask = (valid & ~prompt_mask)[:, t - r_pad:].astype(jnp.float32)
      total = jnp.zeros(ids.shape[:1], jnp.float32)
      for a in range(0, r_pad, nll_chunk):
        logits = model.logits_from_hidden(h[:, a:a + nll_chunk]).astype(jnp.float32)
        gold = jnp.take_along_axis(logits, target[:, a:a + nll_chunk, None], axis=-1)[..., 0]
        tok_nll = jax.nn.logsumexp(logits, axis=-1) - gold
        total = total + (tok_nll * rmask[:, a:a + nll_chunk]).sum(axis=1)
      n_ref = rmask.sum(axis=1)
      out["nll_sum"], out["nll_mean"] = total, total / jnp.maximum(n_ref, 1.0)
      out["ref_len"] = n_ref.astype(jnp.int32)
    if out_sharding is not None:
      out = {k: jax.lax.with_sharding_constraint(
          v, NamedSharding(out_sharding.mesh, jax.sharding.PartitionSpec(
              *(tuple(out_sharding.spec)[:1] + (None,) * (v.ndim - 1))))) for k, v in out.items()}
    return out

  return jax.jit(forward)


def _local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in order (replicas deduplicated)."""
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(x))
  shards: dict[int, np.ndarray] = {}
  for s in x.addressable_shards:
    shards.setdefault(s.index[0].start or 0, np.asarray(s.data))
  return np.concatenate([shards[k] for k in sorted(shards)], axis=0)


def _to_device(batch: Mapping[str, np.ndarray], mesh: Mesh | None, global_batch: int):
  if mesh is None:
    return {k: jnp.asarray(v) for k, v in batch.items()}
  out = {}
  for k, v in batch.items():
    s = sharding_lib.batch_sharding(mesh, v.ndim, batch_size=global_batch)
    if jax.process_count() > 1:
      out[k] = jax.make_array_from_process_local_data(s, v, (global_batch,) + v.shape[1:])
    else:
      out[k] = jax.device_put(v, s)
  return out


# ----------------------------------------------------------------------------- extraction


def extract(model, tokenizer, questions: Sequence[Any], spec: ExtractSpec, *, mesh: Mesh | None = None,
            checkpoint: str = "", checkpoint_step: int = -1, task: str = "",
            prompt_format_hash: str = "", out_dir: str | os.PathLike | None = None,
            overwrite: bool = False, process_index: int | None = None,
            process_count: int | None = None,
            on_batch: Callable[[int, int], None] | None = None) -> FeatureSet:
  """Features of `questions` (objects with .id, .prompt, .reference) from one prefill pass each.

  With `out_dir`, rows are persisted as a store (see module docstring) and a killed run resumes
  from its finished batches; an existing complete store with the same fingerprint is returned
  as is. In multi-host runs every process calls this with the same questions; each extracts
  and writes its share. `on_batch(i, n)` is called after each batch.
  """
  pi = jax.process_index() if process_index is None else int(process_index)
  pc = jax.process_count() if process_count is None else int(process_count)
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
  t0 = time.perf_counter()
  prompts, refs, cut_p, cut_r = _encode(tokenizer, questions, spec)
  prefix_len = shared_prefix_length(prompts, spec)
  prefix_ids = prompts[0][:prefix_len]
  prompts = [p[prefix_len:] for p in prompts]
  meta = {"format": FORMAT, "checkpoint": checkpoint, "checkpoint_step": int(checkpoint_step),
          "task": task, "question_ids": ids, "layers": list(spec.layers), "pooling": list(spec.pooling),
          "token_layer": spec.token_layer, "token_cap": spec.token_cap, "hybrid": spec.hybrid,
          "reference_eos": spec.reference_eos, "dtype": spec.dtype,
          "hidden_size": model.config.hidden_size, "tokenizer_hash": tokenizer_hash(tokenizer),
          "prompt_format_hash": prompt_format_hash, "spec": spec.to_dict(),
          "num_processes": pc, "files": [_process_file(i, pc) for i in range(pc)],
          "truncated_prompts": cut_p, "truncated_references": cut_r, "shared_prefix_tokens": prefix_len}
  fingerprint = _sha(json.dumps({k: meta[k] for k in ("checkpoint", "checkpoint_step", "task",
                                                      "question_ids", "spec", "tokenizer_hash",
                                                      "prompt_format_hash", "num_processes")}))
  meta["fingerprint"] = fingerprint
  shard_dir = None
  if out_dir is not None:
    out_dir = os.fspath(out_dir)
    side = os.path.join(out_dir, SIDECAR)
    if os.path.exists(side) and not overwrite:
      with open(side) as f:
        old = json.load(f).get("fingerprint")
      if old == fingerprint:
        return load_features(out_dir)
      raise FeatureError(f"{out_dir}: holds a different extraction (fingerprint {old} != "
                         f"{fingerprint}); pass overwrite=True or use another directory")
    shard_dir = os.path.join(out_dir, "shards")
    if overwrite and pi == 0:
      shutil.rmtree(shard_dir, ignore_errors=True)
    os.makedirs(shard_dir, exist_ok=True)
    spec_file = os.path.join(shard_dir, "spec.json")
    if os.path.exists(spec_file):
      with open(spec_file) as f:
        old = json.load(f).get("fingerprint")
      if old != fingerprint:
        raise FeatureError(f"{shard_dir}: partial shards of a different extraction (fingerprint "
                           f"{old} != {fingerprint}); delete them or pass overwrite=True")
    elif pi == 0:
      _atomic_json(spec_file, {"fingerprint": fingerprint})

  # Batches of similar length (sorted by total tokens); global batch g holds every process's
  # rows of that batch, so all processes agree on its padded shapes without communicating.
  lengths = [len(p) + (len(refs[i]) if refs else 0) for i, p in enumerate(prompts)]
  order = sorted(range(len(ids)), key=lambda i: (lengths[i], i))
  b, gb = spec.batch_size, spec.batch_size * pc
  n_batches = -(-len(order) // gb)
  plan = [order[g * gb:(g + 1) * gb] for g in range(n_batches)]
  # Rows per process of each batch: the last, partial batch is cut to a multiple of 8 rather than
  # padded to `batch_size` with dummy rows (a short task is often all one partial batch).
  rows_of = [min(b, _round_up(-(-len(rows) // pc), 8)) for rows in plan]
  shard_name = lambda g: os.path.join(shard_dir, f"p{pi:05d}-b{g:06d}.npz")  # noqa: E731
  done = np.array([shard_dir is not None and os.path.exists(shard_name(g)) for g in range(n_batches)])
  if jax.process_count() > 1:  # skip a batch only if every process finished it (jit is collective)
    from jax.experimental import multihost_utils
    done = multihost_utils.process_allgather(done).all(axis=0)
  graphdef, state = nnx.split(model)
  pooled_layers = spec.layers if spec.pooling else ()
  prefix_args = {}
  if prefix_len and not done.all():
    depth = _depth(pooled_layers, spec.token_layer, spec.hybrid, num_layers)[-1]
    kv, sums = _prefix_runner(graphdef, pooled_layers, depth)(state, jnp.asarray([prefix_ids], jnp.int32))
    prefix_args = {"prefix_kv": kv, "prefix_sums": sums}
  results: dict[int, dict[str, np.ndarray]] = {}
  t_fwd = 0.0
  for g, rows_all in enumerate(plan):
    bg = rows_of[g]
    mine = rows_all[pi * bg:(pi + 1) * bg]
    if done[g]:
      results[g] = None
      continue
    # Shapes come from the whole global batch so every process compiles the same program.
    t, r_pad = _shapes(prompts, refs, rows_all, spec)
    batch = _assemble(prompts, refs, mine, bg, t, pad_id)
    out_sharding = None if mesh is None else sharding_lib.batch_sharding(mesh, 1, batch_size=bg * pc)
    fn = _compiled(graphdef, pooled_layers, spec.pooling if spec.layers else (),
                   spec.token_layer, spec.token_cap, spec.hybrid, r_pad, spec.nll_chunk, num_layers,
                   out_sharding, prefix_len)
    t1 = time.perf_counter()
    out = fn(state, **_to_device(batch, mesh, bg * pc), **prefix_args)
    arrays = {k: _local_rows(v)[:len(mine)] for k, v in out.items()}
    t_fwd += time.perf_counter() - t1
    arrays = {k: (v.astype(spec.dtype) if k in _FLOAT_KEYS else v) for k, v in arrays.items()}
    arrays["question_id"] = np.asarray([ids[i] for i in mine], dtype=str)
    if shard_dir is not None:
      _atomic_npz(shard_name(g), arrays)
    results[g] = arrays
    if on_batch is not None:
      on_batch(g, n_batches)
  for g in results:
    if results[g] is None:
      results[g] = _read_npz(shard_name(g))
  parts = [results[g] for g in range(n_batches) if len(results[g]["question_id"])]
  merged = _merge_rows(parts, [ids[i] for g in range(n_batches) for i in plan[g][pi * rows_of[g]:(pi + 1) * rows_of[g]]],
                       ids)
  meta["timing"] = {"total_s": time.perf_counter() - t0, "forward_s": t_fwd, "batches": n_batches}
  meta["code_version"] = code_version()
  meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
  local = FeatureSet(dict(meta, question_ids=[str(q) for q in merged["question_id"]]),
                     {k: v for k, v in merged.items() if k != "question_id"})
  if out_dir is None:
    return local
  _atomic_npz(os.path.join(out_dir, _process_file(pi, pc)), merged)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"features:{fingerprint}")
  if pi == 0:
    _atomic_json(os.path.join(out_dir, SIDECAR), meta)
    shutil.rmtree(shard_dir, ignore_errors=True)
  if pc > 1 and jax.process_count() == 1:  # simulated processes: the other shares may be missing
    return local
  return load_features(out_dir)


@dataclasses.dataclass(frozen=True)
class _TaskQuestion:
  id: str
  prompt: str
  reference: str | None


def extract_tasks(model, tokenizer, questions: Mapping[str, Sequence[Any]], spec: ExtractSpec, *,
                  mesh: Mesh | None = None, checkpoint: str = "", checkpoint_step: int = -1,
                  prompt_format_hashes: Mapping[str, str] | None = None) -> list[FeatureSet]:
  """In-memory features of several tasks' questions ({task: questions}) from one extraction.

  The union is sorted by length and batched together, so short tasks fill batches instead of
  each task padding its own: fewer, fuller forward passes (the monitor and latency path use it).
  Returns one FeatureSet per task, in the mapping's order, as `extract` would for that task (in a
  multi-process run, this process's rows of it).
  """
  tagged = [_TaskQuestion(f"{task}\x00{q.id}", q.prompt, getattr(q, "reference", None))
            for task, qs in questions.items() for q in qs]
  if not tagged:
    raise FeatureError("no questions to extract")
  union = extract(model, tokenizer, tagged, spec, mesh=mesh, checkpoint=checkpoint,
                  checkpoint_step=checkpoint_step, task="+".join(questions))
  owner = np.asarray([q.split("\x00", 1)[0] for q in union.question_ids], dtype=object)
  out = []
  for task in questions:
    rows = np.flatnonzero(owner == task)
    meta = dict(union.meta, task=task, prompt_format_hash=(prompt_format_hashes or {}).get(task, ""),
                question_ids=[union.question_ids[i].split("\x00", 1)[1] for i in rows])
    out.append(FeatureSet(meta, {k: v[rows] for k, v in union.arrays.items()}))
  return out


def _merge_rows(parts: Sequence[Mapping[str, np.ndarray]], mine: Sequence[str], all_ids: Sequence[str]):
  """Concatenates batch outputs and puts this process's rows into question order."""
  merged = {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}
  got = [str(q) for q in merged["question_id"]]
  if sorted(got) != sorted(mine):
    raise FeatureError("internal: resumed shards do not cover this process's questions")
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
