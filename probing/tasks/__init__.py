"""Task registry: `probing.tasks.get(name)` returns a Task; `names()` lists what is registered.

Modules register factories lazily, so importing the registry does not read any data files.
"""
from __future__ import annotations

import importlib
from typing import Callable

from probing.tasks.base import Question, Task, stable_hash

_FACTORIES: dict[str, Callable[[], Task]] = {}
_INSTANCES: dict[str, Task] = {}
# Modules that define tasks; each calls `register` at import time.
_TASK_MODULES = ("probing.tasks.real", "probing.tasks.code", "probing.tasks.synthetic")


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


__all__ = ["Question", "Task", "get", "names", "register", "stable_hash"]
