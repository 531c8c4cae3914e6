"""KV-cache decoding for `models.olmo3.Olmo3`: greedy, temperature and top-p, k samples per prompt.

Why it is shaped this way (measured on CPU; BENCHMARKS.md has the figures):
  * prefill and the whole decode loop run in ONE jit (`lax.while_loop` that exits once every row
    has stopped), so there is no per-token Python or dispatch overhead;
  * each prompt is prefilled once and its KV cache is shared by its k samples: decode attention
    reads the prompt keys once per prompt ([B, P]) plus each sample's own generated keys
    ([B * k, N]), instead of tiling a [B * k, P + N] cache (k times less prompt-cache memory);
  * sliding-window layers keep only the last `window` prompt columns and a ring buffer of
    generated keys; full layers keep everything;
  * shapes are static through prompt-length buckets and left padding, so a run compiles a few times;
  * the random stream of a sample depends only on (seed, question id, sample index, step), so
    results do not depend on batch composition, order or resumption (up to float rounding of
    differently shaped matmuls, which the tests find exact on CPU);
  * the sampling primitives avoid ops that XLA CPU runs slowly: argmax, a vocab-wide cumsum
    and sort (see `_argmax`, `_inverse_cdf`, `_top_p_mask`).
This is the static sampler: a batch decodes until its longest row stops. `models.continuous`
refills decode slots as rows stop (what the label job runs); it reuses `_prefill`, `_shared_attend`
and `_select`, so a sample gets the same tokens from both.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models import multihost
from models import sharding as sharding_lib
from models.olmo3 import Olmo3

_NEG = jnp.finfo(jnp.float32).min


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """What to sample. temperature=0 is greedy; `stop_sequences` are token-id tuples (any length)."""
  temperature: float = 0.0
  top_p: float = 1.0
  num_samples: int = 1
  max_new_tokens: int = 256
  stop_token_ids: tuple[int, ...] = ()
  stop_sequences: tuple[tuple[int, ...], ...] = ()
  seed: int = 0

  def __post_init__(self):
    object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
    object.__setattr__(self, "stop_sequences",
                       tuple(tuple(int(t) for t in s) for s in self.stop_sequences))
    self.validate()

  def validate(self) -> None:
    if not (isinstance(self.temperature, (int, float)) and np.isfinite(self.temperature)
            and self.temperature >= 0):
      raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
    if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
    for name in ("num_samples", "max_new_tokens"):
      v = getattr(self, name)
      if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if any(len(s) == 0 for s in self.stop_sequences):
      raise ValueError("stop_sequences must not contain an empty sequence")

  @property
  def greedy(self) -> bool:
    return self.temperature == 0


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
  """Everything that fixes the compiled program (hashable: a jit static argument)."""
  num_samples: int
  max_new_tokens: int
  stop_ids: tuple[int, ...]
  stop_seqs: tuple[tuple[int, ...], ...]
  greedy: bool
  use_top_p: bool
  pad_id: int
  mesh: jax.sharding.Mesh | None


def prompt_bucket(n: int) -> int:
  """Padded prompt length: powers of two up to 128 (min 16), then multiples of 128."""
  if n <= 128:
    return max(16, 1 << max(0, n - 1).bit_length())
  return -(-n // 128) * 128


def question_hash(question_id: str) -> tuple[int, int]:
  """Two uint32 words of a process-independent hash of the question id (PRNG stream id)."""
  h = hashlib.sha256(str(question_id).encode()).digest()
  return int.from_bytes(h[:4], "little"), int.from_bytes(h[4:8], "little")


def left_pad(prompts: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """(ids, mask) int32 [B, length] with each prompt right-aligned."""
  ids = np.full((len(prompts), length), pad_id, np.int32)
  mask = np.zeros((len(prompts), length), np.int32)
  for i, p in enumerate(prompts):
    if len(p):
      ids[i, length - len(p):] = p
      mask[i, length - len(p):] = 1
  return ids, mask


# ----------------------------------------------------------------------------- the jitted program


def _constrain(x, mesh, logical):
  if mesh is None:
    return x
  spec = sharding_lib.logical_to_spec(logical, mesh=mesh, shape=x.shape)
  return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, spec))


_CACHE_AXES = ("batch", "length", "kv_heads", "head_dim")


def _prefill(model: Olmo3, ids, mask, mesh, prefix=None):
  """Runs the prompt; returns last-column logits [B, V] and per-layer prompt K/V (window-trimmed).
  With `prefix` (a `SharedPrefix`) the rows continue it and the K/V are those of the rows only."""
  states, kv = model.prefill(ids, mask, prefix=prefix)
  kv = [(_constrain(k, mesh, _CACHE_AXES), _constrain(v, mesh, _CACHE_AXES)) for k, v in kv]
  return model.logits_from_hidden(states[-1][:, -1]), kv


def _shared_attend(q, kp, vp, allowed_p, kg, vg, allowed_g, num_samples, shared=None):
  """One query per row over its prompt's keys (shared by k rows) and its own generated keys.

  q [R, H, hd]; kp/vp [B, Pk, KV, hd], allowed_p [B, Pk] (or [B, k, Pk] per row); kg/vg
  [R, G, KV, hd], allowed_g [G] (same for every row) or [R, G]. `shared` = (kx, vx [1, Px, KV, hd],
  allowed_x [R, Px] or None): keys every row reads first (a prefix common to all prompts; the
  continuous sampler's). Same math as `Attention.attend`: fp32 scores and softmax.
  """
  r, h, hd = q.shape
  b, kvh = kp.shape[0], kp.shape[2]
  g = h // kvh
  scale = hd ** -0.5
  qg = q.reshape(r, kvh, g, hd)
  ap = allowed_p[:, None] if allowed_p.ndim == 2 else allowed_p
  sp = jnp.einsum("bskgh,bpkh->bskgp", qg.reshape(b, num_samples, kvh, g, hd), kp,
                  preferred_element_type=jnp.float32) * scale
  sp = jnp.where(ap[:, :, None, None, :], sp, _NEG).reshape(r, kvh, g, -1)
  sg = jnp.einsum("rkgh,rnkh->rkgn", qg, kg, preferred_element_type=jnp.float32) * scale
  sg = jnp.where(allowed_g if allowed_g.ndim == 1 else allowed_g[:, None, None, :], sg, _NEG)
  parts = [sp, sg]
  if shared is not None:
    kx, vx, allowed_x = shared
    sx = jnp.einsum("rkgh,pkh->rkgp", qg, kx[0], preferred_element_type=jnp.float32) * scale
    parts.insert(0, sx if allowed_x is None else jnp.where(allowed_x[:, None, None, :], sx, _NEG))
  probs = jax.nn.softmax(jnp.concatenate(parts, axis=-1), axis=-1).astype(vp.dtype)
  px = 0 if shared is None else shared[0].shape[1]
  pp, pg = probs[..., px:px + kp.shape[1]], probs[..., px + kp.shape[1]:]
  out = jnp.einsum("bskgp,bpkh->bskgh", pp.reshape(b, num_samples, kvh, g, -1), vp).reshape(r, kvh, g, hd)
  if shared is not None:
    out = jnp.einsum("rkgp,pkh->rkgh", probs[..., :px], shared[1][0]) + out
  out = out + jnp.einsum("rkgn,rnkh->rkgh", pg, vg)
  return out.reshape(r, 1, h, hd)


def _top_p_mask(probs, top_p, iters: int = 32):
  """Keeps the most likely tokens until their mass reaches top_p (HF's rule), ties kept together.

  Token j stays iff the mass of tokens strictly more likely than it is < top_p. The cut-off is
  found by bisection on the probability (32 masked sums) instead of a sort: an XLA CPU sort of
  [rows, vocab] is 20-40x slower.
  """
  lo = jnp.zeros(probs.shape[:-1] + (1,), probs.dtype)
  hi = jnp.max(probs, axis=-1, keepdims=True)

  def body(_, c):
    lo, hi = c
    mid = 0.5 * (lo + hi)
    ok = jnp.sum(jnp.where(probs > mid, probs, 0), axis=-1, keepdims=True) < top_p
    return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)
  lo, _ = jax.lax.fori_loop(0, iters, body, (lo, hi))
  return probs > lo


def _argmax(x):
  """First index of the maximum; XLA CPU's variadic-reduce argmax is several times slower."""
  m = jnp.max(x, axis=-1, keepdims=True)
  return jnp.min(jnp.where(x == m, jnp.arange(x.shape[-1], dtype=jnp.int32), x.shape[-1]), axis=-1)


def _inverse_cdf(probs, u, block: int = 64):
  """Index i with cdf[i-1] < u * total <= cdf[i] (probs unnormalized), in two levels.

  A cumsum over the whole vocab lowers to an associative scan on CPU (slow); block sums, then
  a cumsum within the one chosen block, are ~30x cheaper. Never returns a zero-mass token.
  """
  r, v = probs.shape
  nb = -(-v // block)
  p = jnp.pad(probs, ((0, 0), (0, nb * block - v))).reshape(r, nb, block)
  bsum = jnp.sum(p, axis=-1)
  bcdf = jnp.cumsum(bsum, axis=-1)
  t = (u * bcdf[:, -1])[:, None]
  b = jnp.minimum(jnp.sum(bcdf < t, axis=-1), nb - 1)
  before = jnp.take_along_axis(bcdf - bsum, b[:, None], axis=-1)
  inner = jnp.take_along_axis(p, b[:, None, None], axis=1)[:, 0]
  icdf = jnp.cumsum(inner, axis=-1) + before
  last = jnp.max(jnp.where(inner > 0, jnp.arange(block), 0), axis=-1)
  return (b * block + jnp.minimum(jnp.sum(icdf < t, axis=-1), last)).astype(jnp.int32)


def _select(logits, row_keys, step, temperature, top_p, st: DecodeSpec):
  """Next token per row: argmax, or inverse-CDF sampling with one uniform per row.
  `step` is the index of the token being drawn: one for all rows, or per row [R]."""
  if st.greedy:
    return _argmax(logits)
  logits = logits.astype(jnp.float32) / temperature
  probs = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
  if st.use_top_p:
    probs = jnp.where(_top_p_mask(probs / jnp.sum(probs, axis=-1, keepdims=True), top_p), probs, 0)
  keys = jax.vmap(jax.random.fold_in, (0, None if jnp.ndim(step) == 0 else 0))(row_keys, step)
  u = 1.0 - jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(keys)  # (0, 1]
  return _inverse_cdf(probs, u)


def _stopped(tok, out, i, st: DecodeSpec):
  hit = jnp.zeros(tok.shape, bool)
  for t in st.stop_ids:
    hit |= tok == t
  for seq in st.stop_seqs:
    m = len(seq)
    window = jax.lax.dynamic_slice_in_dim(out, jnp.maximum(i - m + 1, 0), m, axis=1)
    hit |= (i >= m - 1) & jnp.all(window == jnp.asarray(seq, jnp.int32), axis=1)
  return hit


def _decode(graphdef, state, ids, mask, hashes, active, seed, temperature, top_p, st: DecodeSpec):
  """ids/mask [B, P], hashes [B, 2] uint32, active [B] -> tokens [B*k, N], lengths [B*k].

  Jitted as `decode_jit` (graphdef and st static). Row b*k+j is sample j of prompt b.
  Inactive rows (batch padding) start done, so they never keep the loop running.
  """
  model = nnx.merge(graphdef, state)
  k, n, mesh = st.num_samples, st.max_new_tokens, st.mesh
  b, p = ids.shape
  r = b * k
  base = jax.random.key(seed)
  sample_idx = jnp.tile(jnp.arange(k, dtype=jnp.uint32), b)
  hashes = jnp.repeat(hashes, k, axis=0)
  row_keys = jax.vmap(lambda h, s: jax.random.fold_in(jax.random.fold_in(
      jax.random.fold_in(base, h[0]), h[1]), s))(hashes, sample_idx)

  logits, prompt_kv = _prefill(model, ids, mask, mesh)
  n_valid = jnp.sum(mask, axis=1).astype(jnp.int32)
  logits = _constrain(jnp.repeat(logits, k, axis=0), mesh, ("batch", None))
  tok = _select(logits, row_keys, 0, temperature, top_p, st)
  out = jnp.full((r, n), st.pad_id, jnp.int32).at[:, 0].set(tok)
  out = _constrain(out, mesh, ("batch", None))
  done = _stopped(tok, out, 0, st) | ~jnp.repeat(active, k)
  lengths = jnp.where(done, 1, n).astype(jnp.int32)
  fed_max = max(n - 1, 1)  # tokens ever fed back (the last one never is)
  c = model.config
  gen_sizes = [fed_max if c.window_for(i) is None else min(fed_max, c.window_for(i))
               for i in range(c.num_hidden_layers)]
  dt = prompt_kv[0][0].dtype
  gen_kv = [tuple(_constrain(jnp.zeros((r, s, c.num_key_value_heads, c.head_dim), dt), mesh, _CACHE_AXES)
                  for _ in range(2)) for s in gen_sizes]
  positions0 = jnp.repeat(n_valid, k)
  prompt_valid = mask.astype(bool)

  def body(carry):
    i, tok, done, out, lengths, gen_kv = carry
    g = i - 1  # generated index of the token fed now; it sits at column p + g
    x = model.embed(tok[:, None])
    pos = (positions0 + g)[:, None]
    new_kv = []
    for li, block in enumerate(model.blocks):
      attn = block.attn
      q, kk, vv = attn.project(x, pos)
      size = gen_sizes[li]
      slot = g % size
      kg = jax.lax.dynamic_update_slice_in_dim(gen_kv[li][0], kk.astype(dt), slot, axis=1)
      vg = jax.lax.dynamic_update_slice_in_dim(gen_kv[li][1], vv.astype(dt), slot, axis=1)
      new_kv.append((kg, vg))
      kp, vp = prompt_kv[li]
      pk = kp.shape[1]
      slots = jnp.arange(size)
      slot_gen = g - jnp.mod(g - slots, size)  # generated index held by each slot (<0: empty)
      allowed_g = slot_gen >= 0
      allowed_p = prompt_valid[:, p - pk:]
      if attn.window is not None:
        allowed_p = allowed_p & ((p + g) - jnp.arange(p - pk, p) < attn.window)[None]
      o = _shared_attend(q[:, 0], kp, vp, allowed_p, kg, vg, allowed_g, k)
      x = block.finish(x, attn.output(o))
    logits = model.logits_from_hidden(x[:, 0])
    nxt = _select(logits, row_keys, i, temperature, top_p, st)
    nxt = jnp.where(done, st.pad_id, nxt)
    out = jax.lax.dynamic_update_slice_in_dim(out, nxt[:, None], i, axis=1)
    newly = ~done & _stopped(nxt, out, i, st)
    lengths = jnp.where(newly, i + 1, lengths)
    return i + 1, nxt, done | newly, out, lengths, new_kv

  def cond(carry):
    return (carry[0] < n) & ~jnp.all(carry[2])

  carry = (jnp.int32(1), tok, done, out, lengths, gen_kv)
  _, _, _, out, lengths, _ = jax.lax.while_loop(cond, body, carry)
  return out, lengths


decode_jit = jax.jit(_decode, static_argnames=("graphdef", "st"))


# ----------------------------------------------------------------------------- public API


def sample_arrays(model: Olmo3, input_ids, attention_mask, hashes, params: SamplingParams, *,
                  pad_id: int, eos_id: int | None = None, active=None,
                  mesh: jax.sharding.Mesh | None = None, graphdef_state=None):
  """Lower level: left-padded [B, P] arrays in, (tokens [B, k, N], lengths [B, k]) numpy out.

  `hashes` [B, 2] uint32 name each row's random stream (see `question_hash`); rows with
  `active` False (batch padding) are not decoded past the first token. B must divide
  over the mesh's batch axes. Tokens after a row's stop token are `pad_id`; `lengths` count
  tokens up to and including the stop token. Pass `graphdef_state=nnx.split(model)` to skip
  the split on repeated calls.
  """
  params.validate()
  stop_ids = tuple(sorted(set(params.stop_token_ids) | ({int(eos_id)} if eos_id is not None else set())))
  # A stop sequence longer than the budget can never complete: it is dropped, not compiled.
  stop_seqs = tuple(q for q in params.stop_sequences if len(q) <= params.max_new_tokens)
  st = DecodeSpec(params.num_samples, params.max_new_tokens, stop_ids, stop_seqs,
                  params.greedy, params.top_p < 1.0, int(pad_id), mesh)
  graphdef, state = graphdef_state or nnx.split(model)
  ids = np.asarray(input_ids, np.int32)
  mask = np.asarray(attention_mask, np.int32)
  hashes = np.asarray(hashes, np.uint32)
  active = np.ones(ids.shape[0], bool) if active is None else np.asarray(active, bool)
  if mesh is not None:
    put = lambda x: multihost.put_global(x, sharding_lib.batch_sharding(mesh, x.ndim, batch_size=x.shape[0]))
    ids, mask, hashes, active = put(ids), put(mask), put(hashes), put(active)
  temperature = np.float32(params.temperature if params.temperature > 0 else 1.0)
  out, lengths = decode_jit(graphdef, state, ids, mask, hashes, active, np.uint32(params.seed % 2**32),
                            temperature, np.float32(params.top_p), st=st)
  b, k = input_ids.shape[0], params.num_samples
  return _to_host(out).reshape(b, k, params.max_new_tokens), _to_host(lengths).reshape(b, k)


def _to_host(x) -> np.ndarray:
  """The whole (possibly multi-process sharded) array as numpy on every process."""
  return multihost.gather(x)


def generate(model: Olmo3, prompts: Sequence[Sequence[int]], question_ids: Sequence[str],
             params: SamplingParams, *, pad_id: int, eos_id: int | None = None,
             mesh: jax.sharding.Mesh | None = None, batch_multiple: int = 1,
             graphdef_state=None) -> list[list[list[int]]]:
  """Per prompt, k token lists, each cut after its first stop token / stop sequence / EOS.

  All prompts run as one batch, padded to `prompt_bucket(longest)` on the left; the batch is
  padded with dummy rows to a multiple of `batch_multiple` (and of the mesh's batch axes), so
  a short last batch can reuse the compiled program of the full ones.
  """
  if len(prompts) != len(question_ids):
    raise ValueError(f"{len(prompts)} prompts but {len(question_ids)} question ids")
  if not prompts:
    return []
  vocab = model.config.vocab_size
  for i, prompt in enumerate(prompts):
    if len(prompt) == 0:
      raise ValueError(f"prompt {i} ({question_ids[i]!r}) is empty")
    if min(prompt) < 0 or max(prompt) >= vocab:
      raise ValueError(f"prompt {i} ({question_ids[i]!r}) has token ids outside [0, {vocab})")
  length = prompt_bucket(max(len(p) for p in prompts))
  multiple = batch_multiple
  if mesh is not None:
    axes = sharding_lib.logical_to_spec(("batch",), mesh=mesh)[0] or ()
    axes = (axes,) if isinstance(axes, str) else axes
    multiple = int(np.lcm(multiple, int(np.prod([mesh.shape[a] for a in axes]))))
  b = -(-len(prompts) // multiple) * multiple
  rows = list(prompts) + [prompts[0]] * (b - len(prompts))
  ids, mask = left_pad(rows, length, pad_id)
  hashes = np.array([question_hash(q) for q in question_ids] + [(0, 0)] * (b - len(prompts)), np.uint32)
  active = np.arange(b) < len(prompts)
  out, lengths = sample_arrays(model, ids, mask, hashes, params, pad_id=pad_id, eos_id=eos_id,
                               active=active, mesh=mesh, graphdef_state=graphdef_state)
  return [[out[i, j, :lengths[i, j]].tolist() for j in range(params.num_samples)]
          for i in range(len(prompts))]
