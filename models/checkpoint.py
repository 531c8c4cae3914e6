"""Orbax checkpoints of an `Olmo3`, behind two functions: `save` and `load`.

Layout of a checkpoint dir: `params/` (an orbax StandardCheckpointer tree of the model's
params) and `metadata.json` (config, dtype, source path and revision, code version, plus what
the caller adds). A local dir is written under a temporary name and renamed, so a killed save
leaves no half-written checkpoint; on an object store (`gs://`) metadata.json is written last
and marks it complete. `load` restores onto any mesh: each param lands straight in
the sharding the rules table gives it on that mesh, whatever mesh it was saved from.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from models import convert, io, multihost
from models import sharding as sharding_lib
from models.olmo3 import Olmo3, Olmo3Config, abstract_model, dtype_name
from models.version import code_version

METADATA_FILE = "metadata.json"
PARAMS_DIR = "params"


def save(path: str | os.PathLike, model: Olmo3, metadata: Mapping[str, Any] | None = None, *,
         files: Mapping[str, str] | None = None) -> str:
  """Saves `model` to `path` (which must not exist) with `metadata` merged into metadata.json.

  `files` ({name in the checkpoint: source path}) are copied in too, e.g. the tokenizer files of
  the HF directory a model was converted from (`convert.side_files`).
  """
  path = io.absolute(path)
  if epath.Path(path).exists():
    raise FileExistsError(f"{path}: checkpoint already exists")
  if io.is_remote(path):
    # An object store has no directory rename: orbax commits params/ itself, and metadata.json,
    # written last, is what makes the directory a checkpoint to every reader (and the watcher).
    _write(path, model, metadata, files)
    return path
  if jax.process_count() == 1:
    with io.staged_dir(path) as tmp:
      _write(tmp, model, metadata, files)
    return path
  # Multi-process: orbax's save is collective, so every process stages under the same name;
  # process 0 writes the rest and renames it into place.
  tmp = os.path.join(os.path.dirname(path), f".tmp-{os.path.basename(path)}-multiprocess")
  if multihost.is_writer():
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed save
    os.makedirs(tmp)
  _write(tmp, model, metadata, files)
  if multihost.is_writer():
    os.replace(tmp, path)
  return path


def _write(tmp: str, model: Olmo3, metadata, files) -> None:
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(tmp, PARAMS_DIR), params)
  checkpointer.wait_until_finished()
  if not multihost.is_writer():
    return
  meta = {
      "format": "olmo3-nnx-orbax/1",
      "config": model.config.to_dict(),
      "dtype": model.config.param_dtype,
      "code_version": code_version(),
      "source": None,
      "revision": None,
  }
  meta.update(dict(metadata or {}))
  for name, src in (files or {}).items():
    epath.Path(src).copy(epath.Path(tmp) / name)
  io.write_json(os.path.join(tmp, METADATA_FILE), meta, indent=2, default=str)


def read_metadata(path: str | os.PathLike) -> dict:
  p = epath.Path(path) / METADATA_FILE
  if not p.exists():
    raise FileNotFoundError(f"{path}: not an olmo3 orbax checkpoint (no {METADATA_FILE})")
  return json.loads(p.read_text())


def is_checkpoint(path: str | os.PathLike) -> bool:
  return (epath.Path(path) / METADATA_FILE).exists()


def load(path: str | os.PathLike, *, mesh: jax.sharding.Mesh | None = None, dtype=None) -> Olmo3:
  """Restores a checkpoint written by `save`, placing params per the rules table on `mesh`."""
  path = io.absolute(path)
  meta = read_metadata(path)
  config = Olmo3Config.from_dict(meta["config"])
  if dtype is not None:
    config = config.replace(param_dtype=dtype_name(dtype), dtype=dtype_name(dtype))
  graphdef, abstract_state = nnx.split(abstract_model(config))
  params_abstract = nnx.state(nnx.merge(graphdef, abstract_state), nnx.Param)
  shardings = sharding_lib.param_shardings(params_abstract, mesh)
  target = jax.tree.map(
      lambda v, s: jax.ShapeDtypeStruct(v.get_value().shape, v.get_value().dtype, sharding=s),
      params_abstract, shardings, is_leaf=lambda x: isinstance(x, nnx.Variable))
  target = nnx.to_pure_dict(target)
  restored = ocp.StandardCheckpointer().restore(epath.Path(path) / PARAMS_DIR, target)
  model = nnx.merge(graphdef, abstract_state)
  nnx.replace_by_pure_dict(params_abstract, restored)
  nnx.update(model, params_abstract)
  return model


def config_of(path: str | os.PathLike) -> Olmo3Config:
  """The Olmo3Config of an orbax checkpoint of ours or a HF directory, without loading weights."""
  if is_checkpoint(path):
    return Olmo3Config.from_dict(read_metadata(path)["config"])
  return Olmo3Config.from_hf(os.fspath(path))


def load_any(path: str | os.PathLike, *, mesh: jax.sharding.Mesh | None = None, dtype=None) -> tuple[Olmo3, dict]:
  """(model, metadata) from an orbax checkpoint of ours or a HF safetensors directory.

  HF directories get the metadata `{"format": "hf"}`. A path that is neither raises
  FileNotFoundError naming it; a checkpoint that does not load raises ValueError with the cause.
  """
  path = os.fspath(path)
  if not path or not epath.Path(path).is_dir():
    raise FileNotFoundError(f"checkpoint {path!r} is not a directory")
  try:
    if is_checkpoint(path):
      return load(path, mesh=mesh, dtype=dtype), read_metadata(path)
    if (epath.Path(path) / "config.json").exists():
      return convert.load_hf(path, dtype=dtype or "float32", mesh=mesh), {"format": "hf"}
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"checkpoint {path} does not load: {e}") from e
  raise FileNotFoundError(f"{path}: neither an orbax checkpoint ({METADATA_FILE}) nor a HF dir (config.json)")
