"""Scalars at a training step, for TensorBoard or a user's own tracker: one small protocol.

The monitor and the watcher log through any object with `write_scalars(step, {tag: value})`
(`ScalarWriter`). `TensorBoardWriter(logdir)` is the default, on `tensorboardX`'s maintained
event-file writer (no TensorFlow needed); a training loop that already logs elsewhere (W&B,
clu's metric writers, its own) passes an adapter with that one method instead. Steps are the
checkpoint's own training step, so probe curves line up with the loss curves of the run.

  writer = TensorBoardWriter("runs/x/tb")
  writer.write_scalars(1200, {"predicted/syn_add/linear": 0.61})
"""
from __future__ import annotations

import math
import os
import time
from typing import Iterable, Mapping, Protocol, runtime_checkable


@runtime_checkable
class ScalarWriter(Protocol):
  """Anything that records named scalars at an integer step."""

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    ...


class TensorBoardWriter:
  """TensorBoard event files under `logdir`, written synchronously with tensorboardX's event
  writer: every `write_scalars` is on disk when it returns (tensorboardX's `SummaryWriter` queues
  events for a background thread, which a killed process would lose). One file per process
  (the pid in its name), so a restarted watcher adds a file beside the old one."""

  def __init__(self, logdir: str | os.PathLike):
    from tensorboardX.event_file_writer import EventsWriter  # pylint: disable=import-outside-toplevel
    self.logdir = os.fspath(logdir)
    os.makedirs(self.logdir, exist_ok=True)
    self._events = EventsWriter(os.path.join(self.logdir, "events"), f".{os.getpid()}")

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    from tensorboardX import summary  # pylint: disable=import-outside-toplevel
    from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
    values = [summary.scalar(tag, float(v)).value[0] for tag, v in scalars.items()
              if v is not None and math.isfinite(float(v))]
    if values:
      event = event_pb2.Event(wall_time=time.time(), step=int(step),
                              summary=summary.Summary(value=values))
      self._events.write_event(event)
      self._events.flush()

  def close(self) -> None:
    self._events.close()


def as_writer(writer: "ScalarWriter | str | os.PathLike | None") -> ScalarWriter | None:
  """A writer from a writer, a log directory (-> TensorBoardWriter) or None."""
  if writer is None or isinstance(writer, ScalarWriter):
    return writer
  if isinstance(writer, (str, os.PathLike)):
    return TensorBoardWriter(writer)
  raise TypeError(f"writer {writer!r}: expected an object with write_scalars(step, scalars) or a log directory")


# Record fields logged per (task, probe), and the tag each gets.
_FIELDS = (("predicted", "predicted"), ("predicted_low", "predicted_low"), ("predicted_high", "predicted_high"),
           ("measured", "measured"), ("audited", "audited"), ("audited_low", "audited_low"),
           ("audited_high", "audited_high"), ("predicted_recalibrated", "predicted_recalibrated"),
           ("drift", "drift"))


def record_scalars(records: Iterable[Mapping]) -> dict[str, float]:
  """{`<field>/<task>/<probe>`: value} for the numeric fields of monitor or watcher records."""
  out = {}
  for r in records:
    for field, tag in _FIELDS:
      v = r.get(field)
      if isinstance(v, (int, float)) and not isinstance(v, bool):
        out[f"{tag}/{r['task']}/{r['probe']}"] = float(v)
  return out
