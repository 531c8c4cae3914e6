"""Timing, machine-state and JSON helpers shared by the benchmarks.

The benchmark machine is a small CPU box shared with other jobs, so every comparison is timed
interleaved (round-robin over variants, rotating the order) and reported as medians, with the
load average recorded next to the numbers it may have disturbed.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable, Mapping, NamedTuple

from models import io


def hf_reference():
  """The tests' HF reference builders (`tests/hf_reference.py`: random HF OLMo3 models, saved as
  safetensors), imported by file: `tests/` is not a package, and a site-packages `tests` package
  (ppi_python ships one) would shadow `from tests import ...`."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "hf_reference.py")
  spec = importlib.util.spec_from_file_location("hf_reference", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_average() -> list[float]:
  """1/5/15-minute load averages; > the core count means our timings were contended."""
  return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
  """What the numbers were measured on."""
  model = platform.processor()
  try:
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    model = names[0] if names else model
  except OSError:
    pass
  try:  # with scheduler autogroups, the group's nice (not the process's) sets our CPU share
    with open("/proc/self/autogroup") as f:
      autogroup = f.read().strip()
  except OSError:
    autogroup = None
  return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
          "nice": os.nice(0), "autogroup": autogroup, "load_average": load_average()}


def _busy_cpu_seconds() -> float | None:
  """Machine-wide non-idle CPU seconds since boot (from /proc/stat), None where unavailable."""
  try:
    with open("/proc/stat") as f:
      fields = [int(x) for x in f.readline().split()[1:]]
  except (OSError, ValueError):
    return None
  idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
  return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Sample(NamedTuple):
  seconds_per_call: float
  own_cores: float  # CPU seconds of this process per wall second
  foreign_cores: float | None  # other processes' CPU seconds per wall second


def time_per_call(fn: Callable[[], object], min_seconds: float) -> Sample:
  """Times `fn` (which must block until done), repeated to last `min_seconds`.

  Also reports how many cores this process used and how many other processes used meanwhile:
  on a shared machine the latter says whether a sample was contended.
  """
  calls, busy0, cpu0, start = 0, _busy_cpu_seconds(), time.process_time(), time.perf_counter()
  while True:
    fn()
    calls += 1
    elapsed = time.perf_counter() - start
    if elapsed >= min_seconds:
      break
  own = (time.process_time() - cpu0) / elapsed
  busy1 = _busy_cpu_seconds()
  foreign = None if busy0 is None or busy1 is None else max(0.0, (busy1 - busy0) / elapsed - own)
  return Sample(elapsed / calls, own, foreign)


def interleaved(variants: Mapping[str, Callable[[], object]], rounds: int,
                min_seconds: float = 0.5) -> dict[str, list[Sample]]:
  """`rounds` samples of each variant, timed round-robin.

  Interleaving spreads any load from other jobs over all variants instead of penalising
  whichever one ran while the machine was busy; the order rotates so no variant always runs
  right after the same neighbour.
  """
  names = list(variants)
  samples: dict[str, list[Sample]] = {n: [] for n in names}
  for r in range(rounds):
    shift = r % len(names)
    for name in names[shift:] + names[:shift]:
      samples[name].append(time_per_call(variants[name], min_seconds))
  return samples


def summarize(samples: list[Sample], items_per_call: int) -> dict:
  """Median/min/max throughput (items/s) over samples, with median own and foreign CPU use."""
  rates = sorted(items_per_call / s.seconds_per_call for s in samples)
  foreign = [s.foreign_cores for s in samples if s.foreign_cores is not None]
  return {"median": round(statistics.median(rates), 1), "min": round(rates[0], 1),
          "max": round(rates[-1], 1),
          "median_seconds_per_call": round(statistics.median(s.seconds_per_call for s in samples), 5),
          "own_cores": round(statistics.median(s.own_cores for s in samples), 2),
          "foreign_cores": round(statistics.median(foreign), 2) if foreign else None,
          "samples": len(rates)}


def write_json(path: str, obj) -> None:
  """Writes `obj` as indented JSON (atomically), creating the parent directory."""
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  io.write_json(path, obj, indent=2, default=io.jsonable)


def table(rows: list[list], header: list[str]) -> str:
  """A GitHub-markdown table (also readable on a terminal)."""
  cells = [[str(c) for c in row] for row in [header] + rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
  lines = [fmt(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
  return "\n".join(lines + [fmt(r) for r in cells[1:]])
