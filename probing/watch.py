"""Follow a training run: probe every complete checkpoint once, in step order, into a timeline.

A run's checkpoint directory holds step directories as `launch.pretrain` writes them
(`models.checkpoint` format: built under a hidden temporary name, renamed when whole), as an
orbax `CheckpointManager` writes them (`<step>` or `<prefix>_<step>`, built under
`*.orbax-checkpoint-tmp-*` names, or finalized by `commit_success.txt` on object stores), and HF
directories (config.json + safetensors). A directory is probed only when it is complete: not an
orbax temporary, orbax says it is finalized, our `metadata.json` is in place, or for HF every
shard the index names is present and as long as its own header says. Each is opened through
`probing.checkpoints.open_checkpoint` and predicted through `TrainedProbe.predict_model`.

Per (checkpoint, task, probe) one record goes to `OUT/timeline.jsonl` (all records of a
checkpoint in one fsynced append: a checkpoint is either in the timeline or not); the timeline is
the watcher's only state, so a restart continues where it stopped (a torn or partial checkpoint's
records are dropped and it is probed again). `OUT/timeline.png` is redrawn and TensorBoard
scalars are written at the checkpoint's own training step after every checkpoint. A checkpoint
that cannot be read is reported by name and skipped (tried again by a later run of the watcher).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import struct
import time
import zlib
from typing import Callable, Mapping, Sequence

import numpy as np
from absl import logging
from etils import epath

from models import io
from probing import checkpoints as checkpoints_lib
from probing import tensorboard
from probing.eval import audited as audited_lib

TIMELINE = "timeline.jsonl"
FIGURE = "timeline.png"
TENSORBOARD_DIR = "tensorboard"
ORBAX_TMP = ".orbax-checkpoint-tmp"
_STEP_NAME = re.compile(r"^(?:.*[_-])?(\d+)$")  # '12', 'step_000012', 'checkpoint-12'


class WatchError(ValueError):
  """Bad watcher input (run dir, probes, tasks), reported in one line."""


# ----------------------------------------------------------------------------- what is complete


@dataclasses.dataclass(frozen=True)
class Candidate:
  """A directory in the run's checkpoint dir: where its checkpoint is, and whether it is whole."""
  name: str  # the step directory's name (records' `checkpoint` unless the metadata names one)
  path: str  # the directory `open_checkpoint` reads (the step dir, or its one checkpoint item)
  complete: bool
  why: str = ""  # what is missing, when not complete


def checkpoints_dir(run_dir: str) -> str:
  """A run's work dir (with `checkpoints/`) or its checkpoints dir itself."""
  run_dir = io.absolute(run_dir)
  inner = os.path.join(run_dir, "checkpoints")
  return inner if epath.Path(inner).is_dir() else run_dir


def safetensors_whole(path: str) -> str:
  """'' when the safetensors file is as long as its header says, else what is wrong."""
  try:
    size = epath.Path(path).stat().length
    with epath.Path(path).open("rb") as f:
      head = f.read(8)
      if len(head) < 8:
        return f"{os.path.basename(path)} has no header yet"
      n = struct.unpack("<Q", head)[0]
      if 8 + n > size:
        return f"{os.path.basename(path)} is shorter than its header"
      header = json.loads(f.read(n))
  except FileNotFoundError:
    return f"{os.path.basename(path)} is missing"
  except (OSError, ValueError) as e:
    return f"{os.path.basename(path)}: unreadable header ({e})"
  end = max([v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"] or [0])
  if size != 8 + n + end:
    return f"{os.path.basename(path)} has {size} of {8 + n + end} bytes"
  return ""


def hf_whole(path: str) -> str:
  """'' when a HF directory's config and every weight shard are in place and fully sized."""
  if not (epath.Path(path) / "config.json").exists():
    return "no config.json"
  index = epath.Path(path) / "model.safetensors.index.json"
  if index.exists():
    try:
      shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError) as e:
      return f"model.safetensors.index.json unreadable ({e})"
  elif (epath.Path(path) / "model.safetensors").exists():
    shards = ["model.safetensors"]
  else:
    return "no model.safetensors or index yet"
  for shard in shards:
    why = safetensors_whole(os.path.join(path, shard))
    if why:
      return why
  return ""


def _orbax_finalized(path: str) -> bool:
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  return bool(ocp.path.step.is_path_finalized(path))


def inspect_dir(path: str) -> Candidate:
  """Where the checkpoint of a step directory is and whether it is complete."""
  name = os.path.basename(path.rstrip("/"))

  def whole(target):  # ours: metadata.json is written last (locally: then renamed); HF: every shard
    if (epath.Path(target) / "metadata.json").exists():
      return Candidate(name, target, True)
    if (epath.Path(target) / "config.json").exists():
      why = hf_whole(target)
      return Candidate(name, target, not why, why)
    return None

  # Ours and HF dirs say themselves when they are whole (on an object store orbax's commit marker
  # is only in the dirs orbax's CheckpointManager writes); a manager's step dir must be finalized.
  found = whole(path)
  if found:
    return found
  if not _orbax_finalized(path):
    return Candidate(name, path, False, "orbax has not finalized it (no commit marker)")
  for item in sorted(d.name for d in epath.Path(path).iterdir() if d.is_dir() and not d.name.startswith(".")):
    found = whole(os.path.join(path, item))
    if found:
      return found
  return Candidate(name, path, False, "no metadata.json or config.json (yet)")


def scan(run_dir: str) -> list[Candidate]:
  """Every step directory of the run (temporary names left out), complete or not, by name."""
  root = checkpoints_dir(run_dir)
  if not epath.Path(root).is_dir():
    return []
  out = []
  for entry in sorted(d.name for d in epath.Path(root).iterdir()):
    path = os.path.join(root, entry)
    if entry.startswith(".") or ORBAX_TMP in entry or not epath.Path(path).is_dir():
      continue  # temporary names: a checkpoint being written
    out.append(inspect_dir(path))
  return out


def identify(c: Candidate) -> tuple[str, int]:
  """(record id, training step) of a complete candidate, without reading weights: our metadata's,
  else the directory name's (`step_N`, `stageK-stepN`, or a CheckpointManager's plain `N`)."""
  item = os.path.basename(c.path) != c.name  # a checkpoint item inside a CheckpointManager step dir
  name, step = checkpoints_lib.checkpoint_id(c.path, name=c.name if item else None)
  if step is None:
    m = _STEP_NAME.match(c.name)
    step = int(m.group(1)) if m else None
  if step is None:
    raise checkpoints_lib.CheckpointError(f"checkpoint {c.name!r}: cannot tell its training step from its "
                                          "metadata or name")
  return name, int(step)


# ----------------------------------------------------------------------------- the timeline


def read_timeline(out: str) -> list[dict]:
  """Records of OUT/timeline.jsonl; a torn last line (a killed append) is left out."""
  path = os.path.join(out, TIMELINE)
  if not os.path.exists(path):
    return []
  records = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      if not line.endswith("\n"):
        break
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        break
  return records


def timeline_seed(checkpoint: str, task: str) -> int:
  """A stable seed per (checkpoint, task): a rerun draws the same audit."""
  return zlib.crc32(f"{checkpoint}/{task}".encode())


def plot_timeline(records: Sequence[Mapping], path: str) -> None:
  """Predicted accuracy per task over steps (one line per probe, its interval as a band), and
  measured accuracy where labels exist."""
  from probing.eval import report  # pylint: disable=import-outside-toplevel
  steps = sorted({r["checkpoint_step"] for r in records})
  tasks = sorted({r["task"] for r in records})
  probes = sorted({r["probe"] for r in records})
  at = {(r["checkpoint_step"], r["task"], r["probe"]): r for r in records}
  predicted = {t: {p: [at.get((s, t, p), {}).get("predicted") for s in steps] for p in probes} for t in tasks}
  ci = {t: {p: ([at.get((s, t, p), {}).get("predicted_low") for s in steps],
                [at.get((s, t, p), {}).get("predicted_high") for s in steps]) for p in probes} for t in tasks}
  measured = {}
  for t in tasks:
    vals = [next((r.get("measured") for p in probes if (r := at.get((s, t, p))) is not None
                  and r.get("measured") is not None), None) for s in steps]
    if any(v is not None for v in vals):
      measured[t] = vals
  missing = [t for t in tasks if t not in measured]
  report.plot_accuracy_curves(steps, measured, predicted, path, ci=ci,
                              title="Predicted task accuracy over the run" + (
                                  "" if not missing else " (no labels: predicted only)"))


# ----------------------------------------------------------------------------- the watcher


class Watcher:
  """Probes each complete checkpoint of `run_dir` once, appending to `out`'s timeline.

  `probes`: {name: TrainedProbe}; `questions`: {task: questions}; `labels`: label records
  (measured accuracy, and with `audit_size` an audited PPI++ estimate from a random audit of
  that many labelled questions); `writer`: a `ScalarWriter` (default: TensorBoard event files
  under `out/tensorboard`); `report(message)` receives skips and progress.
  """

  def __init__(self, run_dir: str, probes: Mapping[str, object], questions: Mapping[str, Sequence], out: str, *,
               mesh=None, tokenizer=None, batch_size: int | None = None, labels: Sequence[Mapping] | None = None,
               audit_size: int = 0, prompt_format_hashes: Mapping[str, str] | None = None,
               writer: tensorboard.ScalarWriter | None = None, report: Callable[[str], None] = logging.info):
    if not probes:
      raise WatchError("no trained probes to watch with (--probes)")
    import jax  # pylint: disable=import-outside-toplevel
    if jax.process_count() > 1:  # processes would each scan, probe and append on their own
      raise WatchError("the watcher runs as one process (it uses every local device through --mesh); "
                       "start it without --num_processes / JAX_NUM_PROCESSES")
    self.run_dir, self.out = io.absolute(run_dir), os.path.abspath(out)
    self.probes, self.questions = dict(probes), {t: list(qs) for t, qs in questions.items()}
    self.formats = dict(prompt_format_hashes or {})
    for name, probe in self.probes.items():
      probe.check_tasks(self.questions, name=name, formats=self.formats or None)
    self.mesh, self.tokenizer, self.batch_size = mesh, tokenizer, batch_size
    self.audit_size, self.report = int(audit_size), report
    self.labels: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}  # question -> (c / k, k)
    for r in labels or ():
      cell = self.labels.setdefault((str(r["checkpoint"]), r["task"]), {})
      cell[str(r["question_id"])] = (r["c"] / r["k"], float(r["k"]))
    os.makedirs(self.out, exist_ok=True)
    self._writer = writer
    self.failed: dict[str, str] = {}  # step dir name -> why it could not be read (this run)

  @property
  def writer(self) -> tensorboard.ScalarWriter:
    if self._writer is None:
      self._writer = tensorboard.TensorBoardWriter(os.path.join(self.out, TENSORBOARD_DIR))
    return self._writer

  def expected(self) -> set[tuple[str, str]]:
    return {(t, p) for t in self.questions for p in self.probes}

  def done(self) -> set[str]:
    """Checkpoints whose records are all in the timeline; drops a partial checkpoint's records."""
    records = read_timeline(self.out)
    have: dict[str, set] = {}
    for r in records:
      have.setdefault(r["checkpoint"], set()).add((r["task"], r["probe"]))
    want = self.expected()
    whole = {ck for ck, got in have.items() if want <= got}
    path = os.path.join(self.out, TIMELINE)
    keep = [r for r in records if r["checkpoint"] in whole]
    if os.path.exists(path) and (len(keep) != len(records) or os.path.getsize(path) != _jsonl_size(records)):
      io.write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))  # torn tail, partials
    return whole

  def pending(self) -> list[tuple[int, str, Candidate]]:
    """Complete checkpoints not yet in the timeline, by step (the unreadable reported, skipped)."""
    done = self.done()
    out = []
    for c in scan(self.run_dir):
      if not c.complete or c.name in self.failed:
        if not c.complete:
          logging.debug("watch: %s not complete yet: %s", c.name, c.why)
        continue
      try:
        name, step = identify(c)
      except (checkpoints_lib.CheckpointError, OSError, ValueError, KeyError) as e:
        self._skip(c.name, e)
        continue
      if name not in done:
        out.append((step, name, c))
    return sorted(out, key=lambda x: (x[0], x[1]))

  def _skip(self, name: str, error: BaseException) -> None:
    self.failed[name] = str(error)
    self.report(f"skipped checkpoint {name}: {error}")
    io.append_jsonl(os.path.join(self.out, "skipped.jsonl"), [{"checkpoint": name, "error": str(error)}])

  def probe_checkpoint(self, name: str, step: int, c: Candidate) -> list[dict]:
    """Every probe on one checkpoint -> its records (nothing written)."""
    ck = checkpoints_lib.open_checkpoint(c.path, mesh=self.mesh, tokenizer=self.tokenizer, name=name, step=step)
    offsets = audited_lib.offsets_before(read_timeline(self.out), int(ck.step))
    records = []
    for probe_name, probe in self.probes.items():
      spec = probe.extract_spec(**({"batch_size": self.batch_size} if self.batch_size else {}))
      pred = probe.predict_model(ck.model, ck.tokenizer, self.questions, mesh=self.mesh, spec=spec,
                                 checkpoint=ck.name, checkpoint_step=ck.step,
                                 prompt_format_hashes=self.formats or None)
      acc = pred.task_accuracy()
      drift = (probe.card.get("drift") or {}).get("threshold")
      for task in self.questions:
        cell = acc[f"{ck.name}/{task}"]
        rows = pred.data.task == task
        rec = {"checkpoint": ck.name, "checkpoint_step": int(ck.step), "task": task, "probe": probe_name,
               "predicted": cell["predicted"], "predicted_low": cell["predicted_ci"][0],
               "predicted_high": cell["predicted_ci"][1], "n_questions": int(rows.sum()),
               "in_validity_window": probe.check_step(ck.step, probe_name) is None}
        if drift is not None:  # set by a drift check on the probe's card
          rec["drift_threshold"] = drift
        offset = offsets.get((probe_name, task))
        if offset is not None:
          rec.update(carried_offset=offset,
                     predicted_recalibrated=float(audited_lib.recalibrate(pred.p[rows], offset).mean()))
        rec.update(self._measured(ck.name, task, pred.data.question_id[rows], pred.p[rows], offset))
        records.append(rec)
    del ck
    return records

  def _measured(self, checkpoint: str, task: str, qids, p, offset: float | None = None) -> dict:
    """Measured accuracy where every question has labels; the audited estimate
    (`probing.eval.audited.audited_accuracy`: PPI++ with its t interval, the stale alarm through
    the `offset` carried from the last audit, and this audit's own offset) where only a random
    audit is labelled (`launch.label --config.data.audit=N`), or, with `audit_size`, from a seeded
    random audit of fully labelled questions."""
    labels = self.labels.get((checkpoint, task))
    if not labels:
      return {}
    from probing.eval import audit  # pylint: disable=import-outside-toplevel
    have = np.asarray([i for i, q in enumerate(qids) if str(q) in labels], np.int64)
    y, k = (np.asarray([labels[str(qids[i])][j] for i in have]) for j in (0, 1))
    out = {"n_labelled": len(have)}
    if len(have) == len(qids):
      out["measured"] = float(y.mean())
      if self.audit_size and len(qids) > self.audit_size >= 2:
        draw = audit.draw_audit(len(qids), self.audit_size, seed=timeline_seed(checkpoint, task))
        have, y, k = draw.indices, y[draw.indices], k[draw.indices]
      else:
        return out
    if len(have) < 2:
      return out
    est = audited_lib.audited_accuracy(p, y, p[have], k_audit=k, offset=offset)
    out.update(audited=est["ppi"]["estimate"], audited_low=est["ppi"]["ci"][0], audited_high=est["ppi"]["ci"][1],
               audit_size=est["n"], stale=est["alarm"], residual_p_value=est["residual_p_value"],
               recalibration=est["recalibration"])
    if est["alarm"]:
      self.report(f"probe stale: relabel ({task} at {checkpoint}: the audit puts the probe's accuracy "
                  f"off by more than {est['stale_tolerance']}, p = {est['residual_p_value']:.3g})")
    return out

  def commit(self, records: list[dict]) -> None:
    """Scalars at the checkpoint's step, then the records (the commit), then the figure."""
    step = records[0]["checkpoint_step"]
    self.writer.write_scalars(step, tensorboard.record_scalars(records))
    io.append_jsonl(os.path.join(self.out, TIMELINE), records)
    plot_timeline(read_timeline(self.out), os.path.join(self.out, FIGURE))

  def sweep(self) -> list[str]:
    """Probes every pending checkpoint in step order; returns the names probed."""
    probed = []
    for step, name, c in self.pending():
      t0 = time.perf_counter()
      try:
        records = self.probe_checkpoint(name, step, c)
      except (checkpoints_lib.CheckpointError, OSError, ValueError) as e:
        self._skip(c.name, e)
        continue
      self.commit(records)
      probed.append(name)
      self.report(f"probed {name} (step {step}) in {time.perf_counter() - t0:.1f}s: " + ", ".join(
          f"{r['task']}/{r['probe']}={r['predicted']:.3f}" for r in records))
    return probed

  def follow(self, poll_seconds: float, *, stop: Callable[[], bool] = lambda: False) -> None:
    """Sweeps, then polls every `poll_seconds` until `stop()` (or the process is killed)."""
    while True:
      self.sweep()
      if stop():
        return
      time.sleep(poll_seconds)


def _jsonl_size(records: Sequence[Mapping]) -> int:
  return sum(len((json.dumps(r, sort_keys=True) + "\n").encode()) for r in records)


def probe_dir(path: str) -> str:
  """A saved probe's directory: `path` itself or a train_probes out dir's `probe/`."""
  path = os.path.abspath(os.fspath(path))
  inner = os.path.join(path, "probe")
  if not os.path.exists(os.path.join(path, "probe_card.json")) and os.path.isdir(inner):
    return inner
  return path


def shared_tasks(probes) -> list[str]:
  """The tasks every probe was trained on, in the first probe's order."""
  probes = list(probes)
  common = [t for t in probes[0].tasks if all(t in p.tasks for p in probes[1:])]
  if not common:
    raise WatchError("the probes share no task; pass --tasks")
  return common
