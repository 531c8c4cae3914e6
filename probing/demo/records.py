"""The demo's prediction and label records joined per (task, checkpoint) cell.

predictions.jsonl rows (checkpoint_step, task, question_id, probe, p, split, checkpoint_role)
meet labels.jsonl rows (c of k samples) here, so every audit, pass@k and drift figure is
recomputed from the two files alone.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

__all__ = ["cell_key", "join_cells", "num"]


def cell_key(task: str, step: int) -> str:
  return f"{task}@{int(step)}"


def join_cells(predictions: Iterable[Mapping], labels: Iterable[Mapping], family: str, *,
               split: str | None = None, role: str | None = None) -> dict[tuple[str, int], dict]:
  """(task, step) -> {qid, p, c, k, difficulty, split} arrays of `family`'s prediction rows
  (optionally one split / checkpoint_role), joined with their labels; a row without a label raises."""
  index = {(int(r["checkpoint_step"]), str(r["task"]), str(r["question_id"])): r for r in labels}
  rows: dict[tuple[str, int], list] = {}
  for r in predictions:
    if r["probe"] != family or (split and r["split"] != split) or (role and r["checkpoint_role"] != role):
      continue
    key = (int(r["checkpoint_step"]), str(r["task"]), str(r["question_id"]))
    if key not in index:
      raise KeyError(f"prediction of {family!r} for step {key[0]} task {key[1]!r} question "
                     f"{key[2]!r} has no label record")
    lab = index[key]
    d = lab.get("difficulty")
    rows.setdefault((key[1], key[0]), []).append(
        (key[2], float(r["p"]), float(lab["c"]), float(lab["k"]), np.nan if d is None else float(d), r["split"]))
  if not rows:
    raise ValueError(f"no prediction records of probe {family!r}"
                     + (f" with split {split!r}" if split else "") + (f" and role {role!r}" if role else ""))
  out = {}
  for cell, rs in sorted(rows.items()):
    q, p, c, k, d, s = zip(*rs)
    out[cell] = {"qid": np.asarray(q, object), "p": np.clip(np.asarray(p), 0.0, 1.0), "c": np.asarray(c),
                 "k": np.asarray(k), "difficulty": np.asarray(d), "split": np.asarray(s, object)}
  return out


def num(x) -> float | None:
  """A JSON-safe float: None for NaN and inf (json would write bare NaN / Infinity)."""
  x = float(x)
  return x if np.isfinite(x) else None
