"""Feature extraction: pooling parity with the full forward, hybrid NLL, sharding, the store."""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import olmo3, sharding
from probing import features as F
from probing.features import extraction as extract_lib
from probing.features import store


class Tok:
  """Bytes-ish tokenizer: enough for extraction (encode, pad_id, eos_id, fingerprint)."""
  pad_id, eos_id, vocab_size = 0, 1, 256

  def encode(self, s):
    return [2 + (ord(ch) % 250) for ch in s]

  def fingerprint(self):
    return "test-bytes"


@dataclasses.dataclass
class Q:
  id: str
  prompt: str
  reference: str


LAYERS = (0, 2, 4)
SPEC = F.ExtractSpec(layers=LAYERS, token_layer=3, token_cap=8, hybrid=True, reference_eos=True,
                     batch_size=4, length_bucket=16)


def questions(n=11, seed=0):
  rng = np.random.default_rng(seed)
  return [Q(f"q{i}", "".join(rng.choice(list("abcdef0123+="), rng.integers(3, 30))),
            "".join(rng.choice(list("xyz"), rng.integers(1, 9)))) for i in range(n)]


@pytest.fixture(scope="module")
def model():
  return olmo3.init_model(olmo3.tiny(), seed=0)


@pytest.fixture(scope="module")
def extracted(model):
  return F.extract(model, Tok(), questions(), SPEC, checkpoint="ck", checkpoint_step=7, task="t")


def test_pooled_features_and_nll_match_full_forward(model, extracted):
  """One right-padded full forward (logits and every hidden state; causal, so trailing pads are
  invisible and positions start at 0) against the left-padded extraction."""
  tok, a = Tok(), extracted.arrays
  seqs = [(tok.encode(q.prompt), tok.encode(q.reference) + [tok.eos_id]) for q in questions()]
  width = max(len(p) + len(r) for p, r in seqs)
  ids = np.zeros((len(seqs), width), np.int32)
  for j, (p, r) in enumerate(seqs):
    ids[j, :len(p) + len(r)] = p + r
  out = model(jnp.asarray(ids))
  hs = [np.asarray(h) for h in out.hidden_states]
  logp = np.asarray(jax.nn.log_softmax(out.logits.astype(jnp.float32), axis=-1), np.float64)
  for j, (p, r) in enumerate(seqs):
    for li, layer in enumerate(LAYERS):
      np.testing.assert_allclose(a["last"][j, li], hs[layer][j, len(p) - 1], atol=1e-5)
      np.testing.assert_allclose(a["mean"][j, li], hs[layer][j, :len(p)].mean(0), atol=1e-5)
    n = min(8, len(p))
    assert a["tokens_mask"][j].sum() == n and a["tokens_mask"][j, -n:].all()
    np.testing.assert_allclose(a["tokens"][j, -n:], hs[3][j, len(p) - n:len(p)], atol=1e-5)
    assert (a["tokens"][j, :-n] == 0).all()
    nll = -sum(logp[j, len(p) - 1 + i, t] for i, t in enumerate(r))
    np.testing.assert_allclose(a["nll_sum"][j], nll, rtol=1e-5)
    np.testing.assert_allclose(a["nll_mean"][j], nll / len(r), rtol=1e-5)
    assert a["ref_len"][j] == len(r) and a["prompt_len"][j] == len(p)


def test_hybrid_prompt_states_equal_plain_extraction(model, extracted):
  plain = F.extract(model, Tok(), questions(), dataclasses.replace(SPEC, hybrid=False))
  assert "nll_sum" not in plain.arrays
  for k in ("last", "mean", "tokens", "tokens_mask"):
    np.testing.assert_allclose(plain.arrays[k], extracted.arrays[k], atol=1e-5, err_msg=k)


def test_extract_tasks_equals_per_task_extraction(model, extracted):
  """Several tasks in one length-sorted pass (shared ids across tasks) give each task's features."""
  qs = {"t": questions(), "u": questions(7, seed=1)}  # ids q0..q6 occur in both tasks
  sets = F.extract_tasks(model, Tok(), qs, SPEC, checkpoint="ck", checkpoint_step=7,
                         prompt_format_hashes={"u": "fmt-u"})
  assert [s.meta["task"] for s in sets] == ["t", "u"] and sets[1].meta["prompt_format_hash"] == "fmt-u"
  alone = F.extract(model, Tok(), qs["u"], SPEC, task="u")
  for got, want in ((sets[0], extracted), (sets[1], alone)):
    assert got.question_ids == want.question_ids
    for k, v in want.arrays.items():
      np.testing.assert_allclose(got.arrays[k], v, atol=1e-5, err_msg=k)
  with pytest.raises(F.FeatureError, match="no questions"):
    F.extract_tasks(model, Tok(), {"t": []}, SPEC)


def test_shared_prefix_extraction_equals_full_prompts(model):
  """Few-shot prompts: the common prefix runs once; every feature equals the full-prompt pass."""
  shots = "a1+b2=c3;" * 5  # 45 shared characters, past the sliding window (8)
  qs = [Q(f"p{i}", shots + q.prompt, q.reference) for i, q in enumerate(questions())]
  shared = F.extract(model, Tok(), qs, SPEC)
  full = F.extract(model, Tok(), qs, dataclasses.replace(SPEC, share_prefix=False))
  # Every row keeps its last token_cap (8) prompt tokens, which cuts the 45 shared ones here.
  shortest = min(len(q.prompt) for q in qs)
  assert shared.meta["shared_prefix_tokens"] == shortest - 8 < 45 and full.meta["shared_prefix_tokens"] == 0
  mesh = sharding.make_mesh("data=2,fsdp=2,tensor=2")
  sharded = F.extract(sharding.shard_model(olmo3.init_model(olmo3.tiny(), seed=0), mesh), Tok(), qs,
                      dataclasses.replace(SPEC, batch_size=8), mesh=mesh)
  for k, v in full.arrays.items():
    np.testing.assert_allclose(shared.arrays[k], v, atol=2e-5, rtol=1e-5, err_msg=k)
    np.testing.assert_allclose(sharded.arrays[k], v, atol=2e-5, rtol=1e-5, err_msg=k)
  plain = dataclasses.replace(SPEC, token_layer=None, hybrid=False, pooling=("mean",))
  assert extract_lib.shared_prefix_length([Tok().encode(q.prompt) for q in qs], plain) == 45
  assert extract_lib.shared_prefix_length([Tok().encode(q.prompt) for q in questions()], plain) == 0


def test_prefix_cache_continues_the_prefix_in_every_block(model):
  """Model level: states of rows continuing a cached prefix equal those of prefix + row, with
  left padding and several query blocks (the window slides across the prefix boundary)."""
  rng = np.random.default_rng(3)
  prefix = rng.integers(2, 250, 21)
  rows = [rng.integers(2, 250, n) for n in (5, 9, 2)]
  cache = model.prefix_cache(jnp.asarray(prefix[None]), layers=(0, 4))
  assert cache.length == 21 and cache.kv[0][0].shape[1] == 8 and cache.kv[3][0].shape[1] == 21
  t = max(len(r) for r in rows)
  ids = np.zeros((len(rows), t), np.int32)
  valid = np.zeros((len(rows), t), bool)
  for j, r in enumerate(rows):
    ids[j, t - len(r):], valid[j, t - len(r):] = r, True
  got = model(jnp.asarray(ids), jnp.asarray(valid), prefix=cache, query_block=4)
  for j, r in enumerate(rows):
    whole = model(jnp.asarray(np.concatenate([prefix, r])[None]))
    np.testing.assert_allclose(np.asarray(got.logits[j, t - len(r):]), np.asarray(whole.logits[0, 21:]),
                               atol=2e-5)
    np.testing.assert_allclose(np.asarray(got.hidden_states[2][j, t - len(r):]),
                               np.asarray(whole.hidden_states[2][0, 21:]), atol=2e-5)


def test_sharded_extraction_matches_single_device(extracted):
  mesh = sharding.make_mesh("data=2,fsdp=2,tensor=2")
  m = sharding.shard_model(olmo3.init_model(olmo3.tiny(), seed=0), mesh)
  got = F.extract(m, Tok(), questions(), dataclasses.replace(SPEC, batch_size=8), mesh=mesh)
  for k, v in extracted.arrays.items():
    np.testing.assert_allclose(got.arrays[k], v, atol=1e-5, err_msg=k)


def test_store_round_trip_and_provenance(model, extracted, tmp_path):
  fs = F.extract(model, Tok(), questions(), SPEC, checkpoint="ck", checkpoint_step=7, task="t",
                 prompt_format_hash="pf", out_dir=tmp_path / "s")
  names = sorted(os.listdir(tmp_path / "s"))
  assert names == ["features.json", "features.npz"]  # shards merged and removed
  meta = json.loads((tmp_path / "s" / "features.json").read_text())
  for key in ("checkpoint", "checkpoint_step", "task", "question_ids", "layers", "pooling", "dtype",
              "tokenizer_hash", "prompt_format_hash", "code_version", "hidden_size"):
    assert key in meta, key
  assert meta["tokenizer_hash"] == store._sha("test-bytes") and meta["layers"] == list(LAYERS)
  back = F.load_features(tmp_path / "s")
  assert back.question_ids == [q.id for q in questions()]
  for k, v in extracted.arrays.items():
    np.testing.assert_array_equal(back.arrays[k], fs.arrays[k])
    np.testing.assert_allclose(back.arrays[k], v, atol=1e-6)
  assert back.pooled("last+mean", (2,)).shape == (11, 1, 128)
  calls = []
  F.extract(model, Tok(), questions(), SPEC, checkpoint="ck", checkpoint_step=7, task="t",
            prompt_format_hash="pf", out_dir=tmp_path / "s", on_batch=lambda i, n: calls.append(i))
  assert not calls  # a complete store with the same fingerprint is reused
  # a store from before the fingerprint left out the process count is the same extraction too
  legacy = dict(meta, fingerprint=store.fingerprint(meta, 1), num_processes=1)
  (tmp_path / "s" / "features.json").write_text(json.dumps(legacy))
  F.extract(model, Tok(), questions(), SPEC, checkpoint="ck", checkpoint_step=7, task="t",
            prompt_format_hash="pf", out_dir=tmp_path / "s", on_batch=lambda i, n: calls.append(i))
  assert not calls and legacy["fingerprint"] != meta["fingerprint"]
  with pytest.raises(F.FeatureError, match="different extraction"):
    F.extract(model, Tok(), questions(), SPEC, checkpoint="other", out_dir=tmp_path / "s")


def test_resume_after_kill_and_atomic_writes(model, extracted, tmp_path, monkeypatch):
  out = tmp_path / "s"

  def killer(i, n):
    if i == 1:
      raise KeyboardInterrupt  # killed after two batches were written
  with pytest.raises(KeyboardInterrupt):
    F.extract(model, Tok(), questions(), SPEC, out_dir=out, on_batch=killer)
  assert sorted(os.listdir(out / "shards")) == ["n00001-b000000.npz", "n00001-b000001.npz", "spec.json"]
  assert not (out / "features.json").exists()
  real_savez = np.savez

  def failing_savez(f, **arrays):  # dies mid-write of the next shard
    real_savez(f, **arrays)
    raise OSError("disk full")
  monkeypatch.setattr(np, "savez", failing_savez)
  with pytest.raises(OSError, match="disk full"):
    F.extract(model, Tok(), questions(), SPEC, out_dir=out)
  assert sorted(os.listdir(out / "shards")) == ["n00001-b000000.npz", "n00001-b000001.npz", "spec.json"]
  monkeypatch.setattr(np, "savez", real_savez)
  # Shards hold rows by question id: a batch another process count wrote serves as well.
  os.replace(out / "shards" / "n00001-b000001.npz", out / "shards" / "n00002-b000000.npz")
  calls = []
  fs = F.extract(model, Tok(), questions(), SPEC, out_dir=out, on_batch=lambda i, n: calls.append(i))
  assert calls == [2]  # only the unfinished batch ran
  for k, v in extracted.arrays.items():
    np.testing.assert_allclose(fs.arrays[k], v, atol=1e-6, err_msg=k)


def test_bad_extraction_input(model, tmp_path):
  with pytest.raises(F.FeatureError, match=r"layers \[9\] out of range"):
    F.extract(model, Tok(), questions(), F.ExtractSpec(layers=(9,)), out_dir=tmp_path / "a")
  with pytest.raises(F.FeatureError, match="'q1'.*no tokens"):
    F.extract(model, Tok(), [Q("q0", "ab", "x"), Q("q1", "", "x")], SPEC, out_dir=tmp_path / "b")
  with pytest.raises(F.FeatureError, match=r"duplicate question ids \['q0'\]"):
    F.extract(model, Tok(), [Q("q0", "ab", "x"), Q("q0", "cd", "x")], SPEC, out_dir=tmp_path / "c")
  with pytest.raises(F.FeatureError, match="'q0'.*needs a non-empty reference"):
    F.extract(model, Tok(), [Q("q0", "ab", "")], SPEC, out_dir=tmp_path / "d")
  assert not any((tmp_path / d).exists() for d in "abcd")
  with pytest.raises(F.FeatureError, match="no features.json"):
    F.load_features(tmp_path)
