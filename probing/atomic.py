"""Atomic JSON / JSONL writes: a temporary name, then `os.replace`, so readers never see half a file."""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable


def _replace_from_tmp(path: str, write: Callable) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "w") as f:
      write(f)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_json(path: str, obj: Any, **dump_kwargs) -> None:
  """json.dump(obj, **dump_kwargs) to `path`, atomically (indent=1 unless given)."""
  dump_kwargs.setdefault("indent", 1)
  _replace_from_tmp(path, lambda f: json.dump(obj, f, **dump_kwargs))


def write_jsonl(path: str, rows: Iterable[dict], **dumps_kwargs) -> None:
  """One JSON record per line to `path`, atomically."""
  _replace_from_tmp(path, lambda f: f.writelines(json.dumps(r, **dumps_kwargs) + "\n" for r in rows))
