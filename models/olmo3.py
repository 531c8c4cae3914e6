"""OLMo3 decoder in Flax NNX, numerically matching `transformers.Olmo3ForCausalLM`.

Architecture (see the HF `modeling_olmo3.py` and the OLMo-core 7B config):
  * "reordered norm" blocks: h = x + RMSNorm(attn(x)); out = h + RMSNorm(mlp(h)); no input norm;
  * QK-norm over the *full* projection width (all heads jointly), before the head split and RoPE;
  * half-split (NeoX) RoPE; YaRN (with its attention factor on cos/sin) only on full-attention layers;
  * sliding-window layers: query i sees keys j with i - W < j <= i;
  * SwiGLU MLP, untied LM head, RMSNorm and softmax in fp32.

`Olmo3.__call__` returns the raw residual stream after every block (HF's last hidden state is
post-norm; ours is not). Every param carries `logical_axes` metadata, which `models.sharding`
maps to mesh axes through its one rules table.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.config import (FULL, PRESETS, SLIDING, Olmo3Config, RopeConfig, as_dtype, default_layer_types,
                           dtype_name, olmo3_7b, tiny)

# The configuration lives in models.config; these names stay importable from here (the model's
# public contract names `models.olmo3.Olmo3Config`).
__all__ = ["Attention", "Block", "FULL", "MLP", "Olmo3", "Olmo3Config", "Olmo3Output", "PRESETS", "RopeConfig",
           "SLIDING", "SharedPrefix", "abstract_model", "apply_rope", "as_dtype", "blocked_self_attention",
           "default_layer_types", "default_positions", "dtype_name", "init_model", "olmo3_7b", "rms_norm",
           "rope_cos_sin", "tiny"]


# ----------------------------------------------------------------------------- layers


def rms_norm(x: jax.Array, weight: jax.Array, eps: float, axes=(-1,)) -> jax.Array:
  """RMSNorm in fp32 over `axes`; weight applied as-is (not 1 + w), cast back to x's dtype."""
  dtype = x.dtype
  x32 = x.astype(jnp.float32)
  var = jnp.mean(jnp.square(x32), axis=axes, keepdims=True)
  return (weight.astype(jnp.float32) * (x32 * jax.lax.rsqrt(var + eps))).astype(dtype)


def rope_cos_sin(positions: jax.Array, inv_freq: np.ndarray, scale: float):
  """cos, sin [B, T, head_dim] in fp32 for the half-split (rotate_half) convention."""
  freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[None, None, :]
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb) * scale, jnp.sin(emb) * scale


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """x [B, T, N, hd]; cos/sin [B, T, hd]. Computed in x's dtype, as HF does."""
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
  return x * cos + rotated * sin


def _param(rngs: nnx.Rngs, shape, axes, dtype, std: float | None):
  value = (jnp.ones(shape, dtype) if std is None
           else (std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype))
  return nnx.Param(value, logical_axes=tuple(axes))


class Attention(nnx.Module):
  """Attention with full-width QK-norm. Kernels: q [embed, heads, head_dim], o [heads, head_dim, embed]."""

  def __init__(self, config: Olmo3Config, layer: int, *, rngs: nnx.Rngs):
    c = config
    pd, std = as_dtype(c.param_dtype), c.initializer_range
    d, h, kv, hd = c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim
    self.q_kernel = _param(rngs, (d, h, hd), ("embed", "heads", "head_dim"), pd, std)
    self.k_kernel = _param(rngs, (d, kv, hd), ("embed", "kv_heads", "head_dim"), pd, std)
    self.v_kernel = _param(rngs, (d, kv, hd), ("embed", "kv_heads", "head_dim"), pd, std)
    self.o_kernel = _param(rngs, (h, hd, d), ("heads", "head_dim", "embed_out"), pd, std)
    self.q_norm = _param(rngs, (h, hd), ("heads", "head_dim"), pd, None)
    self.k_norm = _param(rngs, (kv, hd), ("kv_heads", "head_dim"), pd, None)
    self.eps = c.rms_norm_eps
    self.dtype = as_dtype(c.dtype)
    self.window = c.window_for(layer)
    inv_freq, scale = c.rope_for(layer).inv_freq_and_scale(hd, c.max_position_embeddings)
    self.inv_freq = tuple(float(v) for v in inv_freq)  # static: a tuple, not an array attribute
    self.rope_scale = scale
    self.num_groups = h // kv

  def project(self, x: jax.Array, positions: jax.Array):
    """x [B, T, D] -> q [B, T, H, hd], k, v [B, T, KV, hd] with QK-norm and RoPE applied."""
    dt = self.dtype
    x = x.astype(dt)
    q = jnp.einsum("btd,dnh->btnh", x, self.q_kernel[...].astype(dt))
    k = jnp.einsum("btd,dnh->btnh", x, self.k_kernel[...].astype(dt))
    v = jnp.einsum("btd,dnh->btnh", x, self.v_kernel[...].astype(dt))
    q = rms_norm(q, self.q_norm[...], self.eps, axes=(-2, -1))  # over all heads jointly
    k = rms_norm(k, self.k_norm[...], self.eps, axes=(-2, -1))
    cos, sin = rope_cos_sin(positions, np.asarray(self.inv_freq, np.float32), self.rope_scale)
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

  def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array) -> jax.Array:
    """q [B, Tq, H, hd], k/v [B, Tk, KV, hd], allowed [B, Tq, Tk] bool -> [B, Tq, H, hd].

    Laid out head-major ([B, KV, G*Tq, hd] against [B, KV, Tk, hd]) with the mask as an additive
    bias and the softmax normalised after the PV product: that is the form XLA CPU fuses into one
    kernel (scores, softmax, PV) without transposing the [.., Tq, Tk] score matrix, which
    made the plain einsum/where/softmax form about 2x slower than torch's SDPA on CPU.
    """
    b, tq, h, hd = q.shape
    kvh, g = k.shape[2], self.num_groups
    qt = (q * jnp.asarray(hd ** -0.5, q.dtype)).reshape(b, tq, kvh, g, hd)
    qt = jnp.transpose(qt, (0, 2, 3, 1, 4)).reshape(b, kvh, g * tq, hd)
    kt, vt = jnp.transpose(k, (0, 2, 1, 3)), jnp.transpose(v, (0, 2, 1, 3))
    bias = jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)
    scores = jnp.einsum("bkqh,bksh->bkqs", qt, kt, preferred_element_type=jnp.float32)
    scores = scores.reshape(b, kvh, g, tq, -1) + bias[:, None, None]
    weights = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
    total = jnp.sum(weights, axis=-1, keepdims=True)
    out = jnp.einsum("bkgqs,bksh->bkgqh", weights.astype(v.dtype), vt,
                     preferred_element_type=jnp.float32) / total
    return jnp.transpose(out, (0, 3, 1, 2, 4)).astype(q.dtype).reshape(b, tq, h, hd)

  def output(self, attn: jax.Array) -> jax.Array:
    return jnp.einsum("btnh,nhd->btd", attn, self.o_kernel[...].astype(self.dtype))

  def __call__(self, x, positions, key_valid, segment_ids, query_block: int = 128, prefix=None):
    q, k, v = self.project(x, positions)
    return self.output(blocked_self_attention(self.attend, q, k, v, key_valid, segment_ids,
                                              self.window, query_block, prefix, positions))


def blocked_self_attention(attend, q, k, v, key_valid, segment_ids, window, query_block,
                           prefix=None, positions=None):
  """Causal (optionally sliding) self-attention over query blocks.

  Each block of queries only looks at the keys it can see: [0, end) for full layers and
  [start - window + 1, end) for sliding ones, so causal and banded attention skip the work a
  dense T x T score matrix would waste. Shapes are static, so this unrolls under jit.
  `prefix` = (k, v, length): keys/values [1, Pk, KV, hd] of the last Pk positions of a prefix of
  `length` tokens that every row continues (`SharedPrefix`); `positions` are then absolute.
  """
  t, b = q.shape[1], q.shape[0]
  idx = jnp.arange(t)
  if prefix is not None:
    if segment_ids is not None:
      raise ValueError("a shared prefix and packed segments cannot be combined")
    pk, pv, p_len = prefix
    pk, pv = (jnp.broadcast_to(a, (b,) + a.shape[1:]).astype(k.dtype) for a in (pk, pv))
    p_pos = jnp.arange(p_len - pk.shape[1], p_len)
  outs = []
  for qs in range(0, t, query_block):
    qe = min(qs + query_block, t)
    ks = 0 if window is None else max(0, qs - window + 1)
    qi, ki = idx[qs:qe, None], idx[None, ks:qe]
    allowed = ki <= qi
    if window is not None:
      allowed = allowed & (qi - ki < window)
    allowed = allowed[None] & key_valid[:, None, ks:qe]
    if segment_ids is not None:
      allowed = allowed & (segment_ids[:, qs:qe, None] == segment_ids[:, None, ks:qe])
    keys, values = k[:, ks:qe], v[:, ks:qe]
    if prefix is not None:
      seen = jnp.ones((b, qe - qs, pk.shape[1]), bool)
      if window is not None:
        seen = positions[:, qs:qe, None] - p_pos[None, None, :] < window
      allowed = jnp.concatenate([seen, allowed], axis=-1)
      keys, values = jnp.concatenate([pk, keys], axis=1), jnp.concatenate([pv, values], axis=1)
    outs.append(attend(q[:, qs:qe], keys, values, allowed))
  return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)


class MLP(nnx.Module):
  """SwiGLU: down(silu(gate(x)) * up(x))."""

  def __init__(self, config: Olmo3Config, *, rngs: nnx.Rngs):
    c = config
    pd, std = as_dtype(c.param_dtype), c.initializer_range
    self.gate_kernel = _param(rngs, (c.hidden_size, c.intermediate_size), ("embed", "mlp"), pd, std)
    self.up_kernel = _param(rngs, (c.hidden_size, c.intermediate_size), ("embed", "mlp"), pd, std)
    self.down_kernel = _param(rngs, (c.intermediate_size, c.hidden_size), ("mlp", "embed_out"), pd, std)
    self.dtype = as_dtype(c.dtype)

  def __call__(self, x):
    dt = self.dtype
    x = x.astype(dt)
    gate = x @ self.gate_kernel[...].astype(dt)
    up = x @ self.up_kernel[...].astype(dt)
    return (jax.nn.silu(gate) * up) @ self.down_kernel[...].astype(dt)


class Block(nnx.Module):
  """h = x + norm(attn(x)); out = h + norm(mlp(h))."""

  def __init__(self, config: Olmo3Config, layer: int, *, rngs: nnx.Rngs):
    c = config
    pd = as_dtype(c.param_dtype)
    self.attn = Attention(c, layer, rngs=rngs)
    self.mlp = MLP(c, rngs=rngs)
    self.post_attention_norm = _param(rngs, (c.hidden_size,), ("norm",), pd, None)
    self.post_feedforward_norm = _param(rngs, (c.hidden_size,), ("norm",), pd, None)
    self.eps = c.rms_norm_eps

  def __call__(self, x, positions, key_valid, segment_ids, query_block: int = 128, prefix=None):
    return self.finish(x, self.attn(x, positions, key_valid, segment_ids, query_block, prefix))

  def finish(self, x, a):
    """The block after attention: `a` [B, T, D] is the attention's (o-projected) output."""
    h = x + rms_norm(a, self.post_attention_norm[...], self.eps).astype(x.dtype)
    return h + rms_norm(self.mlp(h), self.post_feedforward_norm[...], self.eps).astype(x.dtype)


class Olmo3Output(NamedTuple):
  logits: jax.Array | None
  hidden_states: tuple[jax.Array, ...] | dict[int, jax.Array]


class SharedPrefix(NamedTuple):
  """A token prefix that every row of a batch continues (e.g. the few-shot examples of a task),
  run once: per block the keys/values a continuation can attend to (all of them on full layers,
  the last `window` on sliding ones), and its hidden states at the requested layers.
  `length` must stay a Python int (it is static under jit): `Olmo3.prefix_cache` makes one."""
  length: int
  kv: tuple[tuple[jax.Array, jax.Array], ...]  # per block: k, v [1, Pk, KV, hd]
  hidden_states: dict[int, jax.Array]  # layer -> [1, P, D]


def default_positions(attention_mask, segment_ids, batch: int, length: int) -> jax.Array:
  """Positions that make left padding and packing invisible to valid tokens."""
  if segment_ids is not None:
    idx = jnp.broadcast_to(jnp.arange(length), (batch, length))
    starts = jnp.concatenate([jnp.ones((batch, 1), bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
    start_idx = jax.lax.cummax(jnp.where(starts, idx, 0), axis=1)
    return (idx - start_idx).astype(jnp.int32)
  if attention_mask is not None:
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=1) - 1, 0)
  return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))


class Olmo3(nnx.Module):
  """OLMo3 causal LM. Param names differ from HF; `models.convert` holds the name table."""

  def __init__(self, config: Olmo3Config, *, rngs: nnx.Rngs):
    c = config
    self.config = c
    pd, std = as_dtype(c.param_dtype), c.initializer_range
    vp = c.padded_vocab_size
    embed = std * jax.random.normal(rngs.params(), (vp, c.hidden_size), jnp.float32)
    head = std * jax.random.normal(rngs.params(), (c.hidden_size, vp), jnp.float32)
    pad_rows = jnp.arange(vp) >= c.vocab_size
    self.embedding = nnx.Param(jnp.where(pad_rows[:, None], 0, embed).astype(pd), logical_axes=("vocab", "embed"))
    self.lm_head = nnx.Param(jnp.where(pad_rows[None, :], 0, head).astype(pd), logical_axes=("embed", "vocab"))
    self.final_norm = _param(rngs, (c.hidden_size,), ("norm",), pd, None)
    self.blocks = nnx.List([Block(c, i, rngs=rngs) for i in range(c.num_hidden_layers)])

  def embed(self, input_ids: jax.Array) -> jax.Array:
    return jnp.take(self.embedding[...], input_ids, axis=0).astype(as_dtype(self.config.dtype))

  def logits_from_hidden(self, h: jax.Array) -> jax.Array:
    """Final norm + LM head; padding rows of the vocab are dropped."""
    dt = as_dtype(self.config.dtype)
    x = rms_norm(h, self.final_norm[...], self.config.rms_norm_eps).astype(dt)
    logits = x @ self.lm_head[...].astype(dt)
    return logits[..., : self.config.vocab_size]

  def prefill(self, input_ids: jax.Array, attention_mask: jax.Array | None = None, *,
              depth: int | None = None, query_block: int = 128, prefix: SharedPrefix | None = None):
    """Runs [B, P] (left-padded) through the first `depth` blocks (default: all), keeping K/V.

    Returns (hidden states: depth + 1 arrays [B, P, D]; per block the keys/values [B, Pk, KV, hd]
    a continuation can attend to: all P on full layers, the last `window` on sliding ones).
    The sampler's prompt pass and `prefix_cache` both run this. With `prefix`, the rows continue
    it (positions start after it; its K/V are not returned), as in `__call__`.
    """
    b, p = input_ids.shape
    depth = self.config.num_hidden_layers if depth is None else depth
    valid = jnp.ones((b, p), bool) if attention_mask is None else attention_mask.astype(bool)
    positions = default_positions(attention_mask, None, b, p) + (0 if prefix is None else prefix.length)
    x = self.embed(input_ids)
    states, kv = [x], []
    for i, block in enumerate(self.blocks[:depth]):
      attn = block.attn
      q, k, v = attn.project(x, positions)
      pre = None if prefix is None else (*prefix.kv[i], prefix.length)
      o = blocked_self_attention(attn.attend, q, k, v, valid, None, attn.window, query_block, pre, positions)
      x = block.finish(x, attn.output(o))
      states.append(x)
      keep = p if attn.window is None else min(p, attn.window)
      kv.append((k[:, p - keep:], v[:, p - keep:]))
    return states, kv

  def prefix_cache(self, prefix_ids: jax.Array, layers: Sequence[int] = (), depth: int | None = None,
                   query_block: int = 128) -> SharedPrefix:
    """Runs a shared prefix [1, P] once through the first `depth` blocks (default: all)."""
    states, kv = self.prefill(prefix_ids, depth=depth, query_block=query_block)
    return SharedPrefix(prefix_ids.shape[1], tuple(kv), {i: states[i] for i in layers})

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None, *,
               positions: jax.Array | None = None, segment_ids: jax.Array | None = None,
               layers: Sequence[int] | None = None, return_logits: bool = True,
               query_block: int = 128, prefix: SharedPrefix | None = None) -> Olmo3Output:
    """input_ids [B, T] -> Olmo3Output.

    hidden_states: by default a tuple of num_layers + 1 arrays [B, T, D] (embedding output, then
    the raw residual after each block); with `layers=(i, ...)`, a dict of only those, and no block
    past the deepest requested one runs. `return_logits=False` skips the final norm and LM head.
    With `prefix` (`prefix_cache`), every row continues that prefix: positions start after it
    and attention also reads its keys, so the rows' states equal those of prefix + row.
    """
    c = self.config
    b, t = input_ids.shape
    n = c.num_hidden_layers
    if layers is not None:
      layers = tuple(sorted(set(int(i) for i in layers)))
      bad = [i for i in layers if not 0 <= i <= n]
      if bad:
        raise ValueError(f"layers {bad} out of range: hidden states are indexed 0..{n}")
      if return_logits and layers[-1] != n:
        raise ValueError("return_logits=True needs every block to run; include layer "
                         f"{n} in `layers` or pass return_logits=False")
    key_valid = (jnp.ones((b, t), bool) if attention_mask is None else attention_mask.astype(bool))
    if positions is None:
      positions = default_positions(attention_mask, segment_ids, b, t)
      if prefix is not None:
        positions = positions + prefix.length
    depth = n if layers is None else layers[-1]
    if prefix is not None and len(prefix.kv) < depth:
      raise ValueError(f"the prefix ran {len(prefix.kv)} blocks; this pass needs {depth}")
    x = self.embed(input_ids)
    states = [x]
    for i in range(depth):
      pre = None if prefix is None else (*prefix.kv[i], prefix.length)
      x = self.blocks[i](x, positions, key_valid, segment_ids, query_block, pre)
      states.append(x)
    logits = self.logits_from_hidden(x) if return_logits else None
    hidden = tuple(states) if layers is None else {i: states[i] for i in layers}
    return Olmo3Output(logits=logits, hidden_states=hidden)


def init_model(config: Olmo3Config, seed: int = 0) -> Olmo3:
  return Olmo3(config, rngs=nnx.Rngs(seed))


def abstract_model(config: Olmo3Config) -> Olmo3:
  """The model with ShapeDtypeStruct leaves: no memory, no compute (for conversion and shape tests)."""
  return nnx.eval_shape(lambda: Olmo3(config, rngs=nnx.Rngs(0)))
