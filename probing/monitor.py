"""In-training monitor: predicted task accuracies from the live params, every N steps.

A callback for a JAX training loop. Given probes trained on labels of earlier checkpoints, it
runs the same one-pass feature extraction the offline pipeline uses, directly on the model being
trained (no checkpoint export, same mesh), applies the probes, and logs the predicted accuracy
of each task. The extraction function is compiled once and reused across calls, so the cost
per call is one prefill over the monitored questions plus the probe heads.

  monitor = ProbeMonitor({"linear": probe}, questions, tokenizer, spec, every=100, mesh=mesh)
  for step in range(...):
    ...train step...
    monitor.maybe_run(step, model)
  monitor.history  # [{"step", "probe", "task", "predicted", "seconds"}, ...]
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx

from probing import features as features_lib
from probing.probe_data import build_data


class ProbeMonitor:
  """Logs predicted per-task accuracy from live params every `every` steps."""

  def __init__(self, probes: Mapping[str, "object"], questions: Mapping[str, Sequence], tokenizer,
               spec: features_lib.ExtractSpec, *, every: int, mesh=None, log: Callable[[str], None] = print,
               out_path: str | None = None):
    if every < 1:
      raise ValueError(f"monitor every={every}: must be >= 1")
    if not probes:
      raise ValueError("monitor needs at least one trained probe")
    for name, probe in probes.items():
      unknown = sorted(set(questions) - set(probe.tasks))
      if unknown:
        raise ValueError(f"monitor probe {name!r} was not trained on task(s) {unknown}")
    self.probes = dict(probes)
    self.questions = {t: list(qs) for t, qs in questions.items()}
    self.tokenizer, self.spec, self.every, self.mesh, self.log = tokenizer, spec, every, mesh, log
    self.out_path = out_path
    self.history: list[dict] = []
    self.call_seconds: list[float] = []

  def predict(self, step: int, model) -> list[dict]:
    """Extracts features from `model` as it is now and applies every probe; returns records."""
    # Training steps are dispatched asynchronously: wait for the queued ones first, so their time
    # is not counted as the monitor's.
    jax.block_until_ready(nnx.state(model, nnx.Param))
    t0 = time.perf_counter()
    sets = features_lib.extract_tasks(model, self.tokenizer, self.questions, self.spec, mesh=self.mesh,
                                      checkpoint=f"live-{step}", checkpoint_step=int(step))
    records = []
    for name, probe in self.probes.items():
      card = probe.card
      data = build_data(sets, None, layers=tuple(card.get("layers") or ()), pooling=card.get("pooling", "mean"),
                        tokens=probe.spec.uses_tokens, nll=probe.spec.uses_nll)
      p = probe.predict(data)
      for task in self.questions:
        rows = data.task == task
        records.append({"step": int(step), "probe": name, "task": task, "predicted": float(np.mean(p[rows])),
                        "n_questions": int(rows.sum())})
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
    if self.out_path:
      _append_jsonl(self.out_path, records)
    return records

  def cost_seconds(self) -> dict:
    """Median wall time of a call, first (compiling) call separately."""
    s = self.call_seconds
    return {"first_call": s[0] if s else None, "median_warm": float(np.median(s[1:])) if len(s) > 1 else None,
            "calls": len(s)}


def _append_jsonl(path: str, records: list[dict]) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "a") as f:
    f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    f.flush()
    os.fsync(f.fileno())
