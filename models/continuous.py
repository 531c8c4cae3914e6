"""Continuous batching: a fixed set of decode slots, refilled between decode chunks.

Why: the static sampler (`models.sampling.generate`) decodes a batch until its longest row stops,
so on GSM8K-like lengths (median ~70 tokens, a tail that runs to the budget) most row-steps go to
rows that are already done. Here R row slots decode together in chunks: one jit runs a
`lax.while_loop` of decode steps that returns once `refill` prompt slots are free (or after `chunk`
steps, or when every row is done); the host then admits the next pending (prompt, sample) units
into the free slots (one jit: prefill + scatter into the caches) and decoding goes on. Shapes are
fixed for a run (slots, prompt width, admit sizes in powers of two), so a run compiles a few times.
A run whose rows all fit in the slots at once has nothing to refill: without a shared prefix or
the extra greedy row, it runs the static sampler's single program instead.

What keeps it right, as in the static sampler (tests/test_labels.py and tests/test_sampling.py
compare the two):
  * a sample's random stream is (seed, question id, sample index, step) (`sampling._select`), so its
    tokens do not depend on its slot, its neighbours or when it was admitted;
  * the same prefill (`Olmo3.prefill`), the same attention math (`sampling._shared_attend`: prompt
    keys, then a ring buffer of generated keys; sliding layers keep `window` of each), the same stop
    rules (stop ids incl. EOS, stop sequences, the token budget).

Memory (`models.kv_budget` sizes R from a GiB budget): a prompt sits in a prompt slot shared by
`group` rows: all of its samples when every sample of the run fits at once (the static sampler's
sharing; nothing to refill), otherwise 1, so every row refills on its own, at the cost of a prompt
copy per row instead of per prompt. With `share_prefix`, the tokens every prompt starts with (a
task's few-shot examples: 613 of GSM8K's ~670) are prefilled once and read by every row, and only
the rest is copied per row (see `stream` for what that costs in exactness).
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models import kv_budget, sampling
from models import sharding as sharding_lib
from models.config import as_dtype
from models.olmo3 import Olmo3, SharedPrefix


@dataclasses.dataclass(frozen=True)
class EngineSpec:
  """Everything that fixes the compiled programs of a run (hashable: a jit static argument)."""
  rows: int  # R decode slots
  group: int  # rows per prompt slot (they share its K/V)
  prompt_width: int  # columns of a prompt slot (a prompt bucket)
  prefix_len: int  # tokens every prompt starts with, run once (0: none)
  max_new_tokens: int
  stop_ids: tuple[int, ...]
  stop_seqs: tuple[tuple[int, ...], ...]
  greedy: bool  # every row greedy
  mixed: bool  # greedy and sampled rows in one run (per-row flag)
  use_top_p: bool
  pad_id: int
  mesh: jax.sharding.Mesh | None

  @property
  def slots(self) -> int:
    return self.rows // self.group

  @property
  def decode(self) -> sampling.DecodeSpec:
    return sampling.DecodeSpec(1, self.max_new_tokens, self.stop_ids, self.stop_seqs, self.greedy,
                               self.use_top_p, self.pad_id, self.mesh)


def common_prefix_length(prompts: Sequence[Sequence[int]], minimum: int = 32) -> int:
  """Tokens every prompt starts with (each keeps at least one of its own); 0 if under `minimum`."""
  if len(prompts) < 2:
    return 0
  n = min(len(p) for p in prompts) - 1
  first = np.asarray(prompts[0][:n])
  for p in prompts[1:]:
    differ = np.flatnonzero(np.asarray(p[:n]) != first[:n])
    n = int(differ[0]) if differ.size else n
    if n < minimum:
      return 0
  return n


# ----------------------------------------------------------------------------- the jitted programs


def _constrain_rows(carry: dict, mesh) -> dict:
  if mesh is None:
    return carry
  c = sampling._constrain
  return {k: [c(x, mesh, sampling._CACHE_AXES) for x in v] if isinstance(v, list) else
          c(v, mesh, ("batch",) + (None,) * (v.ndim - 1)) for k, v in carry.items()}


def _empty(model: Olmo3, spec: EngineSpec) -> dict:
  """Caches and row state of a run with every slot free (done rows hold nothing)."""
  c, r, n = model.config, spec.rows, spec.max_new_tokens
  dt = as_dtype(c.dtype)  # what `Attention.project` makes
  shape = lambda rows, width: (rows, width, c.num_key_value_heads, c.head_dim)  # the static sampler's
  widths = [kv_budget.layer_widths(c, i, spec.prompt_width, n) for i in range(c.num_hidden_layers)]
  key_shape = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))).shape
  m = max([len(s) for s in spec.stop_seqs] + [1])
  return {
      "pk": [jnp.zeros(shape(spec.slots, pw), dt) for pw, _ in widths],
      "pv": [jnp.zeros(shape(spec.slots, pw), dt) for pw, _ in widths],
      "gk": [jnp.zeros(shape(r, gw), dt) for _, gw in widths],
      "gv": [jnp.zeros(shape(r, gw), dt) for _, gw in widths],
      "pvalid": jnp.zeros((spec.slots, spec.prompt_width), bool),
      "tok": jnp.full((r,), spec.pad_id, jnp.int32), "t": jnp.ones((r,), jnp.int32),
      "done": jnp.ones((r,), bool), "out": jnp.full((r, n), spec.pad_id, jnp.int32),
      "recent": jnp.full((r, m), spec.pad_id, jnp.int32), "keys": jnp.zeros((r,) + key_shape, jnp.uint32),
      "greedy": jnp.zeros((r,), bool), "pos0": jnp.zeros((r,), jnp.int32)}


def _select_rows(logits, keys, step, greedy_rows, temperature, top_p, spec: EngineSpec):
  tok = sampling._select(logits, keys, step, temperature, top_p, spec.decode)
  return jnp.where(greedy_rows, sampling._argmax(logits), tok) if spec.mixed else tok


def _stop_hit(tok, recent, t, spec: EngineSpec):
  """`sampling._stopped` per row: `tok` is token `t` of its row, `recent` its last tokens."""
  hit = jnp.zeros(tok.shape, bool)
  for s in spec.stop_ids:
    hit |= tok == s
  for seq in spec.stop_seqs:
    m = len(seq)
    hit |= (t >= m - 1) & jnp.all(recent[:, recent.shape[1] - m:] == jnp.asarray(seq, jnp.int32), axis=1)
  return hit


def _admit(graphdef, state, carry, prefix_kv, ids, mask, hashes, src, dest, sample, greedy, active, seed,
           temperature, top_p, spec: EngineSpec):
  """Prefills prompts ids/mask [A, W] and puts them in prompt slots `dest` [D] (entry d holds
  prompt src[d]; dest == slots: unused), with per-row sample index / greedy / active [D, group]."""
  model = nnx.merge(graphdef, state)
  prefix = SharedPrefix(spec.prefix_len, tuple(prefix_kv), {}) if spec.prefix_len else None
  logits, kv = sampling._prefill(model, ids, mask, spec.mesh, prefix)
  m, n, w = spec.group, spec.max_new_tokens, spec.prompt_width
  carry = dict(carry)
  for name, j in (("pk", 0), ("pv", 1)):
    carry[name] = [c.at[dest, c.shape[1] - new[j].shape[1]:].set(new[j][src].astype(c.dtype), mode="drop")
                   for c, new in zip(carry[name], kv)]
  valid = jnp.zeros((dest.shape[0], w), bool).at[:, w - ids.shape[1]:].set(mask[src].astype(bool))
  carry["pvalid"] = carry["pvalid"].at[dest].set(valid, mode="drop")
  rows = (dest[:, None] * m + jnp.arange(m)).reshape(-1)  # out of range for unused entries: dropped
  src_r = jnp.repeat(src, m)
  base = jax.random.key(seed)
  keys = jax.vmap(lambda h, s: jax.random.fold_in(jax.random.fold_in(
      jax.random.fold_in(base, h[0]), h[1]), s))(hashes[src_r], sample.reshape(-1))
  greedy_r = greedy.reshape(-1)
  first = _select_rows(logits[src_r], keys, 0, greedy_r, temperature, top_p, spec)
  r = first.shape[0]
  recent = jnp.full((r, carry["recent"].shape[1]), spec.pad_id, jnp.int32).at[:, -1].set(first)
  done = ~active.reshape(-1) | _stop_hit(first, recent, jnp.zeros((r,), jnp.int32), spec) | (n <= 1)
  new = {"tok": first, "t": jnp.ones((r,), jnp.int32), "done": done,
         "out": jnp.full((r, n), spec.pad_id, jnp.int32).at[:, 0].set(first), "recent": recent,
         "keys": jax.random.key_data(keys), "greedy": greedy_r,
         "pos0": (jnp.sum(mask, axis=1).astype(jnp.int32) + spec.prefix_len)[src_r]}
  for k, v in new.items():
    carry[k] = carry[k].at[rows].set(v, mode="drop")
  return _constrain_rows(carry, spec.mesh)


def _step(model: Olmo3, carry, prefix_kv, temperature, top_p, spec: EngineSpec):
  """One decode step of every row (done rows compute but change nothing that is read again)."""
  r, m, w, n = spec.rows, spec.group, spec.prompt_width, spec.max_new_tokens
  t, done = carry["t"], carry["done"]
  g = t - 1  # generated index of the token fed now
  x = model.embed(carry["tok"][:, None])
  pos = carry["pos0"] + g
  idx = jnp.arange(r)
  carry = dict(carry, gk=list(carry["gk"]), gv=list(carry["gv"]))
  for li, block in enumerate(model.blocks):
    attn = block.attn
    q, kk, vv = attn.project(x, pos[:, None])
    size = carry["gk"][li].shape[1]
    slot = g % size
    kg = carry["gk"][li].at[idx, slot].set(kk[:, 0].astype(carry["gk"][li].dtype))
    vg = carry["gv"][li].at[idx, slot].set(vv[:, 0].astype(carry["gv"][li].dtype))
    carry["gk"][li], carry["gv"][li] = kg, vg
    slot_gen = g[:, None] - jnp.mod(g[:, None] - jnp.arange(size)[None], size)  # <0: empty slot
    kp, vp = carry["pk"][li], carry["pv"][li]
    pw = kp.shape[1]
    allowed_p = jnp.broadcast_to(carry["pvalid"][:, None, w - pw:], (r // m, m, pw))
    shared = None
    if spec.prefix_len:
      kx, vx = prefix_kv[li]
      allowed_x = None
      if attn.window is not None:  # prefix column c sits at position prefix_len - width + c
        allowed_x = pos[:, None] - (spec.prefix_len - kx.shape[1] + jnp.arange(kx.shape[1]))[None] < attn.window
      shared = (kx, vx, allowed_x)
    if attn.window is not None:
      allowed_p = allowed_p & (g[:, None] + pw - jnp.arange(pw)[None] < attn.window).reshape(r // m, m, pw)
    o = sampling._shared_attend(q[:, 0], kp, vp, allowed_p, kg, vg, slot_gen >= 0, m, shared)
    x = block.finish(x, attn.output(o))
  logits = model.logits_from_hidden(x[:, 0])
  keys = jax.random.wrap_key_data(carry["keys"])
  nxt = _select_rows(logits, keys, t, carry["greedy"], temperature, top_p, spec)
  act = ~done
  recent = jnp.where(act[:, None], jnp.concatenate([carry["recent"][:, 1:], nxt[:, None]], axis=1),
                     carry["recent"])
  newly = act & (_stop_hit(nxt, recent, t, spec) | (t + 1 >= n))
  carry.update(out=carry["out"].at[idx, jnp.where(act, t, n)].set(nxt, mode="drop"), recent=recent,
               t=jnp.where(act, t + 1, t), tok=jnp.where(act, nxt, carry["tok"]), done=done | newly)
  return _constrain_rows(carry, spec.mesh)


def _chunk(graphdef, state, carry, prefix_kv, max_steps, refill_min, temperature, top_p, spec: EngineSpec):
  """Decode steps until `refill_min` prompt slots are free, `max_steps` ran, or every row is done."""
  model = nnx.merge(graphdef, state)

  def cond(c):
    i, cr = c
    free = jnp.sum(jnp.all(cr["done"].reshape(spec.slots, spec.group), axis=1))
    return (i < max_steps) & ~jnp.all(cr["done"]) & (free < refill_min)

  def body(c):
    i, cr = c
    return i + 1, _step(model, cr, prefix_kv, temperature, top_p, spec)

  steps, carry = jax.lax.while_loop(cond, body, (jnp.int32(0), carry))
  return carry, steps


_admit_jit = jax.jit(_admit, static_argnames=("graphdef", "spec"), donate_argnames=("carry",))
_chunk_jit = jax.jit(_chunk, static_argnames=("graphdef", "spec"), donate_argnames=("carry",))
_empty_jit = jax.jit(lambda graphdef, state, spec: _constrain_rows(_empty(nnx.merge(graphdef, state), spec),
                                                                   spec.mesh),
                     static_argnames=("graphdef", "spec"))
_prefix_jit = jax.jit(lambda graphdef, state, ids: nnx.merge(graphdef, state).prefix_cache(ids).kv,
                      static_argnames=("graphdef",))


# ----------------------------------------------------------------------------- the host loop


def _pow2(n: int) -> int:
  return 1 << max(0, n - 1).bit_length()


def plan(num_prompts: int, units: int, *, rows: int, group: int | None = None, multiple: int = 1) -> tuple[int, int]:
  """(rows, group) of a run: `units` rows per prompt, at most `rows` slots (see the module doc)."""
  if group is None:
    group = units if num_prompts * units <= rows else 1
  step = group * multiple
  needed = num_prompts * -(-units // group) * group
  return max(step, min(rows // step, -(-needed // step)) * step), group


def stream(model: Olmo3, prompts: Sequence[Sequence[int]], question_ids: Sequence[str],
           params: sampling.SamplingParams, *, pad_id: int, eos_id: int | None = None, greedy: bool = False,
           rows: int = 256, group: int | None = None, refill: int | None = None, chunk: int = 256,
           share_prefix: bool = False, prefix_len: int | None = None, mesh: jax.sharding.Mesh | None = None,
           graphdef_state=None) -> Iterator[tuple[int, list[list[int]], list[int] | None]]:
  """Yields (prompt index, its k token lists, its greedy token list or None) as prompts finish.

  `greedy=True` adds a greedy row per prompt (the label job's extra greedy answer) to the run.
  Tokens are cut after the first stop token / stop sequence / EOS, as `sampling.generate` does.
  `share_prefix`: run the tokens every prompt starts with once (`prefix_len`, default: found when
  >= 32; pass the value of a larger set of prompts to keep a resumed subset on the same programs).
  That saves a prompt copy per row, but the keys are then split differently from the static
  sampler's, so tokens agree with it up to float rounding (on a flat 50k-token distribution a
  sampled token can move to its neighbour), not bit for bit as they do without it.
  """
  params.validate()
  vocab = model.config.vocab_size
  if len(prompts) != len(question_ids):
    raise ValueError(f"{len(prompts)} prompts but {len(question_ids)} question ids")
  for i, p in enumerate(prompts):
    if len(p) == 0 or min(p) < 0 or max(p) >= vocab:
      raise ValueError(f"prompt {i} ({question_ids[i]!r}) is empty or has token ids outside [0, {vocab})")
  if not prompts:
    return
  k = params.num_samples
  units = [(j, params.greedy) for j in range(k)] + ([(0, True)] if greedy else [])
  stop_ids = tuple(sorted(set(params.stop_token_ids) | ({int(eos_id)} if eos_id is not None else set())))
  stop_seqs = tuple(q for q in params.stop_sequences if len(q) <= params.max_new_tokens)
  p0 = 0 if not share_prefix else common_prefix_length(prompts) if prefix_len is None else int(prefix_len)
  rest = [list(p[p0:]) for p in prompts]
  multiple = 1
  if mesh is not None:
    axes = sharding_lib.logical_to_spec(("batch",), mesh=mesh)[0] or ()
    multiple = int(np.prod([mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes)]))
  r, m = plan(len(prompts), len(units), rows=rows, group=group, multiple=multiple)
  spec = EngineSpec(r, m, sampling.prompt_bucket(max(len(p) for p in rest)), p0, params.max_new_tokens,
                    stop_ids, stop_seqs, all(u[1] for u in units), len({u[1] for u in units}) > 1,
                    params.top_p < 1.0, int(pad_id), mesh)
  # Slots admitted per call (one program): all of them when every unit fits at once (one prefill,
  # nothing to refill), else an eighth, which is also how many must be free before a chunk returns.
  fits = len(prompts) * -(-len(units) // m) <= spec.slots
  slots = spec.slots
  n_refill = min(slots, refill or (slots if fits else max(1, slots // 8)))
  if fits and not p0 and not greedy:
    # Every row decodes at once and nothing is refilled: that is the static sampler's one program
    # (prefill and decode in one jit, no admit or host round trip), with the same tokens.
    out = sampling.generate(model, prompts, question_ids, params, pad_id=pad_id, eos_id=eos_id, mesh=mesh,
                            graphdef_state=graphdef_state)
    for i, samples in enumerate(out):
      yield i, samples, None
    return
  graphdef, state = graphdef_state or nnx.split(model)
  prefix_kv = _prefix_jit(graphdef, state, np.asarray([prompts[0][:p0]], np.int32)) if p0 else ()
  carry = _empty_jit(graphdef, state, spec)
  if mesh is None:  # committed like the admit's outputs, or the first admit compiles twice
    leaf = jax.tree.leaves(state)[0]
    carry = jax.device_put(carry, next(iter(leaf.devices())) if isinstance(leaf, jax.Array) else jax.devices()[0])
  scalars = (np.uint32(params.seed % 2**32), np.float32(params.temperature if params.temperature > 0 else 1.0),
             np.float32(params.top_p))
  hashes = [sampling.question_hash(q) for q in question_ids]
  pending = collections.deque((i, units[a:a + m]) for i in range(len(prompts)) for a in range(0, len(units), m))
  parts_left = collections.Counter(i for i, _ in pending)
  results: dict[int, list] = collections.defaultdict(lambda: [None] * len(units))
  occupied: dict[int, tuple[int, int, list]] = {}  # slot -> (prompt, first unit, units)
  unit_pos = collections.Counter()
  free = list(range(slots))

  def admit(batch, dests):
    d = n_refill  # one program: every admit but a run's last is full
    uniq = list(dict.fromkeys(i for i, _ in batch))
    a = min(d, max(_pow2(len(uniq)), _pow2(-(-d // len(units)))))  # prompts: few sizes, little waste
    ids, mask = sampling.left_pad([rest[i] for i in uniq] + [rest[uniq[0]]] * (a - len(uniq)),
                                  spec.prompt_width, pad_id)
    hs = np.array([hashes[i] for i in uniq] + [(0, 0)] * (a - len(uniq)), np.uint32)
    src = np.zeros(d, np.int32)
    dest = np.full(d, slots, np.int32)
    sample = np.zeros((d, m), np.uint32)
    greedy_rows = np.zeros((d, m), bool)
    active = np.zeros((d, m), bool)
    for e, ((i, us), s) in enumerate(zip(batch, dests)):
      src[e], dest[e] = uniq.index(i), s
      for j, (si, gr) in enumerate(us):
        sample[e, j], greedy_rows[e, j], active[e, j] = si, gr, True
      occupied[s] = (i, unit_pos[i], us)
      unit_pos[i] += len(us)
    return _admit_jit(graphdef, state, carry, prefix_kv, ids, mask, hs, src, dest, sample, greedy_rows, active,
                      *scalars, spec=spec)

  while pending or occupied:
    while pending and len(free) >= min(n_refill, len(pending)):
      take = min(n_refill, len(pending))
      batch = [pending.popleft() for _ in range(take)]
      carry = admit(batch, [free.pop(0) for _ in range(take)])
    refill_min = min(n_refill, len(pending)) if pending else slots + 1
    carry, _ = _chunk_jit(graphdef, state, carry, prefix_kv, np.int32(chunk), np.int32(refill_min),
                          *scalars[1:], spec=spec)
    if jax.process_count() > 1:
      done, t, out = (sampling._to_host(carry[name]) for name in ("done", "t", "out"))
    else:  # one transfer
      done, t, out = jax.device_get((carry["done"], carry["t"], carry["out"]))
    for s in sorted(occupied):
      if not done[s * m:(s + 1) * m].all():
        continue
      i, first, us = occupied.pop(s)
      for j in range(len(us)):
        results[i][first + j] = out[s * m + j, :t[s * m + j]].tolist()
      free.append(s)
      parts_left[i] -= 1
      if not parts_left[i]:
        res = results.pop(i)
        yield i, res[:k], (res[k] if greedy else None)
    free.sort()


def generate(model: Olmo3, prompts: Sequence[Sequence[int]], question_ids: Sequence[str],
             params: sampling.SamplingParams, **kw) -> list[list[list[int]]]:
  """`sampling.generate`'s result (per prompt, k token lists) from the continuous sampler."""
  out = [None] * len(prompts)
  for i, samples, _ in stream(model, prompts, question_ids, params, **kw):
    out[i] = samples
  return out
