"""What every importer shares: strict JSONL reading that names file and line, and the
per-question outcome an importer hands on to become a label record."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any


class InteropError(ValueError):
  """A file or setting another tool wrote that cannot be turned into our records (one line)."""


@dataclasses.dataclass
class Outcome:
  """One document's result, as our label record needs it: c correct of k samples."""
  question_id: str
  k: int
  c: int
  greedy: int | None = None  # 0/1 where the source decoded greedily, else None
  scores: list[float] | None = None  # per sample, where we scored them ourselves
  completions: list[str] | None = None  # the raw samples, where the file has them
  extracted: list[str] | None = None  # what the source's filter extracted from each sample
  source: dict[str, Any] = dataclasses.field(default_factory=dict)  # line, doc_id, filter/metric


def read_jsonl(path: str) -> list[tuple[int, dict]]:
  """(line number, object) of every non-blank line; a torn or invalid line is an error that
  names the file and the line (an importer writes nothing from a partial file)."""
  if not os.path.isfile(path):
    raise InteropError(f"{path}: no such file")
  out = []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise InteropError(f"{path}:{n}: invalid JSON ({e.msg} at column {e.colno}); the file is "
                           "truncated or not JSONL") from None
      if not isinstance(row, dict):
        raise InteropError(f"{path}:{n}: a JSON {type(row).__name__}, not an object per line")
      out.append((n, row))
  if not out:
    raise InteropError(f"{path}: no rows")
  return out


def unit_value(path: str, line: int, name: str, value: Any) -> float:
  """A per-document metric as a float in [0, 1], or an error naming it."""
  try:
    v = float(value)
  except (TypeError, ValueError):
    v = math.nan
  if not 0.0 <= v <= 1.0:
    raise InteropError(f"{path}:{line}: metric {name!r} = {value!r} is not a number in [0, 1]")
  return v


def binary_outcome(path: str, line: int, name: str, v: float) -> int:
  """A single sample's metric must be 0 or 1 to count as one outcome."""
  if v not in (0.0, 1.0):
    raise InteropError(f"{path}:{line}: metric {name!r} = {v} is not a 0/1 outcome of one sample; "
                       "choose a per-sample metric (--metric)")
  return int(v)


def is_pass_at_1(name: str) -> bool:
  """pass@1 estimates over n samples are c/n exactly (lm-eval 'pass@1', OLMES 'pass_at_1')."""
  return name in ("pass@1", "pass_at_1")
