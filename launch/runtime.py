"""Start-up of every launch script: multi-process JAX (flags, JAX_* variables or a cluster that
auto-detects) and JAX's persistent compilation cache, before any other JAX call."""
from __future__ import annotations

import importlib
import os
import sys

from absl import flags, logging

COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Multi-process runs: HOST:PORT of process 0 "
                                  "(else $JAX_COORDINATOR_ADDRESS).")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process runs: how many processes "
                                     "(else $JAX_NUM_PROCESSES).")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index "
                                  "(else $JAX_PROCESS_ID).")
COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache_dir", None, "JAX's persistent compilation cache: a second run on the same shapes "
    "compiles nothing (default: $JAX_COMPILATION_CACHE_DIR, else $XDG_CACHE_HOME or ~/.cache, then "
    "olmo-probe/jax; '' turns it off).")
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
  if any(k in env for k in _AUTO_DETECTED) or env.get("COORDINATOR_ADDRESS") or _jax_detects_cluster():
    return {}
  return None


def _jax_detects_cluster() -> bool:
  """Whether `jax.distributed.initialize()` would find its peers by itself (e.g. a Cloud TPU pod
  VM, whose workers are named by the metadata server rather than the environment). Uses JAX's
  own detection, which is private, so any failure means no."""
  try:
    from jax._src.clusters import ClusterEnv  # pylint: disable=import-outside-toplevel
    kinds = ClusterEnv._cluster_types  # pylint: disable=protected-access
    return any(not c.opt_in_only_method and c.is_env_present() for c in kinds)
  except Exception:  # pylint: disable=broad-except
    return False


def compilation_cache_dir(env=os.environ) -> str:
  """Where compiled programs are kept across runs ('' = nowhere): --compilation_cache_dir, else
  $JAX_COMPILATION_CACHE_DIR, else a directory under the user's cache dir."""
  given = COMPILATION_CACHE.value if COMPILATION_CACHE.value is not None else env.get("JAX_COMPILATION_CACHE_DIR")
  if given is not None:
    return os.path.expanduser(given) if given else ""
  base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "olmo-probe", "jax")


def with_testbed() -> None:
  """Registers the embedded testbed's tasks and alphabet, so its names work on the command line
  (launch scripts may import it; the library core never does)."""
  importlib.import_module("probing.testbed")


def init_runtime() -> None:
  """Every launch script first, before any other JAX call: `jax.distributed.initialize()` for
  multi-process runs (flags, JAX_* variables, or a cluster that auto-detects; a process waits for
  its peers, up to JAX's initialization timeout), JAX's persistent compilation cache, the embedded
  testbed's task names registered, one log line of the processes and devices."""
  import jax
  try:
    settings = distributed_settings()
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  cache = compilation_cache_dir()
  if cache:
    jax.config.update("jax_compilation_cache_dir", cache)
    # Cache every program: the probe path's programs compile in well under JAX's 1 s default.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  if settings is not None:
    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
      # Processes on CPU talk through gloo (other platforms ignore this setting).
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**settings)
  with_testbed()
  logging.info("process %d/%d, %d local / %d global devices (%s); compilation cache %s", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(), jax.devices()[0].platform,
               cache or "off")
