"""Code version recorded in every artifact's provenance."""
from __future__ import annotations

import functools
import os
import subprocess

__version__ = "0.1.0"


@functools.lru_cache(maxsize=None)
def code_version() -> str:
  """`0.1.0+g<commit>` inside a git checkout (with `.dirty` for local changes), else `0.1.0`."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                            text=True, timeout=5, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                           capture_output=True, text=True, timeout=5).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return __version__
  return f"{__version__}+g{commit}{'.dirty' if dirty else ''}" if commit else __version__
