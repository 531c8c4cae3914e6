"""The jitted prefill + pooling of feature extraction, and getting its batches onto devices.

One concern, kept apart from `probing.features.extraction` (tokens, batch plan, store, resume): the
compiled programs (cached per static configuration, so repeated extractions do not recompile),
and the left-padded batch arrays they take, placed on the mesh.
"""
from __future__ import annotations

import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from models import multihost
from models import sharding as sharding_lib
from models.olmo3 import SharedPrefix


def round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def batch_shapes(prompts, refs, rows, length_bucket: int) -> tuple[int, int]:
  """Padded length T and reference window R of a batch (R = 0 without references)."""
  lr = [len(refs[i]) for i in rows] if refs is not None else [0]
  r_pad = round_up(max(lr), 8) if refs is not None else 0
  longest = max(len(prompts[i]) + (len(refs[i]) if refs is not None else 0) for i in rows)
  return round_up(max(longest, r_pad + 1), length_bucket), r_pad


def assemble(prompts, refs, rows, batch_size: int, t: int, pad_id: int) -> dict[str, np.ndarray]:
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


def needed_layers(layers, token_layer, hybrid: bool, num_layers: int) -> tuple[int, ...]:
  """The hidden states one pass needs (sorted)."""
  want = set(layers) | ({token_layer} if token_layer is not None else set())
  return tuple(sorted(want | ({num_layers} if hybrid else set())))


@functools.lru_cache(maxsize=8)
def prefix_runner(graphdef, layers: tuple[int, ...], depth: int):
  """jit: (state, prefix ids [1, P]) -> (per-block K/V, [L, D] sums of the prefix's states)."""

  def run(state, ids):
    pre = nnx.merge(graphdef, state).prefix_cache(ids, layers, depth)
    sums = jnp.stack([pre.hidden_states[i][0].astype(jnp.float32).sum(axis=0) for i in layers]) if layers \
        else jnp.zeros((0,), jnp.float32)
    return pre.kv, sums

  return jax.jit(run)


@functools.lru_cache(maxsize=32)
def compiled_pass(graphdef, layers: tuple[int, ...], pooling: tuple[str, ...], token_layer, token_cap: int,
                  hybrid: bool, r_pad: int, nll_chunk: int, num_layers: int, out_sharding, prefix_len: int = 0):
  """The jitted prefill + pooling for one static configuration (cached across calls).

  With `prefix_len` > 0 the rows continue a shared prefix (`prefix_kv`, and `prefix_sums` of its
  states at `layers` for mean pooling): the ids hold only what follows it.
  """

  def forward(state, ids, valid, prompt_mask, last, prefix_kv=None, prefix_sums=None):
    model = nnx.merge(graphdef, state)
    want = needed_layers(layers, token_layer, hybrid, num_layers)
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


def to_device(batch: Mapping[str, np.ndarray], mesh: Mesh | None, global_batch: int):
  """The (whole, global) batch's arrays sharded over `mesh`: each process places only the rows
  of its own devices (`models.multihost.put_global`)."""
  if mesh is None:
    return {k: jnp.asarray(v) for k, v in batch.items()}
  return {k: multihost.put_global(v, sharding_lib.batch_sharding(mesh, v.ndim, batch_size=global_batch))
          for k, v in batch.items()}
