"""Helpers shared by the probe launch scripts (extract, train_probes, predict); no flags here."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterable

from probing import atomic


@dataclasses.dataclass
class Checkpoint:
  model: object
  tokenizer: object
  name: str
  step: int


def require(c, *fields: str) -> None:
  missing = [f for f in fields if _get(c, f) is None]
  if missing:
    raise ValueError("set " + ", ".join(f"--config.{f}" for f in missing))


def _get(c, dotted: str):
  for part in dotted.split("."):
    c = c[part]
  return c


def load_checkpoint(data, mesh) -> Checkpoint:
  """Model, tokenizer, checkpoint id and monotone step from `config.data`.

  Uses `probing.labels`' resolution (orbax or HF dir; tokenizer ''/'char'/'shipped:<name>'/path;
  id from metadata or the dir name), so features join with labels of the same checkpoint.
  """
  from probing import labels
  path = os.path.abspath(data.checkpoint)
  model, meta = labels.load_checkpoint(path, mesh=mesh, dtype=data.model_dtype)
  tokenizer = labels.resolve_tokenizer(data.tokenizer or "", path, meta)
  name = data.checkpoint_name or meta.get("checkpoint") or os.path.basename(path.rstrip("/"))
  step = labels.checkpoint_step_of(data, meta, name)
  if step is None:
    raise ValueError(f"checkpoint {name!r}: cannot infer its step; pass --config.data.checkpoint_step")
  return Checkpoint(model, tokenizer, name, int(step))


def task_names(data) -> list[str]:
  """`config.data.tasks` (comma-separated) as a list; empty when unset."""
  return [t.strip() for t in (data.tasks or "").split(",") if t.strip()]


def write_json(path: str, obj: Any) -> None:
  atomic.write_json(path, obj, default=float)


def write_jsonl(path: str, rows: Iterable[dict]) -> None:
  atomic.write_jsonl(path, rows)
