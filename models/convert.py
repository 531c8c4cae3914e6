"""HF safetensors <-> Flax NNX OLMo3, streamed tensor by tensor.

One explicit name table (`param_table`) maps every HF tensor to one of our params with a pair
of transforms. Loading reads one tensor at a time with `safe_open`, checks it (shape, finite),
transforms and casts it, and `device_put`s it straight into its target sharding, so host memory
never holds a second copy of the model. Unmatched keys fail in both directions.
"""
from __future__ import annotations

import dataclasses
import json
import os
import struct
from typing import Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from models import io, multihost
from models import sharding as sharding_lib
from models.olmo3 import Block, Olmo3, Olmo3Config, abstract_model, as_dtype, dtype_name

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class CheckpointError(ValueError):
  """A HF checkpoint that cannot be converted; the message names the file and tensor."""


@dataclasses.dataclass(frozen=True)
class ParamRule:
  hf_key: str
  path: tuple  # path of the nnx Variable in our model's state
  hf_shape: tuple[int, ...]
  to_flax: Callable[[np.ndarray], np.ndarray]
  to_hf: Callable[[np.ndarray], np.ndarray]
  read_rows: int | None = None  # allocate this many rows and read the tensor into the first ones


def param_table(config: Olmo3Config) -> list[ParamRule]:
  """The HF <-> Flax name table with per-key transforms (HF linear weights are [out, in])."""
  c = config
  d, f, h, kv, hd = c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim
  v, vp = c.vocab_size, c.padded_vocab_size

  def identity(x):
    return x

  # Embedding and LM head are read straight into [Vp, D] buffers whose extra rows stay zero.
  rules = [
      ParamRule("model.embed_tokens.weight", ("embedding",), (v, d), identity, lambda x: x[:v], read_rows=vp),
      ParamRule("lm_head.weight", ("lm_head",), (v, d), np.transpose, lambda x: x.T[:v], read_rows=vp),
      ParamRule("model.norm.weight", ("final_norm",), (d,), identity, identity),
  ]

  def column(n_out, heads):  # [heads*hd, D] <-> [D, heads, hd]
    return (lambda x: x.T.reshape(d, heads, hd)), (lambda x: x.reshape(d, n_out).T)

  for i in range(c.num_hidden_layers):
    hf = f"model.layers.{i}."
    ours = ("blocks", i)
    q_in, q_out = column(h * hd, h)
    k_in, k_out = column(kv * hd, kv)
    rules += [
        ParamRule(hf + "self_attn.q_proj.weight", ours + ("attn", "q_kernel"), (h * hd, d), q_in, q_out),
        ParamRule(hf + "self_attn.k_proj.weight", ours + ("attn", "k_kernel"), (kv * hd, d), k_in, k_out),
        ParamRule(hf + "self_attn.v_proj.weight", ours + ("attn", "v_kernel"), (kv * hd, d), k_in, k_out),
        ParamRule(hf + "self_attn.o_proj.weight", ours + ("attn", "o_kernel"), (d, h * hd),
                  lambda x: x.T.reshape(h, hd, d), lambda x: x.reshape(h * hd, d).T),
        ParamRule(hf + "self_attn.q_norm.weight", ours + ("attn", "q_norm"), (h * hd,),
                  lambda x: x.reshape(h, hd), lambda x: x.reshape(h * hd)),
        ParamRule(hf + "self_attn.k_norm.weight", ours + ("attn", "k_norm"), (kv * hd,),
                  lambda x: x.reshape(kv, hd), lambda x: x.reshape(kv * hd)),
        ParamRule(hf + "mlp.gate_proj.weight", ours + ("mlp", "gate_kernel"), (f, d), np.transpose, np.transpose),
        ParamRule(hf + "mlp.up_proj.weight", ours + ("mlp", "up_kernel"), (f, d), np.transpose, np.transpose),
        ParamRule(hf + "mlp.down_proj.weight", ours + ("mlp", "down_kernel"), (d, f), np.transpose, np.transpose),
        ParamRule(hf + "post_attention_layernorm.weight", ours + ("post_attention_norm",), (d,), identity, identity),
        ParamRule(hf + "post_feedforward_layernorm.weight", ours + ("post_feedforward_norm",), (d,),
                  identity, identity),
    ]
  return rules


# ----------------------------------------------------------------------------- reading


def _tensor_files(path: str) -> dict[str, str]:
  """HF key -> safetensors file, from the index (sharded) or the single file's header."""
  index = os.path.join(path, INDEX_FILE)
  if os.path.exists(index):
    try:
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
      raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from None
    files = {k: os.path.join(path, fname) for k, fname in weight_map.items()}
    for fname in sorted(set(files.values())):
      if not os.path.exists(fname):
        raise CheckpointError(f"{index}: lists shard {os.path.basename(fname)}, which is missing")
    return files
  single = os.path.join(path, SINGLE_FILE)
  if not os.path.exists(single):
    raise CheckpointError(f"{path}: neither {INDEX_FILE} nor {SINGLE_FILE} found")
  with _open(single) as f:
    return {k: single for k in f.keys()}


def _open(fname: str):
  try:
    return safe_open(fname, framework="np")
  except (SafetensorError, OSError, ValueError) as e:
    raise CheckpointError(f"{fname}: cannot read safetensors file ({e})") from None


def _check_keys(files: Mapping[str, str], rules: list[ParamRule], path: str) -> None:
  expected = {r.hf_key for r in rules}
  missing = sorted(expected - set(files))
  unexpected = sorted(set(files) - expected)
  if missing:
    raise CheckpointError(f"{path}: missing tensor(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
  if unexpected:
    raise CheckpointError(f"{path}: unexpected tensor(s) {unexpected[:5]}"
                          f"{' ...' if len(unexpected) > 5 else ''} (in {os.path.basename(files[unexpected[0]])})")


def _state_leaf(state: nnx.State, path: tuple):
  node = state
  for p in path:
    node = node[p]
  return node


_NUMPY_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
                 "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
                 "BOOL": np.bool_}


def _header(fname: str) -> tuple[int, dict]:
  """(offset of the data section, header dict) of a safetensors file."""
  with open(fname, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    return 8 + n, json.loads(f.read(n))


def _read_into(f, base: int, info: dict, rows: int | None, fname: str, key: str) -> np.ndarray:
  """Reads one tensor's bytes with readinto into a fresh buffer (optionally with extra zero rows).

  Unlike reading through a memory map, the file's pages never join our resident set, so peak
  host memory stays near the converted model plus one tensor.
  """
  if info["dtype"] not in _NUMPY_DTYPES:
    raise CheckpointError(f"{fname}: tensor {key} has unsupported dtype {info['dtype']}")
  dtype, shape = np.dtype(_NUMPY_DTYPES[info["dtype"]]), tuple(info["shape"])
  begin, end = info["data_offsets"]
  if end - begin != int(np.prod(shape)) * dtype.itemsize:
    raise CheckpointError(f"{fname}: tensor {key} spans {end - begin} bytes, shape {shape} needs "
                          f"{int(np.prod(shape)) * dtype.itemsize}")
  out = (np.zeros((rows,) + shape[1:], dtype) if rows and rows > shape[0] else np.empty(shape, dtype))
  f.seek(base + begin)
  got = f.readinto(memoryview(out[:shape[0]].reshape(-1).view(np.uint8)))
  if got != end - begin:
    raise CheckpointError(f"{fname}: truncated while reading tensor {key}")
  return out


def _load_tensor(f, base: int, header: dict, fname: str, rule: ParamRule, dtype, target) -> jax.Array:
  """Reads, checks, transforms and places one tensor."""
  array = _read_into(f, base, header[rule.hf_key], rule.read_rows, fname, rule.hf_key)
  where = f"{os.path.basename(fname)}: tensor {rule.hf_key}"
  shape = tuple(header[rule.hf_key]["shape"])
  if shape != rule.hf_shape:
    raise CheckpointError(f"{where} has shape {shape}, expected {rule.hf_shape} from config.json")
  for chunk in np.array_split(array.reshape(array.shape[0], -1), max(1, array.size // (1 << 22))):
    if not np.isfinite(chunk).all():
      raise CheckpointError(f"{where} contains NaN or inf")
  value = rule.to_flax(array).astype(dtype, copy=False)
  if isinstance(target, jax.sharding.Sharding) and not target.is_fully_addressable:
    return multihost.put_global(value, target)  # every process read the same tensor: no equality check
  return jax.device_put(value, target, may_alias=True)


def load_hf(path: str | os.PathLike, *, dtype=jnp.float32, mesh: jax.sharding.Mesh | None = None,
            compute_dtype=None, on_tensor: Callable[[int, int, str, int], None] | None = None) -> Olmo3:
  """Loads a HF OLMo3 checkpoint dir (single-file or sharded) into an NNX `Olmo3`.

  Params are cast to `dtype` and placed directly into their sharding on `mesh` (one device when
  None). `on_tensor(i, n, hf_key, nbytes)` reports progress. Raises `CheckpointError` (a
  ValueError) naming the file and tensor for truncated/corrupt files, missing shards, wrong
  shapes, missing or unexpected tensors, and NaN/inf weights.
  """
  path = os.fspath(path)
  dtype = as_dtype(dtype)
  config = Olmo3Config.from_hf(path, param_dtype=dtype_name(dtype),
                               dtype=dtype_name(as_dtype(compute_dtype or dtype)))
  rules = param_table(config)
  files = _tensor_files(path)
  _check_keys(files, rules, path)
  graphdef, abstract_state = nnx.split(abstract_model(config))
  shardings = sharding_lib.param_shardings(abstract_state, mesh)
  leaves: dict[tuple, jax.Array] = {}
  # Shard by shard: only one file's memory map is open at a time, so the resident set stays near
  # the converted model plus one shard.
  by_file: dict[str, list[ParamRule]] = {}
  for rule in rules:
    by_file.setdefault(files[rule.hf_key], []).append(rule)
  done = 0
  for fname in sorted(by_file):
    with _open(fname):  # validates the file (header, size) before we read from it
      base, header = _header(fname)
    with open(fname, "rb") as f:
      for rule in by_file[fname]:
        leaves[rule.path] = _load_tensor(f, base, header, fname, rule, dtype, _state_leaf(shardings, rule.path))
        done += 1
        if on_tensor is not None:
          on_tensor(done, len(rules), rule.hf_key, leaves[rule.path].nbytes)

  def fill(path, variable):
    key = tuple(int(p) if isinstance(p, int) else p for p in path)
    if key not in leaves:
      raise CheckpointError(f"internal: no HF tensor mapped to param {'/'.join(map(str, key))}")
    return variable.replace(leaves[key])
  state = nnx.State.from_flat_path(
      [(p, fill(p, v)) for p, v in nnx.to_flat_state(abstract_state)])
  return nnx.merge(graphdef, state)


# What a converted checkpoint keeps from its HF directory besides the weights (under these names).
SIDE_FILES = {"tokenizer.json": "tokenizer.json", "tokenizer_config.json": "tokenizer_config.json",
              "special_tokens_map.json": "special_tokens_map.json",
              "generation_config.json": "generation_config.json", "config.json": "hf_config.json"}


def side_files(path: str | os.PathLike) -> dict[str, str]:
  """{name in our checkpoint: file} of the SIDE_FILES present in a HF directory."""
  path = os.fspath(path)
  return {ours: os.path.join(path, hf) for hf, ours in SIDE_FILES.items() if os.path.isfile(os.path.join(path, hf))}


def read_blocks(path: str | os.PathLike, config: Olmo3Config, layers) -> dict[int, nnx.State]:
  """float32 nnx States of the given blocks, reading only their tensors from a HF directory."""
  path = os.fspath(path)
  files = _tensor_files(path)
  states = {}
  for i in layers:
    block = Block(config, i, rngs=nnx.Rngs(0))
    flat = dict(nnx.to_flat_state(nnx.state(block, nnx.Param)))
    for rule in param_table(config):
      if rule.path[:2] != ("blocks", i):
        continue
      if rule.hf_key not in files:
        raise CheckpointError(f"{path}: missing tensor {rule.hf_key}")
      with _open(files[rule.hf_key]) as f:
        value = rule.to_flax(f.get_tensor(rule.hf_key)).astype(np.float32)
      flat[rule.path[2:]] = flat[rule.path[2:]].replace(jnp.asarray(value))
    states[i] = nnx.State.from_flat_path(list(flat.items()))
  return states


def iter_hf_tensors(model: Olmo3) -> Iterator[tuple[str, np.ndarray]]:
  """(HF key, numpy array in HF layout) for every tensor, one at a time."""
  state = nnx.state(model)
  for rule in param_table(model.config):
    value = np.asarray(jax.device_get(_state_leaf(state, rule.path).get_value()))
    yield rule.hf_key, np.ascontiguousarray(rule.to_hf(value))


def save_hf(model: Olmo3, path: str | os.PathLike, *, max_shard_bytes: int = 2 * 1024 ** 3,
            dtype=None) -> None:
  """Writes a HF checkpoint dir (sharded safetensors + index + config.json) atomically."""
  path = os.fspath(path)
  if os.path.exists(path) and os.listdir(path):
    raise FileExistsError(f"{path}: exists and is not empty")
  with io.staged_dir(path, replace=True) as tmp:
    out_dtype = None if dtype is None else as_dtype(dtype)
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for key, array in iter_hf_tensors(model):
      if out_dtype is not None:
        array = array.astype(out_dtype)
      if shards[-1] and size + array.nbytes > max_shard_bytes:
        shards.append({})
        size = 0
      shards[-1][key] = array
      size += array.nbytes
    n = len(shards)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
      fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
      save_file(shard, os.path.join(tmp, fname), metadata={"format": "pt"})
      for key, array in shard.items():
        weight_map[key] = fname
        total += array.nbytes
    with open(os.path.join(tmp, INDEX_FILE), "w") as f:
      json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    config = model.config.to_hf()
    if out_dtype is not None:
      config["torch_dtype"] = config["dtype"] = dtype_name(out_dtype)
    with open(os.path.join(tmp, "config.json"), "w") as f:
      json.dump(config, f, indent=2)


def summarize(model: Olmo3) -> dict:
  """Param count (HF layout) and bytes on device (padding included)."""
  state = nnx.state(model, nnx.Param)
  nbytes = sum(x.nbytes for x in jax.tree.leaves(state))
  return {"params": model.config.num_params(), "bytes": int(nbytes)}

