"""Shared start-up for the absl launch scripts: distributed init, logging, clean failures."""
from __future__ import annotations

import contextlib
import difflib
import glob
import importlib
import importlib.util
import os
import re
import sys
import time
import tokenize

from absl import flags, logging

COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Multi-process runs: HOST:PORT of process 0 "
                                  "(else $JAX_COORDINATOR_ADDRESS).")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process runs: how many processes "
                                     "(else $JAX_NUM_PROCESSES).")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index "
                                  "(else $JAX_PROCESS_ID).")
flags.DEFINE_boolean("config_help", False, "Print the --config file's fields (defaults and meanings) and exit.")
# Environments where a bare `jax.distributed.initialize()` finds its peers by itself.
_AUTO_DETECTED = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


def distributed_settings(env=os.environ) -> dict | None:
  """The arguments of `jax.distributed.initialize` from the flags, else the JAX_* variables:
  {} for a bare call (a cluster that auto-detects), None for a single process."""
  address = COORDINATOR.value if COORDINATOR.present else env.get("JAX_COORDINATOR_ADDRESS")
  count = NUM_PROCESSES.value if NUM_PROCESSES.present else env.get("JAX_NUM_PROCESSES")
  index = PROCESS_ID.value if PROCESS_ID.present else env.get("JAX_PROCESS_ID")
  given = {"coordinator_address": address, "num_processes": count, "process_id": index}
  if any(v is not None for v in given.values()):
    missing = [k for k, v in given.items() if v is None]
    if missing and any(k != "coordinator_address" for k in missing):
      raise ValueError(f"multi-process run: also set {', '.join('--' + k for k in missing)} (or the "
                       "JAX_* variables): all processes need the coordinator, the count and their index")
    return {k: (int(v) if k != "coordinator_address" else v) for k, v in given.items() if v is not None}
  if any(k in env for k in _AUTO_DETECTED) or env.get("COORDINATOR_ADDRESS"):
    return {}
  return None


def init_runtime() -> None:
  """Every launch script first, before any other JAX call: `jax.distributed.initialize()` for
  multi-process runs (flags, JAX_* variables, or a cluster that auto-detects), the embedded
  testbed's task names registered, one log line of the processes and devices."""
  import jax
  try:
    settings = distributed_settings()
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  if settings is not None:
    jax.distributed.initialize(**settings)
  with_testbed()
  logging.info("process %d/%d, %d local / %d global devices (%s)", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count(), jax.devices()[0].platform)


def config_of(config_flag):
  """The value of a `config_flags` flag (logged, so a run's log shows the config that ran), or
  one clear line and exit 1 when --config is missing."""
  if config_flag.value is None:
    fail("pass --config=<config file>[:<preset>] (e.g. configs/probes/linear.py:testbed); "
         "--config_help lists a file's fields")
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  logging.info("config %s:\n%s", config_flags.get_config_filename(flags.FLAGS[config_flag.name]), config_flag.value)
  return config_flag.value


def fail(message: str) -> None:
  """The one line a user error ends with, and exit status 1."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(1)


# ----------------------------------------------------------------------------- config files

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


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


def _config_spec(args: list[str], default: str | None) -> str | None:
  spec = default
  for i, a in enumerate(args):
    if a.startswith("--config="):
      spec = a.split("=", 1)[1]
    elif a == "--config" and i + 1 < len(args):
      spec = args[i + 1]
  return spec


def flags_parser(default_config: str | None = None):
  """The `flags_parser` of `app.run` for every launcher: `--help` and `--config_help` list the
  config's fields with defaults and meanings; an unknown `--config.<field>` names the nearest
  field; a bad flag, config file or value is one line on stderr and exit status 1."""
  def parse(argv: list[str]) -> list[str]:
    args = argv[1:]
    spec = _config_spec(args, default_config)
    if any(a in ("--help", "-h", "-?", "--helpshort", "--config_help") for a in args):
      if "--config_help" not in args:
        print(flags.FLAGS.main_module_help() + "\n")
      if "config" in flags.FLAGS:
        print(config_help(spec) if spec else "--config_help with --config=<config file> lists that file's "
              "fields (defaults and meanings)")
      sys.exit(0)
    if spec and "config" in flags.FLAGS:
      try:
        config = load_config(spec)
      except ValueError as e:
        fail(str(e))
      for a in args:
        m = re.match(r"--(?:no)?config\.([\w.]+)", a)
        problem = m and unknown_field(config, m.group(1))
        if problem:
          fail(problem)
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      fail(str(e).splitlines()[0])
    except Exception as e:  # pylint: disable=broad-except  (a config file that fails to load)
      fail(f"--config={spec}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
  return parse


def with_testbed() -> None:
  """Registers the embedded testbed's tasks and alphabet, so its names work on the command line
  (launch scripts may import it; the library core never does)."""
  importlib.import_module("probing.testbed")


def quiet_orbax_logs() -> None:
  """Drops orbax's per-save INFO chatter and JAX's backend probing lines (they log through absl)
  so progress lines stay readable; `--verbosity=1` (or higher) keeps them."""
  import logging as std_logging  # pylint: disable=import-outside-toplevel
  if flags.FLAGS.is_parsed() and flags.FLAGS.verbosity >= 1:
    return

  class _Filter(std_logging.Filter):
    def filter(self, record):
      return record.levelno >= std_logging.WARNING or not any(s in record.pathname for s in _NOISY)

  logging.get_absl_handler().addFilter(_Filter())


_NOISY = ("orbax", "xla_bridge")


@contextlib.contextmanager
def user_errors(*types: type[BaseException]):
  """Turns expected bad-input errors into one clear line on stderr and exit status 1."""
  types = types or (ValueError, FileNotFoundError, FileExistsError, KeyError)
  try:
    yield
  except types as e:
    msg = e.args[0] if isinstance(e, KeyError) and e.args else e
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


class Progress:
  """A periodic log line with count, rate and ETA (no terminal control codes: logs stay clean)."""

  def __init__(self, total: int, what: str, unit: str = "items", every_s: float = 2.0, start: float | None = None):
    self.total, self.what, self.unit, self.every_s = total, what, unit, every_s
    self.done = 0
    self.last = time.perf_counter()
    self.start = self.last if start is None else start  # when the work began (the rate counts from there)

  def update(self, n: int = 1, note: str = "") -> None:
    self.done += n
    now = time.perf_counter()
    if now - self.last >= self.every_s or self.done >= self.total:
      self.last = now
      elapsed = now - self.start
      rate = self.done / elapsed if elapsed > 0 else 0.0
      eta = (self.total - self.done) / rate if rate > 0 else float("inf")
      logging.info("%s: %d/%d %s (%.1f %s/s, ETA %.0fs) %s", self.what, self.done, self.total, self.unit,
                   rate, self.unit, eta, note)
