"""models.sampling: cached decode == full recomputation == HF generate; seeds, stops, sharding."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import hf_reference
from models import continuous, convert, kv_budget, olmo3, sampling
from models import sharding as sharding_lib

PAD, EOS = 0, 1


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
  """A tiny random HF model (window 8, 3 sliding + 1 full layer) and its conversion."""
  hf = hf_reference.random_hf_model(hf_reference.hf_config(), seed=0)
  path = hf_reference.save_hf_checkpoint(hf, str(tmp_path_factory.mktemp("ckpt") / "hf"))
  return hf, convert.load_hf(path), path


def _prompts(lengths, seed=0, vocab=128):
  rng = np.random.default_rng(seed)
  return [rng.integers(2, vocab, size=n).tolist() for n in lengths]


def _cut(seq, stops):
  for i, t in enumerate(seq):
    if t in stops:
      return seq[:i + 1]
  return seq


# The tests share shapes and settings where they can: each distinct one costs a compile.
HF_LENGTHS, HF_NEW = [5, 12, 30, 1], 24  # several left-padding layouts; prompt + new > window 8


def test_cached_greedy_matches_full_recompute(hf_pair):
  _, model, _ = hf_pair
  prompts, n = _prompts(HF_LENGTHS), HF_NEW
  got = sampling.generate(model, prompts, [str(i) for i in range(len(prompts))],
                          sampling.SamplingParams(max_new_tokens=n), pad_id=PAD, eos_id=EOS)
  forward = jax.jit(lambda ids, mask: model(ids, mask).logits[:, -1])
  seqs = [list(p) for p in prompts]
  for _ in range(n):  # fixed-width left-padded recomputation: one compile
    ids, mask = sampling.left_pad(seqs, 64, PAD)
    nxt = np.asarray(jnp.argmax(forward(ids, mask), axis=-1))
    for s, t in zip(seqs, nxt):
      s.append(int(t))
  assert [g[0] for g in got] == [_cut(s[len(p):], {EOS}) for s, p in zip(seqs, prompts)]


def _hf_greedy(hf, prompts, n):
  width = max(len(p) for p in prompts)
  ids, mask = sampling.left_pad(prompts, width, PAD)
  with torch.inference_mode():
    out = hf.generate(torch.as_tensor(ids, dtype=torch.long), attention_mask=torch.as_tensor(mask),
                      do_sample=False, max_new_tokens=n, eos_token_id=EOS, pad_token_id=PAD)
  return [_cut(row[width:].tolist(), {EOS}) for row in out]


def test_greedy_matches_hf_generate(hf_pair):
  hf, model, _ = hf_pair
  prompts, n = _prompts(HF_LENGTHS), HF_NEW
  want = _hf_greedy(hf, prompts, n)
  got = sampling.generate(model, prompts, [str(i) for i in range(len(prompts))],
                          sampling.SamplingParams(max_new_tokens=n), pad_id=PAD, eos_id=EOS)
  assert [g[0] for g in got] == want


def test_sampling_is_independent_of_batching(hf_pair):
  _, model, _ = hf_pair
  prompts, ids = _prompts([4, 9, 25, 13], seed=5), ["q0", "q1", "q2", "q3"]
  params = sampling.SamplingParams(temperature=1.0, top_p=0.95, num_samples=3, max_new_tokens=16, seed=7)
  full = sampling.generate(model, prompts, ids, params, pad_id=PAD)
  order = [2, 0, 3, 1]
  shuffled = sampling.generate(model, [prompts[i] for i in order], [ids[i] for i in order], params,
                               pad_id=PAD)
  assert [shuffled[order.index(i)] for i in range(4)] == full
  alone = sampling.generate(model, prompts[1:2], ids[1:2], params, pad_id=PAD, batch_multiple=2)
  assert alone[0] == full[1]  # other batch size, padding width and neighbours
  assert len({tuple(s) for s in full[2]}) == 3  # samples of one question differ
  other_seed = sampling.generate(model, prompts, ids, dataclasses.replace(params, seed=8), pad_id=PAD)
  assert other_seed != full


def test_continuous_with_a_shared_prefix_matches_static(hf_pair):
  """5 decode slots for 4 x 3 rows, refilled as rows stop, 2 decode steps per chunk, the prompts'
  common start run once (`share_prefix`): every (question, sample) gets the static sampler's tokens.
  (The keys are split differently from the static sampler's, so only rounding could differ; here
  nothing does. Without the shared prefix, tests/test_labels.py compares the two on GSM8K.)"""
  _, model, _ = hf_pair
  common = _prompts([6], seed=9)[0]
  prompts, ids = [common + p for p in _prompts([4, 9, 25, 13], seed=5)], ["q0", "q1", "q2", "q3"]
  params = sampling.SamplingParams(temperature=1.0, top_p=0.95, num_samples=3, max_new_tokens=16, seed=7)
  want = sampling.generate(model, prompts, ids, params, pad_id=PAD, eos_id=EOS)
  got = continuous.generate(model, prompts, ids, params, pad_id=PAD, eos_id=EOS, rows=5, chunk=2, share_prefix=True,
                            prefix_len=len(common))
  assert got == want
  assert {len(s) for w in want for s in w} != {16}  # some rows stopped early (EOS), others ran on


def test_continuous_run_that_fits_at_once_is_the_static_one(hf_pair, monkeypatch):
  """Every row fits in the slots: nothing to refill, so the static program runs (no admit) and
  the tokens are the static sampler's."""
  _, model, _ = hf_pair
  prompts, ids = _prompts([4, 9, 25], seed=3), ["q0", "q1", "q2"]
  params = sampling.SamplingParams(temperature=1.0, top_p=0.95, num_samples=2, max_new_tokens=12, seed=3)
  want = sampling.generate(model, prompts, ids, params, pad_id=PAD, eos_id=EOS)
  monkeypatch.setattr(continuous, "_admit_jit", None)  # would fail if the engine admitted anything
  assert continuous.generate(model, prompts, ids, params, pad_id=PAD, eos_id=EOS, rows=6) == want


def test_kv_budget_sizes_the_engine(hf_pair):
  """`cache_bytes` is what the engine allocates, and `slots_for_budget` the most rows that fit."""
  _, model, _ = hf_pair
  spec = continuous.EngineSpec(12, 3, 32, 0, 16, (EOS,), ((5, 6),), False, True, True, PAD, None)
  carry = jax.eval_shape(lambda: continuous._empty(model, spec))
  allocated = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(carry))
  want = kv_budget.cache_bytes(model.config, rows=12, group=3, prompt_tokens=32, max_new_tokens=16)
  assert abs(allocated - want) <= 12 * 64
  cfg = olmo3.olmo3_7b(dtype="bfloat16")  # no GQA: 512 KiB of K/V per token
  per_row = kv_budget.cache_bytes(cfg, rows=1, group=1, prompt_tokens=768, max_new_tokens=512)
  assert per_row // (768 + 511) // 1024 == 512
  rows = kv_budget.slots_for_budget(cfg, 40, prompt_tokens=768, max_new_tokens=512, multiple=4)
  fits = lambda r: kv_budget.cache_bytes(cfg, rows=r, group=1, prompt_tokens=768, max_new_tokens=512) <= 40 * 2**30
  assert rows % 4 == 0 and fits(rows) and not fits(rows + 4) and rows == 64
  shared = kv_budget.slots_for_budget(cfg, 40, prompt_tokens=128, max_new_tokens=512, prefix_tokens=640)
  assert shared > 1.9 * rows  # GSM8K's 8-shot prefix run once: about twice the slots


def test_continuous_plan():
  assert continuous.plan(16, 8, rows=256) == (128, 8)  # all fits: a prompt slot per prompt, as static
  assert continuous.plan(100, 9, rows=256) == (256, 1)  # refills: one row per slot
  assert continuous.plan(100, 9, rows=256, multiple=8) == (256, 1)
  assert continuous.plan(3, 1, rows=256, multiple=8) == (8, 1)
  assert continuous.common_prefix_length([[1] * 40 + [2], [1] * 40 + [3, 4]]) == 40
  assert continuous.common_prefix_length([[1] * 20 + [2], [1] * 20 + [3]]) == 0  # under 32
  assert continuous.common_prefix_length([[1] * 40, [1] * 50]) == 39  # every prompt keeps a token


def test_tiny_top_p_is_greedy(hf_pair):
  _, model, _ = hf_pair
  prompts, ids = _prompts([7, 15], seed=3), ["s0", "s1"]
  greedy = sampling.generate(model, prompts, ids, sampling.SamplingParams(max_new_tokens=20), pad_id=PAD)
  nucleus = sampling.generate(model, prompts, ids, sampling.SamplingParams(
      temperature=0.7, top_p=1e-6, num_samples=2, max_new_tokens=20), pad_id=PAD)
  assert all(s == g[0] for n, g in zip(nucleus, greedy) for s in n)


def test_stop_tokens_and_sequences_end_rows(hf_pair):
  _, model, _ = hf_pair
  prompts, ids = _prompts([7, 15], seed=3), ["s0", "s1"]
  free = sampling.generate(model, prompts, ids, sampling.SamplingParams(max_new_tokens=20), pad_id=PAD)
  row = free[0][0]
  stop_tok, stop_seq = row[5], tuple(row[8:10])
  got = sampling.generate(model, prompts, ids, sampling.SamplingParams(
      max_new_tokens=20, stop_token_ids=(stop_tok,), stop_sequences=(stop_seq,)), pad_id=PAD)
  for f, g in zip(free, got):
    f = f[0]
    end = len(f)
    if stop_tok in f:
      end = f.index(stop_tok) + 1
    for i in range(1, len(f)):
      if tuple(f[i - 1:i + 1]) == stop_seq:
        end = min(end, i + 1)
        break
    assert g[0] == f[:end]
  assert len(got[0][0]) <= 6


def test_stop_sequence_longer_than_the_budget(hf_pair):
  """A stop sequence that cannot fit in max_new_tokens is ignored, not a crash inside the jit."""
  _, model, _ = hf_pair
  prompts, ids = _prompts([7, 15], seed=3), ["s0", "s1"]
  free = sampling.generate(model, prompts, ids, sampling.SamplingParams(max_new_tokens=4), pad_id=PAD)
  got = sampling.generate(model, prompts, ids, sampling.SamplingParams(
      max_new_tokens=4, stop_sequences=((2, 3, 4, 5, 6, 7),)), pad_id=PAD)
  assert got == free


def test_sharded_matches_single_device(hf_pair):
  if jax.device_count() < 8:
    pytest.skip("needs 8 (fake) devices")
  _, model, path = hf_pair
  mesh = sharding_lib.make_mesh("data=2,fsdp=2,tensor=2")
  sharded_model = convert.load_hf(path, mesh=mesh)
  prompts, ids = _prompts([4, 9, 25, 13], seed=5), ["q0", "q1", "q2", "q3"]
  params = sampling.SamplingParams(temperature=1.0, top_p=0.95, num_samples=3, max_new_tokens=16, seed=7)
  single = sampling.generate(model, prompts, ids, params, pad_id=PAD)  # compiled by the batching test
  sharded = sampling.generate(sharded_model, prompts, ids, params, pad_id=PAD, mesh=mesh)
  assert sharded == single


@pytest.mark.parametrize("kw", [dict(top_p=0.0), dict(top_p=1.5), dict(temperature=-1.0),
                                dict(num_samples=0), dict(max_new_tokens=0), dict(stop_sequences=((),))])
def test_invalid_params(kw):
  with pytest.raises(ValueError):
    sampling.SamplingParams(**kw)


def test_prompt_bucket():
  assert [sampling.prompt_bucket(n) for n in (1, 16, 17, 64, 65, 128, 129, 300)] == \
      [16, 16, 32, 64, 128, 128, 256, 384]


def test_inverse_cdf_follows_the_distribution():
  rng = np.random.default_rng(0)
  probs = rng.random(200) * (rng.random(200) < 0.3)  # many zero-mass tokens, spread over blocks
  u = 1.0 - jax.random.uniform(jax.random.key(0), (20000,))
  picks = np.asarray(sampling._inverse_cdf(jnp.broadcast_to(jnp.asarray(probs, jnp.float32), (20000, 200)), u))
  freq = np.bincount(picks, minlength=200) / len(picks)
  assert freq[probs == 0].sum() == 0
  np.testing.assert_allclose(freq, probs / probs.sum(), atol=0.01)


def test_top_p_mask_matches_sorted_rule():
  logits = jax.random.normal(jax.random.key(1), (8, 300)) * 3
  probs = np.asarray(jax.nn.softmax(logits, axis=-1))
  for top_p in (0.3, 0.9, 0.999):
    got = np.asarray(sampling._top_p_mask(jnp.asarray(probs), top_p))
    order = np.argsort(-probs, axis=-1)
    ahead = np.cumsum(np.take_along_axis(probs, order, -1), -1) - np.take_along_axis(probs, order, -1)
    want = np.zeros_like(got)
    np.put_along_axis(want, order, ahead < top_p, -1)
    np.testing.assert_array_equal(got, want)
