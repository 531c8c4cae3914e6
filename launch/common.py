"""Shared by the absl launch scripts: start-up (launch.runtime), the config, clean failures, progress."""
from __future__ import annotations

import contextlib
import sys
import time

from absl import flags, logging

from launch.cli import fail, flags_parser, quiet_orbax_logs  # noqa: F401  (every launcher uses them)
from launch.runtime import compilation_cache_dir, distributed_settings, init_runtime, with_testbed  # noqa: F401


def config_of(config_flag):
  """The value of a `config_flags` flag (logged, so a run's log shows the config that ran), or
  one clear line and exit 1 when --config is missing."""
  if config_flag.value is None:
    fail("pass --config=<config file>[:<preset>] (e.g. configs/probes/linear.py:testbed); "
         "--config_help lists a file's fields")
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  logging.info("config %s:\n%s", config_flags.get_config_filename(flags.FLAGS[config_flag.name]), config_flag.value)
  return config_flag.value


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
