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
Cheap checks (directory, tokenizer, vocabulary size, layers) run before the weights are read:
`inspect_checkpoint` does them, `load_weights` reads the weights, `open_checkpoint` is both.
"""
from __future__ import annotations

import dataclasses
import os
import re

from etils import epath

from models import checkpoint as model_checkpoint
from models import io
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
  config: object = None  # models.Olmo3Config, known before the weights are read


def metadata_of(path: str | os.PathLike) -> dict:
  """Our metadata.json for an orbax checkpoint, `{"format": "hf"}` for a HF directory."""
  path = os.fspath(path)
  if not path or not epath.Path(path).is_dir():
    raise CheckpointError(f"checkpoint {path!r} is not a directory")
  if model_checkpoint.is_checkpoint(path):
    return model_checkpoint.read_metadata(path)
  if (epath.Path(path) / "config.json").exists():
    return {"format": "hf"}
  raise CheckpointError(f"{path}: neither an orbax checkpoint (metadata.json) nor a HF dir (config.json)")


def checkpoint_id(path: str | os.PathLike, *, name: str | None = None, step: int | None = None,
                  meta: dict | None = None, stage_lengths=OLMO3_7B_STAGE_LENGTHS) -> tuple[str, int | None]:
  """(record id, monotone step or None) of a checkpoint directory, without reading weights."""
  path = io.absolute(path)
  meta = metadata_of(path) if meta is None else meta
  name = name or meta.get("checkpoint") or os.path.basename(path.rstrip("/"))
  if step is None and meta.get("checkpoint_step") is not None:
    step = meta["checkpoint_step"]
  for source in (name, meta.get("revision") or ""):  # launch.convert records the HF revision
    if step is None:
      step = step_from_name(source, stage_lengths)
  return name, None if step is None else int(step)


def check_step_order(named_steps) -> None:
  """Raises naming both checkpoints when two share a step, or when their steps contradict the
  order their OLMo3 revision names state (`stage1-step900` must come before `stage2-step5`)."""
  named = sorted((int(s), str(n)) for n, s in named_steps)
  for (s1, n1), (s2, n2) in zip(named, named[1:]):
    if s1 == s2 and n1 != n2:
      raise CheckpointError(f"checkpoints {n1!r} and {n2!r} both have step {s1}; give each its own "
                            "monotone checkpoint_step")
  by_name = [(_name_order(n), s, n) for s, n in named if _name_order(n) is not None]
  for i, (o1, s1, n1) in enumerate(by_name):
    for o2, s2, n2 in by_name[i + 1:]:
      if (o1 < o2) != (s1 < s2) and o1 != o2:
        raise CheckpointError(f"checkpoints {n1!r} (step {s1}) and {n2!r} (step {s2}): their steps contradict "
                              "the order their names state; fix checkpoint_step (or stage_lengths)")


def _name_order(name: str) -> tuple[int, int] | None:
  m = re.search(r"stage(\d+)[_-]step[_-]?(\d+)", name)
  return (int(m.group(1)), int(m.group(2))) if m else None


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


def inspect_checkpoint(path: str | os.PathLike, *, tokenizer=None, name: str | None = None,
                       step: int | None = None, require_step: bool = True,
                       stage_lengths=OLMO3_7B_STAGE_LENGTHS) -> Checkpoint:
  """Everything about a checkpoint that needs no weights: id, step, tokenizer and model config
  (`model` is None). Callers check what they need against it before `load_weights`.

  `tokenizer`: a Tokenizer, or a setting for `probing.tokenizer.from_spec` (None or '' = the
  checkpoint's own). Raises CheckpointError for a tokenizer with more ids than the model has
  embedding rows (fewer is normal: embeddings are padded), and with `require_step` for a step
  that cannot be told.
  """
  if not os.fspath(path):
    raise CheckpointError("no checkpoint given (a HF directory or an orbax checkpoint of ours)")
  path = io.absolute(path)
  meta = metadata_of(path)
  ck_name, ck_step = checkpoint_id(path, name=name, step=step, meta=meta, stage_lengths=stage_lengths)
  if require_step and ck_step is None:
    raise CheckpointError(f"checkpoint {ck_name!r}: cannot infer its training step; pass it explicitly "
                          "(checkpoint_step)")
  if not isinstance(tokenizer, tokenizer_lib.Tokenizer):
    tokenizer = tokenizer_lib.from_spec(tokenizer or "", path, meta)
  try:
    config = model_checkpoint.config_of(path)
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f"checkpoint {path} does not load: {e}") from e
  if tokenizer.vocab_size > config.vocab_size:
    raise CheckpointError(f"tokenizer {tokenizer!r} has {tokenizer.vocab_size} ids, the model at {path} only "
                          f"{config.vocab_size} embedding rows: not this model's tokenizer (set the tokenizer: "
                          "--config.data.tokenizer=<its tokenizer.json>)")
  return Checkpoint(None, tokenizer, ck_name, ck_step, path, meta, config)


def check_layers(ck: Checkpoint, layers, *, flag: str) -> None:
  """Raises naming `flag` when a hidden-state layer index is not in the model (0 = embeddings)."""
  n = ck.config.num_hidden_layers
  bad = sorted({int(i) for i in layers if not 0 <= int(i) <= n})
  if bad:
    raise CheckpointError(f"layers {bad} do not exist in {ck.name} ({n} blocks: hidden states 0..{n}); set {flag}")


def load_weights(ck: Checkpoint, *, mesh=None, dtype=None) -> Checkpoint:
  """The inspected checkpoint with its model loaded onto `mesh` (the expensive part)."""
  try:
    model, meta = model_checkpoint.load_any(ck.path, mesh=mesh, dtype=dtype)
  except (FileNotFoundError, ValueError) as e:
    raise CheckpointError(str(e)) from e
  return dataclasses.replace(ck, model=model, meta=meta)


def open_checkpoint(path: str | os.PathLike, *, mesh=None, dtype=None, tokenizer=None, name: str | None = None,
                    step: int | None = None, require_step: bool = True,
                    stage_lengths=OLMO3_7B_STAGE_LENGTHS) -> Checkpoint:
  """Opens an orbax checkpoint of ours or a HF directory, placing params on `mesh`: the cheap
  checks of `inspect_checkpoint` first, then the weights. With `require_step`, a checkpoint whose
  step cannot be told raises (pass `step`: OLMo3's stage counters restart, so directory names
  are not always monotone)."""
  ck = inspect_checkpoint(path, tokenizer=tokenizer, name=name, step=step, require_step=require_step,
                          stage_lengths=stage_lengths)
  return load_weights(ck, mesh=mesh, dtype=dtype)
