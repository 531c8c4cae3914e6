"""Conversion round trips, orbax checkpoints, and bad-input handling of load_hf / launch.convert."""
import json
import os
import struct
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.numpy import load_file, save_file

import hf_reference as H
from models import checkpoint, convert, sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("hf") / "tiny")
  H.save_hf_checkpoint(H.random_hf_model(H.hf_config(vocab_size=100), seed=7), path)
  return path


@pytest.fixture(scope="module")
def sharded_hf_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("hf") / "sharded")
  H.save_hf_checkpoint(H.random_hf_model(H.hf_config(vocab_size=100), seed=8), path, max_shard_size="60KB")
  assert os.path.exists(os.path.join(path, convert.INDEX_FILE))
  return path


def _params(model):
  return jax.tree.leaves(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _ids():
  return np.random.default_rng(0).integers(2, 100, (2, 16))


def test_sharded_checkpoint_loads_like_single_file(hf_dir, sharded_hf_dir):
  a, b = convert.load_hf(hf_dir), convert.load_hf(sharded_hf_dir)
  assert a.config.padded_vocab_size == 128 and a.config.vocab_size == 100
  logits = H.hf_forward(transformers.Olmo3ForCausalLM.from_pretrained(sharded_hf_dir).eval(), _ids())[0]
  np.testing.assert_allclose(np.asarray(b(jnp.asarray(_ids())).logits), logits, atol=1e-4)
  assert b(jnp.asarray(_ids())).logits.shape[-1] == 100  # vocab padding is invisible
  assert len(_params(a)) == len(_params(b))


def test_hf_flax_hf_round_trip(hf_dir, tmp_path):
  model = convert.load_hf(hf_dir)
  out = str(tmp_path / "out")
  convert.save_hf(model, out, max_shard_bytes=40_000)
  with open(os.path.join(out, convert.INDEX_FILE)) as f:
    assert len(set(json.load(f)["weight_map"].values())) > 1
  original = load_file(os.path.join(hf_dir, "model.safetensors"))
  rewritten = {}
  for name in os.listdir(out):
    if name.endswith(".safetensors"):
      rewritten.update(load_file(os.path.join(out, name)))
  assert set(original) == set(rewritten)
  for key in original:
    np.testing.assert_array_equal(original[key], rewritten[key], err_msg=key)
  hf_reloaded = transformers.Olmo3ForCausalLM.from_pretrained(out).eval()
  want = H.hf_forward(transformers.Olmo3ForCausalLM.from_pretrained(hf_dir).eval(), _ids())[0]
  np.testing.assert_allclose(H.hf_forward(hf_reloaded, _ids())[0], want, atol=1e-6)


def test_orbax_round_trip_identical_params_across_meshes(hf_dir, tmp_path):
  model = convert.load_hf(hf_dir, mesh=sharding.make_mesh("fsdp=2,tensor=4"))
  path = str(tmp_path / "ckpt")
  checkpoint.save(path, model, {"source": hf_dir, "revision": "stage1-step0"})
  meta = checkpoint.read_metadata(path)
  assert meta["source"] == hf_dir and meta["revision"] == "stage1-step0"
  assert meta["config"]["vocab_size"] == 100 and meta["dtype"] == "float32" and meta["code_version"]
  for spec in (None, "data=2,fsdp=2,tensor=2", "tensor=8"):
    restored = checkpoint.load(path, mesh=None if spec is None else sharding.make_mesh(spec))
    for x, y in zip(_params(model), _params(restored)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  with pytest.raises(FileExistsError):
    checkpoint.save(path, model)


# ----------------------------------------------------------------------------- bad input


def _copy(src, dst):
  os.makedirs(dst)
  for name in os.listdir(src):
    with open(os.path.join(src, name), "rb") as f, open(os.path.join(dst, name), "wb") as g:
      g.write(f.read())
  return dst


def _edit_tensors(path, fn):
  f = os.path.join(path, "model.safetensors")
  tensors = load_file(f)
  fn(tensors)
  save_file(tensors, f, metadata={"format": "pt"})


def _truncate(path):
  f = os.path.join(path, "model.safetensors")
  size = os.path.getsize(f)
  with open(f, "r+b") as g:
    g.truncate(size // 2)


def _corrupt_header(path):
  f = os.path.join(path, "model.safetensors")
  with open(f, "r+b") as g:
    g.write(struct.pack("<Q", 10 ** 12))


def _missing_shard(path):
  names = sorted(n for n in os.listdir(path) if n.endswith(".safetensors"))
  os.remove(os.path.join(path, names[-1]))
  return names[-1]


BAD = {
    "truncated": (False, _truncate, "model.safetensors"),
    "corrupt_header": (False, _corrupt_header, "model.safetensors"),
    "missing_shard": (True, _missing_shard, "missing"),
    "wrong_shape": (False, lambda p: _edit_tensors(
        p, lambda t: t.__setitem__("model.layers.1.mlp.up_proj.weight", np.zeros((95, 64), np.float32))),
        "model.layers.1.mlp.up_proj.weight"),
    "missing_tensor": (False, lambda p: _edit_tensors(p, lambda t: t.pop("model.layers.2.self_attn.k_norm.weight")),
                       "model.layers.2.self_attn.k_norm.weight"),
    "unexpected_tensor": (False, lambda p: _edit_tensors(
        p, lambda t: t.__setitem__("model.layers.0.self_attn.rotary.inv_freq", np.zeros(4, np.float32))),
        "model.layers.0.self_attn.rotary.inv_freq"),
    "config_missing_field": (False, lambda p: H.rewrite_config(p, lambda d: d.pop("hidden_size") and d),
                             "hidden_size"),
    "nan_weights": (False, lambda p: _edit_tensors(
        p, lambda t: t["model.layers.3.mlp.down_proj.weight"].__setitem__((0, 0), np.nan)),
        "model.layers.3.mlp.down_proj.weight"),
    "inf_weights": (False, lambda p: _edit_tensors(
        p, lambda t: t["model.norm.weight"].__setitem__(1, np.inf)), "model.norm.weight"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_checkpoint_clear_error_and_no_output(case, hf_dir, sharded_hf_dir, tmp_path):
  sharded, breaker, culprit = BAD[case]
  bad = _copy(sharded_hf_dir if sharded else hf_dir, str(tmp_path / "bad"))
  name = breaker(bad)
  culprit = name if case == "missing_shard" else culprit
  with pytest.raises(ValueError, match=None) as err:
    convert.load_hf(bad)
  assert culprit in str(err.value), str(err.value)
  out = str(tmp_path / "out")
  proc = subprocess.run([sys.executable, "-m", "launch.convert", f"--hf_dir={bad}", f"--out_dir={out}",
                         "--dtype=float32"], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert culprit in proc.stderr, proc.stderr[-2000:]
  assert not os.path.exists(out)
  assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]


def test_launch_convert_writes_checkpoint(hf_dir, tmp_path):
  """The weights, and the tokenizer and HF config beside them, so later steps find the tokenizer."""
  import shutil
  src = str(tmp_path / "hf")
  shutil.copytree(hf_dir, src)
  with open(os.path.join(src, "tokenizer.json"), "w") as f:
    f.write('{"stand-in": true}')
  out = str(tmp_path / "ok")
  proc = subprocess.run([sys.executable, "-m", "launch.convert", f"--hf_dir={src}", f"--out_dir={out}",
                         "--dtype=bfloat16", "--mesh=fsdp=-1"], cwd=ROOT, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "params=" in proc.stdout
  restored = checkpoint.load(out)
  assert restored.config.param_dtype == "bfloat16"
  assert open(os.path.join(out, "tokenizer.json")).read() == '{"stand-in": true}'
  assert os.path.exists(os.path.join(out, "hf_config.json"))
  assert restored.blocks[0].attn.q_kernel[...].dtype == jnp.bfloat16
  # orbax's chatter is muted by default and comes back with --verbosity=1
  assert "orbax" not in proc.stderr
  loud = subprocess.run([sys.executable, "-m", "launch.convert", f"--hf_dir={src}", f"--out_dir={tmp_path / 'loud'}",
                         "--dtype=bfloat16", "--verbosity=1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert loud.returncode == 0 and "orbax" in loud.stderr, loud.stderr[-2000:]
