"""Crash-safe file writes, one copy each: readers never see half a file or half a directory.

Files are written under a temporary name and `os.replace`d; directories are built under a
temporary name beside the target and renamed into place; JSONL records are appended with
flush + fsync. Paths with a scheme (`gs://...`) go through `etils.epath`: an object store
object appears whole when its write closes, so it is written in place. `models/` and
`probing/` both write through here (`models/` may not import `probing/`, so the home is on
this side).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from etils import epath


def is_remote(path: str | os.PathLike) -> bool:
  """Whether `path` names an object store (`gs://bucket/...`) rather than a local file."""
  return "://" in os.fspath(path)


def absolute(path: str | os.PathLike) -> str:
  """`os.path.abspath` for a local path; an object store path as it is."""
  return os.fspath(path) if is_remote(path) else os.path.abspath(os.fspath(path))


def mkdirs(path: str | os.PathLike) -> None:
  """`os.makedirs(path, exist_ok=True)`, also for object stores."""
  epath.Path(path).mkdir(parents=True, exist_ok=True)


def replace_from_tmp(path: str | os.PathLike, write: Callable, mode: str = "w") -> None:
  """Calls write(f) on a temporary file next to `path` (opened with `mode`), then renames it
  (object store paths: written in place, which is atomic there)."""
  path = os.fspath(path)
  if is_remote(path):
    with epath.Path(path).open(mode) as f:
      write(f)
    return
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
      write(f)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


@contextlib.contextmanager
def staged_dir(path: str | os.PathLike, *, replace: bool = False) -> Iterator[str]:
  """Yields a fresh temporary directory beside `path`; on success it is renamed to `path`.

  An existing `path` is an error unless `replace` (then it is removed just before the rename;
  an empty directory is always replaced). On any exception the temporary directory goes.
  """
  path = os.path.abspath(os.fspath(path))
  if os.path.exists(path) and os.listdir(path) and not replace:
    raise FileExistsError(f"{path}: already exists")
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=parent)
  try:
    yield tmp
    if os.path.isdir(path):
      shutil.rmtree(path)
    os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def jsonable(x: Any) -> Any:
  """`json.dump(default=...)` for numpy scalars and arrays and dataclasses (else `str`)."""
  if isinstance(x, (np.floating, np.integer, np.bool_)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  if dataclasses.is_dataclass(x) and not isinstance(x, type):
    return dataclasses.asdict(x)
  return str(x)


def write_json(path: str | os.PathLike, obj: Any, **dump_kwargs) -> None:
  """json.dump(obj, **dump_kwargs) to `path`, atomically (indent=1 unless given)."""
  dump_kwargs.setdefault("indent", 1)
  replace_from_tmp(path, lambda f: json.dump(obj, f, **dump_kwargs))


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict], **dumps_kwargs) -> None:
  """One JSON record per line to `path`, atomically."""
  replace_from_tmp(path, lambda f: f.writelines(json.dumps(r, **dumps_kwargs) + "\n" for r in rows))


def write_text(path: str | os.PathLike, text: str) -> None:
  """`text` (UTF-8) to `path`, atomically."""
  replace_from_tmp(path, lambda f: f.write(text))


def append_jsonl(f_or_path, records: Iterable[dict]) -> None:
  """Appends records (sorted keys, one per line) to an open text file or a path, then fsyncs.

  A crash can leave at most a torn last line, which readers of such files cut off. Object stores
  cannot append: there the object is rewritten whole (it stays whole at every moment; the cost
  grows with the file, which suits label and log files of a few MB).
  """
  text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
  if isinstance(f_or_path, (str, os.PathLike)) and is_remote(f_or_path):
    target = epath.Path(f_or_path)
    old = target.read_text() if target.exists() else ""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(old + text)
    return
  if isinstance(f_or_path, (str, os.PathLike)):
    os.makedirs(os.path.dirname(os.path.abspath(f_or_path)), exist_ok=True)
    with open(f_or_path, "a", encoding="utf-8") as f:
      _append_text(f, text)
    return
  _append_text(f_or_path, text)


def _append_text(f, text: str) -> None:
  f.write(text)
  f.flush()
  os.fsync(f.fileno())
