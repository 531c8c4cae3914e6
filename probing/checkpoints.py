"""One door for a checkpoint: `open_checkpoint(path)` -> model, tokenizer, record id and step.

A checkpoint is an orbax checkpoint of ours (`models.checkpoint`) or a HF directory
(config.json + safetensors); file formats are `models/`' business. Its record id ("checkpoint"
in every label, feature and prediction record) and its monotone training step are resolved
here once, so labels, features and predictions of the same directory always join:
  * id: the given name, else the id in our metadata, else the directory name;
  * step: the given step, else the step in our metadata, else read from the id (or the HF
    revision our conversion recorded): `stageK-stepN`
    (OLMo3's revision names, whose step counters restart each stage) maps to one monotone step,
    N plus the lengths of stages 1..K-1 (`OLMO3_7B_STAGE_LENGTHS` unless told otherwise);
    a plain `step<N>` / `step_N` is N.
Cheap checks (directory, tokenizer, vocabulary size) run before the weights are read.
"""
from __future__ import annotations

import dataclasses
import os
import re

from models import checkpoint as model_checkpoint
from probing import tokenizer as tokenizer_lib


# OLMo3-7B's stage lengths in optimizer steps: stage 1 ends at 1,413,814; stage 2 adds 47,684.
OLMO3_7B_STAGE_LENGTHS = (1_413_814, 47_684)


class CheckpointError(ValueError):
  """A checkpoint that cannot be opened as asked; the message names the path and the cause."""


@dataclasses.dataclass
class Checkpoint:
  """An opened checkpoint: the model, its tokenizer, its record id and training step."""
  model: object
  tokenizer: tokenizer_lib.Tokenizer
  name: str
  step: int | None
  path: str
  meta: dict


def metadata_of(path: str | os.PathLike) -> dict:
  """Our metadata.json for an orbax checkpoint, `{"format": "hf"}` for a HF directory."""
  path = os.fspath(path)
  if not path or not os.path.isdir(path):
    raise CheckpointError(f"checkpoint {path!r} is not a directory")
  if model_checkpoint.is_checkpoint(path):
    return model_checkpoint.read_metadata(path)
  if os.path.exists(os.path.join(path, "config.json")):
    return {"format": "hf"}
  raise CheckpointError(f"{path}: neither an orbax checkpoint (metadata.json) nor a HF dir (config.json)")


def checkpoint_id(path: str | os.PathLike, *, name: str | None = None, step: int | None = None,
                  meta: dict | None = None) -> tuple[str, int | None]:
  """(record id, monotone step or None) of a checkpoint directory, without reading weights."""
  path = os.path.abspath(os.fspath(path))
  meta = metadata_of(path) if meta is None else meta
  name = name or meta.get("checkpoint") or os.path.basename(path.rstrip("/"))
  if step is None and meta.get("checkpoint_step") is not None:
    step = meta["checkpoint_step"]
  for source in (name, meta.get("revision") or ""):  # launch.convert records the HF revision
    if step is None:
      step = step_from_name(source)
  return name, None if step is None else int(step)


def step_from_name(name: str, stage_lengths=OLMO3_7B_STAGE_LENGTHS) -> int | None:
  """The monotone training step a checkpoint name states, or None.

  'stage2-step2000' -> 1,413,814 + 2,000 (stage 1's length added); 'step_000120' -> 120.
  A stage past the known lengths raises: its offset cannot be told.
  """
  m = re.search(r"stage(\d+)[_-]step[_-]?(\d+)", name)
  if m:
    stage, step = int(m.group(1)), int(m.group(2))
    if not 1 <= stage <= len(stage_lengths) + 1:
      raise CheckpointError(f"checkpoint {name!r}: stage {stage}, but only the lengths of stages "
                            f"1..{len(stage_lengths)} are known; pass its monotone step explicitly")
    return sum(stage_lengths[:stage - 1]) + step
  m = re.search(r"step[_-]?(\d+)", name)
  return int(m.group(1)) if m else None


def open_checkpoint(path: str | os.PathLike, *, mesh=None, dtype=None, tokenizer=None, name: str | None = None,
                    step: int | None = None, require_step: bool = True) -> Checkpoint:
  """Opens an orbax checkpoint of ours or a HF directory, placing params on `mesh`.

  `tokenizer`: a Tokenizer, or a setting for `probing.tokenizer.from_spec` (None or '' = the
  checkpoint's own). With `require_step`, a checkpoint whose step cannot be told raises
  (pass `step`: OLMo3's stage counters restart, so directory names are not always monotone).
  """
  if not os.fspath(path):
    raise CheckpointError("no checkpoint given (a HF directory or an orbax checkpoint of ours)")
  path = os.path.abspath(os.fspath(path))
  meta = metadata_of(path)
  ck_name, ck_step = checkpoint_id(path, name=name, step=step, meta=meta)
  if require_step and ck_step is None:
    raise CheckpointError(f"checkpoint {ck_name!r}: cannot infer its training step; pass it explicitly "
                          "(checkpoint_step)")
  if not isinstance(tokenizer, tokenizer_lib.Tokenizer):
    tokenizer = tokenizer_lib.from_spec(tokenizer or "", path, meta)
  try:
    vocab = model_checkpoint.config_of(path).vocab_size
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f"checkpoint {path} does not load: {e}") from e
  if tokenizer.vocab_size > vocab:
    raise CheckpointError(f"tokenizer has {tokenizer.vocab_size} ids, the model at {path} only {vocab}")
  try:
    model, meta = model_checkpoint.load_any(path, mesh=mesh, dtype=dtype)
  except (FileNotFoundError, ValueError) as e:
    raise CheckpointError(str(e)) from e
  return Checkpoint(model, tokenizer, ck_name, ck_step, path, meta)
