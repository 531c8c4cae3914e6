"""In-training monitor: predicted task accuracies from the live params, every N steps.

A callback for a JAX training loop. Given probes trained on labels of earlier checkpoints, it
runs each probe's one prediction path (`TrainedProbe.predict_model`: the extraction the probe
declares, then its heads) directly on the model being trained (no checkpoint export, same
mesh), and logs the predicted accuracy of each task. The extraction is compiled once and reused
across calls, so the cost per call is one prefill over the monitored questions plus the heads.

  monitor = ProbeMonitor({"linear": probe}, questions, tokenizer, every=100, mesh=mesh)
  for step in range(...):
    ...train step...
    monitor.maybe_run(step, model)
  monitor.history  # [{"step", "probe", "task", "predicted", "seconds"}, ...]
"""
from __future__ import annotations

import time
import warnings
from typing import Callable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx

from models import io, multihost
from probing import cards
from probing import features as features_lib
from probing.probes.trained import ProbeWindowWarning
from probing import tasks as task_registry


class ProbeMonitor:
  """Logs predicted per-task accuracy from live params every `every` steps."""

  def __init__(self, probes: Mapping[str, "object"], questions: Mapping[str, Sequence], tokenizer,
               spec: features_lib.ExtractSpec | None = None, *, every: int, mesh=None,
               log: Callable[[str], None] = print, out_path: str | None = None,
               prompt_format_hashes: Mapping[str, str] | None = None):
    """`probes`: name -> TrainedProbe; `questions`: task -> questions; `spec` replaces each probe's
    own `extract_spec()` (e.g. another batch size); `prompt_format_hashes` (task -> hash; default:
    the registered tasks' own) must match each probe's card."""
    if every < 1:
      raise ValueError(f"monitor every={every}: must be >= 1")
    if not probes:
      raise ValueError("monitor needs at least one trained probe")
    self.formats = dict(prompt_format_hashes) if prompt_format_hashes is not None else _registry_formats(questions)
    for name, probe in probes.items():
      probe.check_tasks(questions, name=name, formats=self.formats)
    self.probes = dict(probes)
    self.questions = {t: list(qs) for t, qs in questions.items()}
    self.tokenizer, self.spec, self.every, self.mesh, self.log = tokenizer, spec, every, mesh, log
    self.out_path = out_path
    self.history: list[dict] = []
    self.call_seconds: list[float] = []
    self._warned: set[str] = set()  # probes already warned about a step outside their validity window

  def predict(self, step: int, model) -> list[dict]:
    """Extracts features from `model` as it is now and applies every probe; returns records."""
    # Training steps are dispatched asynchronously: wait for the queued ones first, so their time
    # is not counted as the monitor's.
    jax.block_until_ready(nnx.state(model, nnx.Param))
    t0 = time.perf_counter()
    records = []
    for name, probe in self.probes.items():
      outside = cards.step_warning(probe.card, int(step), name)
      if outside and name not in self._warned:  # once per probe, not at every call
        self._warned.add(name)
        self.log(f"warning: {outside}")
        warnings.warn(outside, ProbeWindowWarning, stacklevel=2)
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProbeWindowWarning)
        pred = probe.predict_model(model, self.tokenizer, self.questions, mesh=self.mesh, spec=self.spec,
                                   checkpoint=f"live-{step}", checkpoint_step=int(step),
                                   prompt_format_hashes=self.formats)
      data, p = pred.data, pred.p
      for task in self.questions:
        rows = data.task == task
        records.append({"step": int(step), "probe": name, "task": task, "predicted": float(np.mean(p[rows])),
                        "n_questions": int(rows.sum()), "in_validity_window": outside is None})
    seconds = time.perf_counter() - t0
    for r in records:
      r["seconds"] = round(seconds, 4)
    self.call_seconds.append(seconds)
    return records

  def maybe_run(self, step: int, model) -> list[dict] | None:
    """Runs at every `every`-th step (step counted from 1); returns the new records or None."""
    if step % self.every:
      return None
    records = self.predict(step, model)
    self.history.extend(records)
    summary = ", ".join(f"{r['task']}={r['predicted']:.2f}" for r in records if r["probe"] == records[0]["probe"])
    self.log(f"monitor step {step} ({records[0]['probe']}, {records[0]['seconds']:.2f}s): {summary}")
    if self.out_path and multihost.is_writer():  # every process holds the same records
      io.append_jsonl(self.out_path, records)
    return records

  def cost_seconds(self) -> dict:
    """Median wall time of a call, first (compiling) call separately."""
    s = self.call_seconds
    return {"first_call": s[0] if s else None, "median_warm": float(np.median(s[1:])) if len(s) > 1 else None,
            "calls": len(s)}


def _registry_formats(task_names) -> dict[str, str]:
  """Prompt-format hashes of the registered tasks among `task_names` (others are not checked)."""
  out = {}
  for t in task_names:
    try:
      out[t] = task_registry.get(t).format_hash()
    except KeyError:
      continue
  return out
