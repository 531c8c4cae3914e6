"""Config files as a user meets them: load `FILE[:PRESET]`, list every field with its default and
one-line meaning (the comment beside the field in the config files), and name the nearest field
for an unknown key. The launchers' `--config_help` and unknown-field errors come from here."""
from __future__ import annotations

import difflib
import glob
import importlib.util
import os
import re
import tokenize


CONFIGS_DIR = os.path.dirname(os.path.abspath(__file__))


def load_config(spec: str):
  """The ConfigDict that `--config=FILE[:PRESET]` loads (the same call config_flags makes:
  `get_config(PRESET)`, or `get_config()` without one); ValueError naming the culprit."""
  path, sep, preset = spec.partition(":")
  if not os.path.isfile(path):
    raise ValueError(f"--config={spec}: no such config file {path!r}")
  module_spec = importlib.util.spec_from_file_location(f"_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    return module.get_config(preset) if sep else module.get_config()
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise ValueError(f"--config={spec}: {e}") from e


def config_fields(config, prefix: str = "") -> list[tuple[str, object]]:
  """(dotted key, value) of every leaf field of a ConfigDict, in definition order."""
  from ml_collections import ConfigDict  # pylint: disable=import-outside-toplevel
  out = []
  for key, value in config.items():
    if isinstance(value, ConfigDict):
      out += config_fields(value, f"{prefix}{key}.")
    else:
      out.append((f"{prefix}{key}", value))
  return out


def _comments(path: str) -> dict[str, str]:
  """{dotted field: its comment} of one config file: the comment ending a `c.<field> = ...` line."""
  out = {}
  with open(path) as f:
    tokens = list(tokenize.generate_tokens(f.readline))
  for i, tok in enumerate(tokens):
    if tok.type != tokenize.COMMENT:
      continue
    line = tok.line.strip()
    m = re.match(r"c((?:\.\w+)+)\s*=", line)
    if m and not line.startswith("#"):
      out.setdefault(m.group(1)[1:], tok.string.lstrip("# ").strip())
  return out


def field_meanings(spec: str | None = None) -> dict[str, str]:
  """{dotted field: one-line meaning} for a config file's fields, from the comments beside the
  fields in it and in the files it builds on (configs/**): a nested field (`labels.data.limit`)
  takes the meaning its own file gives it (`data.limit`)."""
  files = sorted(glob.glob(os.path.join(CONFIGS_DIR, "**", "*.py"), recursive=True))
  own = os.path.abspath(spec.partition(":")[0]) if spec else None
  ordered = ([own] if own and os.path.isfile(own) else []) + [f for f in files if f != own]
  return _merge([_comments(f) for f in ordered])


def _merge(tables: list[dict[str, str]]) -> dict[str, str]:
  merged = {}
  for table in tables:
    for key, text in table.items():
      merged.setdefault(key, text)
  return merged


def meaning_of(key: str, meanings: dict[str, str]) -> str:
  parts = key.split(".")
  for i in range(len(parts)):
    if ".".join(parts[i:]) in meanings:
      return meanings[".".join(parts[i:])]
  return ""


def config_help(spec: str) -> str:
  """Every field of `--config=spec` with its default and one-line meaning."""
  config = load_config(spec)
  meanings = field_meanings(spec)
  lines = [f"Fields of --config={spec} (override any with --config.<field>=<value>):"]
  for key, value in config_fields(config):
    text = meaning_of(key, meanings)
    shown = ",".join(map(str, value)) if isinstance(value, tuple) else repr(value)
    lines.append(f"  {key} = {shown}" + (f"  # {text}" if text else ""))
  return "\n".join(lines)


def unknown_field(config, key: str) -> str | None:
  """None when `key` (dotted) is a field of `config`, else an error naming the nearest field."""
  from ml_collections import ConfigDict  # pylint: disable=import-outside-toplevel
  node = config
  for part in key.split("."):
    if not isinstance(node, ConfigDict) or part not in node:
      break
    node = node[part]
  else:
    return None
  fields = [k for k, _ in config_fields(config)]
  last = key.split(".")[-1]
  near = [k for k in fields if k.split(".")[-1] == last] or difflib.get_close_matches(key, fields, n=1, cutoff=0.5)
  hint = f"; did you mean --config.{near[0]}?" if near else "; --config_help lists the fields"
  return f"--config.{key}: no such config field{hint}"
