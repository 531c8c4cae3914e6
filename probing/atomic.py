"""Atomic writes: a temporary name, then `os.replace`, so readers never see half a file."""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable


def replace_from_tmp(path: str | os.PathLike, write: Callable, mode: str = "w") -> None:
  """Calls write(f) on a temporary file next to `path` (opened with `mode`), then renames it."""
  path = os.fspath(path)
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
      write(f)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_json(path: str, obj: Any, **dump_kwargs) -> None:
  """json.dump(obj, **dump_kwargs) to `path`, atomically (indent=1 unless given)."""
  dump_kwargs.setdefault("indent", 1)
  replace_from_tmp(path, lambda f: json.dump(obj, f, **dump_kwargs))


def write_jsonl(path: str, rows: Iterable[dict], **dumps_kwargs) -> None:
  """One JSON record per line to `path`, atomically."""
  replace_from_tmp(path, lambda f: f.writelines(json.dumps(r, **dumps_kwargs) + "\n" for r in rows))


def write_text(path: str | os.PathLike, text: str) -> None:
  """`text` (UTF-8) to `path`, atomically."""
  replace_from_tmp(path, lambda f: f.write(text))
