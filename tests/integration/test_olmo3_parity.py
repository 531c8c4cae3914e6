"""Parity of our Flax OLMo3 with transformers.Olmo3ForCausalLM (fp32, tiny random configs)."""
import json

import jax.numpy as jnp
import numpy as np
import pytest

import hf_reference as H
from models import convert, olmo3

pytestmark = pytest.mark.slow  # against transformers on CPU; still part of `make test`

TOL = 1e-4
YARN = dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=16, beta_fast=32.0, beta_slow=1.0)


def _layouts(batch, length, kind, rng):
  mask = np.ones((batch, length), np.int64)
  if kind == "right":
    for b in range(1, batch):
      mask[b, length - 3 * b:] = 0
  elif kind == "left":
    for b in range(1, batch):
      mask[b, :3 * b] = 0
  return mask


def _compare(ours, hf_model, ids, mask, position_ids=None):
  logits, hidden = H.hf_forward(hf_model, ids, mask, position_ids)
  out = ours(jnp.asarray(ids), None if mask is None else jnp.asarray(mask))
  valid = np.ones(ids.shape, bool) if mask is None else mask.astype(bool)
  assert len(out.hidden_states) == len(hidden) == ours.config.num_hidden_layers + 1
  np.testing.assert_allclose(np.asarray(out.logits)[valid], logits[valid], atol=TOL, rtol=0)
  for i, (a, b) in enumerate(zip(out.hidden_states[:-1], hidden[:-1])):
    np.testing.assert_allclose(np.asarray(a)[valid], b[valid], atol=TOL, rtol=0, err_msg=f"hidden {i}")
  # HF's last hidden state is post-final-norm; ours is the raw residual.
  last = np.asarray(olmo3.rms_norm(out.hidden_states[-1], ours.final_norm[...], ours.config.rms_norm_eps))
  np.testing.assert_allclose(last[valid], hidden[-1][valid], atol=TOL, rtol=0)
  assert np.abs(np.asarray(out.hidden_states[-1])[valid] - hidden[-1][valid]).max() > 1e-2


CASES = {
    # name: (hf config overrides, padding, batch, length)
    "gqa_window_right_pad": (dict(num_key_value_heads=2), "right", 3, 24),
    "mha_left_pad": (dict(num_key_value_heads=4), "left", 3, 24),
    "mqa_yarn": (dict(num_key_value_heads=1, max_position_embeddings=64, rope_scaling=YARN), "none", 2, 40),
    "yarn_left_pad_all_full": (dict(num_key_value_heads=2, max_position_embeddings=64, rope_scaling=YARN,
                                    layer_types=["full_attention", "sliding_attention", "full_attention",
                                                 "full_attention"]), "left", 2, 20),
    "six_layers_hd16": (dict(num_hidden_layers=6, hidden_size=48, num_attention_heads=3,
                             num_key_value_heads=3, sliding_window=5), "right", 2, 17),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_parity_with_transformers(name, tmp_path):
  overrides, padding, batch, length = CASES[name]
  hf_model = H.random_hf_model(H.hf_config(**overrides), seed=len(name))
  H.save_hf_checkpoint(hf_model, str(tmp_path))
  ours = convert.load_hf(str(tmp_path))
  rng = np.random.default_rng(0)
  ids = rng.integers(2, hf_model.config.vocab_size, (batch, length))
  mask = None if padding == "none" else _layouts(batch, length, padding, rng)
  position_ids = None
  if padding == "left":  # what HF generate() passes; our default from the mask
    position_ids = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  _compare(ours, hf_model, ids, mask, position_ids)


def _legacy(d):
  full = d["rope_parameters"]["full_attention"]
  theta = full["rope_theta"]
  d.pop("rope_parameters")
  d["rope_theta"] = theta
  if full["rope_type"] != "default":
    d["rope_scaling"] = {k: v for k, v in full.items() if k != "rope_theta"}
  return d


def test_legacy_rope_scaling_form(tmp_path):
  hf_model = H.random_hf_model(H.hf_config(max_position_embeddings=64, rope_scaling=YARN), seed=3)
  H.save_hf_checkpoint(hf_model, str(tmp_path))
  H.rewrite_config(str(tmp_path), _legacy)
  with open(tmp_path / "config.json") as f:
    assert "rope_scaling" in json.load(f)
  import transformers
  reloaded = transformers.Olmo3ForCausalLM.from_pretrained(str(tmp_path)).eval()
  ours = convert.load_hf(str(tmp_path))
  assert ours.config.rope_full.rope_type == "yarn" and ours.config.rope_sliding.rope_type == "default"
  ids = np.random.default_rng(1).integers(2, 128, (2, 30))
  _compare(ours, reloaded, ids, None)


def test_flat_rope_parameters_mean_yarn_on_full_layers_only(tmp_path):
  """No transformers version reads the flat form right: compare with the nested-form model."""
  hf_model = H.random_hf_model(H.hf_config(max_position_embeddings=64, rope_scaling=YARN), seed=4)
  H.save_hf_checkpoint(hf_model, str(tmp_path))

  def flat(d):
    d["rope_parameters"] = dict(d["rope_parameters"]["full_attention"])
    return d
  H.rewrite_config(str(tmp_path), flat)
  ours = convert.load_hf(str(tmp_path))
  assert ours.config.rope_sliding.rope_type == "default"
  ids = np.random.default_rng(2).integers(2, 128, (2, 30))
  _compare(ours, hf_model, ids, None)


def test_bf16_forward_close_to_fp32(tmp_path):
  """bf16 params + compute: logits within 0.1 abs (documented tolerance) of fp32, tiny model."""
  hf_model = H.random_hf_model(H.hf_config(), seed=5)
  H.save_hf_checkpoint(hf_model, str(tmp_path))
  ids = jnp.asarray(np.random.default_rng(3).integers(2, 128, (2, 24)))
  f32 = convert.load_hf(str(tmp_path))(ids).logits
  b16 = convert.load_hf(str(tmp_path), dtype=jnp.bfloat16)(ids).logits
  assert b16.dtype == jnp.bfloat16
  err = float(jnp.abs(b16.astype(jnp.float32) - f32).max())
  scale = float(jnp.abs(f32).max())
  assert err < 0.1 and err / scale < 0.05, (err, scale)
