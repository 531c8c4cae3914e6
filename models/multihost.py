"""Multi-controller helpers: every process runs the same program; process 0 owns shared files.

The rules the jobs follow in a multi-process run (`jax.distributed.initialize` done by the
launch scripts):
  * inputs are global arrays: each process places only its devices' slices (`put_global`);
  * outputs come back whole on every process (`gather`), so every process goes on with the
    same data and takes the same branches (which collectives run, in which order);
  * what is read from disk to decide what to run is read by process 0 alone and sent to the
    others (`from_process_zero`, `broadcast_arrays`): processes never read a file another one
    writes, so no barrier has to order a write before a read, and hosts need not share a disk;
  * only process 0 writes shared files (`is_writer`).
With one process every helper is a plain local operation.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Mapping

import jax
import numpy as np


def is_writer() -> bool:
  """Whether this process writes shared outputs (process 0)."""
  return jax.process_index() == 0


def put_global(x: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """`x` (the same whole array on every process) as a global array: each process fills only its
  own devices' slices, as `jax.make_array_from_process_local_data` would with its rows."""
  x = np.asarray(x)
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def gather(x) -> np.ndarray:
  """The whole of a (possibly multi-process sharded) array as numpy, on every process (a
  collective: every process must call it)."""
  if jax.process_count() > 1 and isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


class RemoteError(ValueError):
  """An error raised on process 0 inside `from_process_zero`, raised on every process."""


def from_process_zero(fn: Callable[[], Any]) -> Any:
  """fn()'s JSON-able value, computed on process 0 only and returned on every process.

  A ValueError, KeyError or OSError raised by fn on process 0 is raised on every process (as a
  `RemoteError`, a ValueError, with the same message on the others), so no process waits on a
  collective its peers never reach.
  """
  if jax.process_count() == 1:
    return fn()
  error, value = None, None
  if is_writer():
    try:
      value = fn()
    except (ValueError, KeyError, OSError) as e:
      error = e
  message = None if error is None else str(error.args[0] if isinstance(error, KeyError) and error.args else error)
  payload = json.dumps({"error": message, "value": value}).encode() if is_writer() else b""
  got = json.loads(_broadcast_bytes(payload))
  if error is not None:
    raise error
  if got["error"] is not None:
    raise RemoteError(got["error"])
  return got["value"]


def broadcast_arrays(arrays: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
  """Process 0's numeric arrays on every process (others pass anything, e.g. None)."""
  if jax.process_count() == 1:
    return dict(arrays or {})
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  layout = from_process_zero(lambda: {k: [list(v.shape), np.asarray(v).dtype.str] for k, v in arrays.items()})
  out = {}
  for k, (shape, dtype) in layout.items():
    dtype = np.dtype(dtype)
    wire = np.uint8 if dtype == np.bool_ else dtype  # bools go as bytes
    local = np.asarray(arrays[k]).astype(wire) if is_writer() else np.zeros(shape, wire)
    out[k] = np.asarray(multihost_utils.broadcast_one_to_all(local)).astype(dtype).reshape(shape)
  return out


def _broadcast_bytes(payload: bytes) -> bytes:
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  n = int(multihost_utils.broadcast_one_to_all(np.int64(len(payload))))
  buf = np.frombuffer(payload, np.uint8) if is_writer() else np.zeros(n, np.uint8)
  return np.asarray(multihost_utils.broadcast_one_to_all(buf), np.uint8).tobytes()
