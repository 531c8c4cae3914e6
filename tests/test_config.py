"""Olmo3Config parsing/validation and forward-pass semantics (padding, packing)."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
import transformers

from models import olmo3


def test_presets_and_derived_fields():
  c = olmo3.olmo3_7b(yarn=True)
  assert c.head_dim == 128 and c.padded_vocab_size == 100352
  assert c.layer_types.count("full_attention") == 8 and c.layer_types[-1] == "full_attention"
  inv, scale = c.rope_full.inv_freq_and_scale(128, c.max_position_embeddings)
  assert abs(scale - 1.2079441541679836) < 1e-12 and inv.shape == (64,)
  assert c.rope_sliding.inv_freq_and_scale(128, 65536)[1] == 1.0


def test_to_hf_loads_in_transformers_to_same_config(tmp_path):
  c = olmo3.tiny(rope_full=olmo3.RopeConfig(theta=10000.0, rope_type="yarn", factor=4.0,
                                            original_max_position_embeddings=64))
  with open(tmp_path / "config.json", "w") as f:
    json.dump(c.to_hf(), f)
  hf = transformers.Olmo3Config.from_pretrained(str(tmp_path))
  assert hf.rope_parameters["full_attention"]["rope_type"] == "yarn"
  assert hf.rope_parameters["sliding_attention"]["rope_type"] == "default"
  assert hf.rms_norm_eps == 1e-6 and hf.layer_types == list(c.layer_types)
  back = olmo3.Olmo3Config.from_hf(str(tmp_path))
  assert back.replace(param_dtype="float32") == c
  assert olmo3.Olmo3Config.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def _base():
  return olmo3.tiny().to_hf()


@pytest.mark.parametrize("field", ["hidden_size", "num_hidden_layers", "rms_norm_eps", "vocab_size"])
def test_missing_required_field_is_named(field):
  d = _base()
  d.pop(field)
  with pytest.raises(ValueError, match=field):
    olmo3.Olmo3Config.from_hf(d)


@pytest.mark.parametrize("edit,culprit", [
    (dict(num_attention_heads=3), "num_attention_heads"),
    (dict(layer_types=["sliding_attention"] * 3), "layer_types"),
    (dict(layer_types=["sliding_attention"] * 3 + ["global"]), "layer_types[3]"),
    (dict(sliding_window=0), "sliding_window"),
    (dict(rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                          "full_attention": {"rope_type": "yarn", "rope_theta": 1e4}}), "factor"),
    (dict(model_type="llama"), "model_type"),
    (dict(tie_word_embeddings=True), "tie_word_embeddings"),
])
def test_invalid_config_names_field(edit, culprit):
  d = _base()
  d.update(edit)
  with pytest.raises(ValueError, match=culprit.replace("[", r"\[").replace("]", r"\]")):
    olmo3.Olmo3Config.from_hf(d)


def test_eps_and_theta_come_from_the_file():
  d = _base()
  d["rms_norm_eps"] = 3e-5
  d.pop("rope_parameters")
  d["rope_theta"] = 1234.0
  c = olmo3.Olmo3Config.from_hf(d)
  assert c.rms_norm_eps == 3e-5 and c.rope_full.theta == c.rope_sliding.theta == 1234.0


@pytest.fixture(scope="module")
def model():
  return olmo3.init_model(olmo3.tiny(), seed=3)


def test_left_and_right_padding_match_unpadded(model):
  ids = np.random.default_rng(0).integers(2, 256, (1, 14))
  want = model(jnp.asarray(ids))
  pad = np.zeros((1, 5), ids.dtype)
  left = model(jnp.asarray(np.concatenate([pad, ids], 1)), jnp.asarray([[0] * 5 + [1] * 14]))
  right = model(jnp.asarray(np.concatenate([ids, pad], 1)), jnp.asarray([[1] * 14 + [0] * 5]))
  np.testing.assert_allclose(np.asarray(left.logits)[:, 5:], np.asarray(want.logits), atol=1e-5)
  np.testing.assert_allclose(np.asarray(right.logits)[:, :14], np.asarray(want.logits), atol=1e-5)


def test_packed_segments_equal_separate_sequences(model):
  rng = np.random.default_rng(1)
  a, b = rng.integers(2, 256, (1, 11)), rng.integers(2, 256, (1, 13))
  packed = np.concatenate([a, b], 1)
  seg = np.array([[1] * 11 + [2] * 13])
  out = model(jnp.asarray(packed), segment_ids=jnp.asarray(seg))
  np.testing.assert_allclose(np.asarray(out.logits)[:, :11], np.asarray(model(jnp.asarray(a)).logits), atol=1e-5)
  np.testing.assert_allclose(np.asarray(out.logits)[:, 11:], np.asarray(model(jnp.asarray(b)).logits), atol=1e-5)


def test_query_blocking_matches_dense(model):
  ids = jnp.asarray(np.random.default_rng(2).integers(2, 256, (2, 40)))
  dense = model(ids, query_block=64).logits
  blocked = model(ids, query_block=8).logits
  np.testing.assert_allclose(np.asarray(blocked), np.asarray(dense), atol=1e-5)
