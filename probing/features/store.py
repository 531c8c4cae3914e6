"""The on-disk feature store: one directory per (checkpoint, task), version `FORMAT`.

  features.json                   sidecar, written last (its presence marks a complete store):
                                  format, checkpoint, checkpoint_step, task, question_ids (store
                                  order), layers, pooling, token_layer, token_cap, hybrid,
                                  reference_eos, dtype, hidden_size, tokenizer_hash, shared_prefix_tokens,
                                  prompt_format_hash, code_version, num_processes (how many
                                  processes ran it; not part of the fingerprint), files,
                                  truncated_prompts, truncated_references, timing, created.
  features.npz                    the rows (`files` lists it): `question_id` (str), `last`,
                                  `mean`, `tokens`, `tokens_mask`, `prompt_len`, and in hybrid
                                  mode `nll_sum`, `nll_mean`, `ref_len`. Float arrays are in
                                  `dtype` (float32 or float16). `load_features` merges the files
                                  `files` lists (older stores have one per process) into sidecar order.
  shards/                         while running: `spec.json` (store fingerprint) and one
                                  `nPPPPP-bYYYYYY.npz` per finished batch of a PPPPP-process run,
                                  rows keyed by `question_id`. A killed run resumes from them with
                                  any process count; they are merged and removed at the end.
Every file is written to a temporary name and `os.replace`d, so readers never see a partial file.
In a multi-process run process 0 alone reads and writes the store (the others get its rows by
collectives), so hosts need not share a disk.
The writer is `probing.features.extraction`.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import Mapping, Sequence

import numpy as np
from etils import epath

from models import io, version
from probing import tokenizer as tokenizer_lib

FORMAT = "olmo-probe-features/1"
SIDECAR = "features.json"
STORE_FILE = "features.npz"
POOLINGS = ("last", "mean")


class FeatureError(ValueError):
  """Bad extraction input or a feature store that cannot be read; the message names the culprit."""


@dataclasses.dataclass
class FeatureSet:
  """Extracted rows of one (checkpoint, task): `meta` is the sidecar, `arrays` the columns."""
  meta: dict
  arrays: dict[str, np.ndarray]

  @property
  def question_ids(self) -> list[str]:
    return list(self.meta["question_ids"])

  @property
  def layers(self) -> tuple[int, ...]:
    return tuple(self.meta["layers"])

  def __len__(self) -> int:
    return len(self.meta["question_ids"])

  def pooled(self, pooling: str, layers: Sequence[int]) -> np.ndarray:
    """[N, len(layers), F] float32; pooling 'last', 'mean' or 'last+mean' (F = 2D)."""
    where = f"features of {self.meta.get('checkpoint')!r}/{self.meta.get('task')!r}"
    missing = [i for i in layers if i not in self.layers]
    if missing:
      raise FeatureError(f"{where}: layers {missing} were not extracted (store has {list(self.layers)})")
    parts = []
    for p in pooling.split("+"):
      if p not in self.arrays:
        raise FeatureError(f"{where}: pooling {p!r} was not extracted (store has "
                           f"{[k for k in POOLINGS if k in self.arrays]})")
      idx = [self.layers.index(i) for i in layers]
      parts.append(self.arrays[p][:, idx].astype(np.float32))
    return np.concatenate(parts, axis=-1)


# ----------------------------------------------------------------------------- provenance


def _sha(text: str) -> str:
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def behaviour_hash(tokenizer) -> str:
  """`probing.tokenizer.tokenizer_hash` for tokenizers with a fingerprint, else a hash of how it
  encodes a fixed text (for duck-typed tokenizers of callers)."""
  if callable(getattr(tokenizer, "fingerprint", None)):
    return tokenizer_lib.tokenizer_hash(tokenizer)
  probe = "The quick brown fox: 12+34=46; def f(x):\n\treturn x ** 2"
  return _sha(json.dumps([type(tokenizer).__name__, getattr(tokenizer, "vocab_size", None),
                          getattr(tokenizer, "eos_id", None), getattr(tokenizer, "pad_id", None),
                          list(tokenizer.encode(probe))]))


# Modules whose source determines what a store holds; their text (not their file paths) is hashed.
_FEATURE_MODULES = ("probing.features.extraction", "probing.features.forward", "models.olmo3", "models.config")


@functools.lru_cache(maxsize=1)
def extraction_code_version() -> str:
  """`models.version.code_version()` + a hash of the source text of the modules that compute
  features (so uncommitted edits still change it, and moving a file does not)."""
  import importlib
  import inspect
  digest = hashlib.sha256()
  for name in _FEATURE_MODULES:
    digest.update(name.encode() + b"\0" + inspect.getsource(importlib.import_module(name)).encode())
  return f"{version.code_version()}+src.{digest.hexdigest()[:12]}"


# ----------------------------------------------------------------------------- store I/O


def write_npz(path: str, arrays: Mapping[str, np.ndarray]) -> None:
  """One feature file, atomically."""
  io.replace_from_tmp(path, lambda f: np.savez(f, **arrays), mode="wb")




def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
  try:
    with epath.Path(path).open("rb") as f, np.load(f, allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except (OSError, ValueError, EOFError) as e:
    raise FeatureError(f"{path}: unreadable feature file ({e})") from None


def load_features(path: str | os.PathLike) -> FeatureSet:
  """Reads a complete store (a local or `gs://` path), merging its files into sidecar order."""
  path = epath.Path(path)
  side = path / SIDECAR
  if not side.exists():
    raise FeatureError(f"{path}: not a complete feature store (no {SIDECAR})")
  meta = json.loads(side.read_text())
  if meta.get("format") != FORMAT:
    raise FeatureError(f"{side}: format {meta.get('format')!r}, expected {FORMAT!r}")
  parts = [read_npz(path / name) for name in meta["files"]]
  merged = {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}
  ids = [str(q) for q in merged.pop("question_id")]
  where = {q: i for i, q in enumerate(ids)}
  missing = [q for q in meta["question_ids"] if q not in where]
  if missing or len(ids) != len(meta["question_ids"]):
    raise FeatureError(f"{path}: files hold {len(ids)} rows; the sidecar lists "
                       f"{len(meta['question_ids'])} questions (missing e.g. {missing[:3]})")
  order = np.asarray([where[q] for q in meta["question_ids"]], np.int64)
  return FeatureSet(meta, {k: v[order] for k, v in merged.items()})


def find_stores(root: str | os.PathLike) -> list[str]:
  """Every complete store directory under root (sorted)."""
  root = epath.Path(root)
  if not root.exists():
    return []
  return sorted(os.fspath(d) for d, _, files in root.walk() if SIDECAR in files)


def store_dir(root: str | os.PathLike, checkpoint: str, task: str) -> str:
  return os.path.join(os.fspath(root), checkpoint, task)



def load_feature_sets(root: str | os.PathLike, *, tasks: Sequence[str] | None = None,
                      checkpoints: Sequence[str] | None = None) -> list[FeatureSet]:
  """Every complete store under root, optionally only some tasks / checkpoints."""
  sets = []
  for d in find_stores(root):
    meta = json.loads((epath.Path(d) / SIDECAR).read_text())
    if (tasks and meta.get("task") not in tasks) or (checkpoints and meta.get("checkpoint") not in checkpoints):
      continue
    sets.append(load_features(d))
  if not sets:
    raise FeatureError(f"{os.fspath(root)}: no complete feature stores"
                       + (f" for tasks {list(tasks)}" if tasks else "")
                       + (f" and checkpoints {list(checkpoints)}" if checkpoints else ""))
  return sets


# ----------------------------------------------------------------------------- the writer's resume state


_FINGERPRINT_KEYS = ("checkpoint", "checkpoint_step", "task", "question_ids", "spec", "tokenizer_hash",
                     "prompt_format_hash")


def fingerprint(meta: dict, num_processes: int | None = None) -> str:
  """What a store holds, hashed. Stores written before it left the process count out hashed
  that too: `num_processes` recomputes theirs."""
  keys = {k: meta[k] for k in _FINGERPRINT_KEYS}
  if num_processes is not None:
    keys["num_processes"] = num_processes
  return _sha(json.dumps(keys))


def finished_meta(out_dir: str, plan_meta: dict, overwrite: bool) -> dict | None:
  """The sidecar when `out_dir` already holds this extraction, complete (it is written last)."""
  side = epath.Path(out_dir) / SIDECAR
  if not side.exists() or overwrite:
    return None
  meta = json.loads(side.read_text())
  want = plan_meta["fingerprint"]
  if meta.get("fingerprint") == want or (
      meta.get("num_processes") is not None and meta.get("fingerprint") == fingerprint(plan_meta,
                                                                                          meta["num_processes"])):
    return meta
  raise FeatureError(f"{out_dir}: holds a different extraction (fingerprint {meta.get('fingerprint')} != "
                     f"{want}); pass overwrite=True (--config.data.overwrite=True) or use another directory")


def shard_path(shard_dir: str, pc: int, g: int) -> str:
  return os.path.join(shard_dir, f"n{pc:05d}-b{g:06d}.npz")


def read_shards(shard_dir: str, want: str, overwrite: bool) -> dict[str, np.ndarray]:
  """Rows of finished batches (process 0 of the writer, `probing.features.extraction`, reads them):
  `shards/spec.json` pins the fingerprint `want`, so another extraction's shards never mix in;
  batches of any process count serve (rows carry their ids)."""
  shards = epath.Path(shard_dir)
  if overwrite and shards.exists():
    shards.rmtree()
  shards.mkdir(parents=True, exist_ok=True)
  spec_file = shards / "spec.json"
  if not spec_file.exists():
    io.write_json(spec_file, {"fingerprint": want})
    return {}
  old = json.loads(spec_file.read_text()).get("fingerprint")
  if old != want:
    raise FeatureError(f"{shard_dir}: partial shards of a different extraction (fingerprint {old} != "
                       f"{want}); delete them or pass overwrite=True (--config.data.overwrite=True)")
  parts = [read_npz(p) for p in sorted(shards.iterdir(), key=lambda p: p.name)
           if p.name.endswith(".npz") and ".tmp" not in p.name]
  parts = [p for p in parts if len(p.get("question_id", ()))]
  return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]} if parts else {}
