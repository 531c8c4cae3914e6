"""Task registry: `probing.tasks.get(name)` returns a Task; `names()` lists what is registered;
`expand('gsm8k,minerva_*')` turns a task setting into names.

The real tasks (`real`, `code`) register factories lazily, so importing the registry reads no
data files. Other packages register their own tasks when they are loaded (the embedded
testbed, `probing.testbed`, registers its `syn_*` skills); the registry names none of them.
"""
from __future__ import annotations

import fnmatch
import importlib
from typing import Callable

from probing.tasks.base import Question, Task, stable_hash

_FACTORIES: dict[str, Callable[[], Task]] = {}
_INSTANCES: dict[str, Task] = {}
# Modules that define tasks; each calls `register` at import time.
_TASK_MODULES = ("probing.tasks.real", "probing.tasks.code")


def register(name: str, factory: Callable[[], Task]) -> None:
  if name in _FACTORIES and _FACTORIES[name] is not factory:
    raise ValueError(f"task {name!r} registered twice")
  _FACTORIES[name] = factory


def _load_all() -> None:
  for mod in _TASK_MODULES:
    try:
      importlib.import_module(mod)
    except ModuleNotFoundError as e:
      if e.name != mod:  # a real import error inside the module: surface it
        raise


def names() -> list[str]:
  _load_all()
  return sorted(_FACTORIES)


def get(name: str) -> Task:
  _load_all()
  if name not in _FACTORIES:
    raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_FACTORIES))}")
  if name not in _INSTANCES:
    _INSTANCES[name] = _FACTORIES[name]()
  return _INSTANCES[name]


def expand(spec: str | list[str] | tuple[str, ...] | None) -> list[str]:
  """'gsm8k,syn_*' (or a list) -> registered task names, in order, without repeats.

  A pattern with * ? [ expands over the registry; every name is checked, so an unknown task
  or a pattern that matches nothing raises KeyError naming it (and what is known).
  """
  items = spec.split(",") if isinstance(spec, str) else list(spec or ())
  known = names()
  out = []
  for item in (i.strip() for i in items):
    if not item:
      continue
    if any(ch in item for ch in "*?["):
      hits = fnmatch.filter(known, item)
      if not hits:
        raise KeyError(f"task pattern {item!r} matches no task; known tasks: {', '.join(known)}")
      out += hits
    elif item not in _FACTORIES:
      raise KeyError(f"unknown task {item!r}; known tasks: {', '.join(known)}")
    else:
      out.append(item)
  return list(dict.fromkeys(out))


__all__ = ["Question", "Task", "expand", "get", "names", "register", "stable_hash"]
