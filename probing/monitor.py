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

Any model: pass `forward=fn`, a callable `(params_or_model, input_ids, attention_mask) -> hidden
states` (a mapping layer -> [B, T, D], or the sequence of all of them, embeddings first), and
give `maybe_run` whatever `fn` takes (a MaxText or levanter params tree, a module). Ids are
left-padded int32 [B, T] and the mask is boolean (False on padding). `writer` (a
`probing.tensorboard.ScalarWriter`, or a log directory for TensorBoard event files) receives the
predicted accuracies, their interval bounds and the call's seconds at each monitored step.
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models import io, multihost
from probing import cards
from probing import features as features_lib
from probing import tensorboard
from probing.eval import audited as audited_lib
from probing.probes.trained import ProbeWindowWarning
from probing import tasks as task_registry


class ProbeMonitor:
  """Logs predicted per-task accuracy from live params every `every` steps."""

  def __init__(self, probes: Mapping[str, "object"], questions: Mapping[str, Sequence], tokenizer,
               spec: features_lib.ExtractSpec | None = None, *, every: int, mesh=None,
               log: Callable[[str], None] = print, out_path: str | None = None,
               prompt_format_hashes: Mapping[str, str] | None = None,
               forward: Callable[[Any, Any, Any], Any] | None = None,
               writer: "tensorboard.ScalarWriter | str | None" = None):
    """`probes`: name -> TrainedProbe; `questions`: task -> questions; `spec` replaces each probe's
    own `extract_spec()` (e.g. another batch size); `prompt_format_hashes` (task -> hash; default:
    the registered tasks' own) must match each probe's card; `forward`: a user's model as a
    function (see the module docstring); `writer`: where scalars go (see the module docstring)."""
    if every < 1:
      raise ValueError(f"monitor every={every}: must be >= 1")
    if not probes:
      raise ValueError("monitor needs at least one trained probe")
    self.formats = dict(prompt_format_hashes) if prompt_format_hashes is not None else _registry_formats(questions)
    for name, probe in probes.items():
      probe.check_tasks(questions, name=name, formats=self.formats)
    if forward is not None:
      needs_head = sorted(name for name, probe in probes.items() if probe.spec.uses_nll)
      if needs_head:
        raise ValueError(f"probe(s) {needs_head} read the gold-answer NLL, which needs the model's LM head; a "
                         "forward gives hidden states only (use Olmo3, or a probe without NLL inputs)")
    self.forward = forward
    self.writer = tensorboard.as_writer(writer)
    self.probes = dict(probes)
    self.questions = {t: list(qs) for t, qs in questions.items()}
    self.tokenizer, self.spec, self.every, self.mesh, self.log = tokenizer, spec, every, mesh, log
    self.out_path = out_path
    self.history: list[dict] = []
    self.call_seconds: list[float] = []
    self._warned: set[str] = set()  # probes already warned about a step outside their validity window
    # probe -> task -> the offset the last audit fitted, carried into every later call.
    self.offsets: dict[str, dict[str, float]] = {}

  def predict(self, step: int, model, audit_labels: Sequence[Mapping] | None = None) -> list[dict]:
    """Extracts features from `model` as it is now and applies every probe; returns records.

    `audit_labels`: label records (task, question_id, c, k) of a random audit of the monitored
    questions at this step (e.g. `launch.label --config.data.audit=32` on the saved checkpoint);
    records of audited tasks then carry the audited estimate (`probing.eval.audited.audit_tasks`:
    PPI++ with its 95% t interval) and `stale`, the "probe stale: relabel" alarm. Each audit's
    offset (`probing.eval.audited.recalibration`) is carried into later calls: their records add
    `predicted_recalibrated`, the probe's accuracy through it, and the next audit's stale test
    reads it."""
    # Training steps are dispatched asynchronously: wait for the queued ones first, so their time
    # is not counted as the monitor's.
    if self.forward is None:
      jax.block_until_ready(nnx.state(model, nnx.Param))
    else:
      jax.block_until_ready(nnx.state(model) if isinstance(model, nnx.Module) else model)
      model = ForwardModel.of(self.forward, model)
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
        pred = probe.predict_model(model, self.tokenizer, self.questions, mesh=self.mesh, spec=self._spec(probe),
                                   checkpoint=f"live-{step}", checkpoint_step=int(step),
                                   prompt_format_hashes=self.formats)
      data, p = pred.data, pred.p
      audited, offsets = {}, self.offsets.setdefault(name, {})
      if audit_labels:
        audited = audited_lib.audit_tasks(pred.records(), audit_labels, offsets=offsets)
      for task in self.questions:
        rows = data.task == task
        low, high = _bootstrap_interval(np.asarray(p)[rows])
        records.append({"step": int(step), "probe": name, "task": task, "predicted": float(np.mean(p[rows])),
                        "predicted_low": low, "predicted_high": high,
                        "n_questions": int(rows.sum()), "in_validity_window": outside is None})
        if task in offsets:
          moved = audited_lib.recalibrate(np.asarray(p)[rows], offsets[task])
          records[-1]["predicted_recalibrated"] = float(moved.mean())
        if task in audited:
          a = audited[task]
          records[-1].update(audited=a["ppi"]["estimate"], audited_low=a["ppi"]["ci"][0],
                             audited_high=a["ppi"]["ci"][1], audit_size=a["n"], stale=a["alarm"],
                             residual_p_value=a["residual_p_value"])
          offsets[task] = a["recalibration"]
          if a["alarm"]:
            self.log(f"probe stale: relabel ({name} on {task} at step {step}: the audit puts its accuracy off "
                     f"by more than {a['stale_tolerance']}, p = {a['residual_p_value']:.3g})")
    seconds = time.perf_counter() - t0
    for r in records:
      r["seconds"] = round(seconds, 4)
    self.call_seconds.append(seconds)
    return records

  def maybe_run(self, step: int, model, audit_labels: Sequence[Mapping] | None = None) -> list[dict] | None:
    """Runs at every `every`-th step (step counted from 1); returns the new records or None."""
    if step % self.every:
      return None
    records = self.predict(step, model, audit_labels)
    self.history.extend(records)
    summary = ", ".join(f"{r['task']}={r['predicted']:.2f}" for r in records if r["probe"] == records[0]["probe"])
    self.log(f"monitor step {step} ({records[0]['probe']}, {records[0]['seconds']:.2f}s): {summary}")
    if self.out_path and multihost.is_writer():  # every process holds the same records
      io.append_jsonl(self.out_path, records)
    if self.writer is not None:
      scalars = tensorboard.record_scalars(records)
      scalars["monitor/seconds"] = records[0]["seconds"]
      self.writer.write_scalars(step, scalars)
    return records

  def _spec(self, probe) -> features_lib.ExtractSpec | None:
    """The extraction for `probe`; a user's forward has no shared-prefix cache, so none is used."""
    if self.forward is None:
      return self.spec
    spec = self.spec or probe.extract_spec()
    return dataclasses.replace(spec, share_prefix=False)

  def cost_seconds(self) -> dict:
    """Median wall time of a call, first (compiling) call separately."""
    s = self.call_seconds
    return {"first_call": s[0] if s else None, "median_warm": float(np.median(s[1:])) if len(s) > 1 else None,
            "calls": len(s)}


def _bootstrap_interval(p: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
  """95% bootstrap interval of mean p over questions (the recipe of `Prediction.task_accuracy`)."""
  if len(p) == 0:
    return float("nan"), float("nan")
  boot = p[np.random.default_rng(seed).integers(0, len(p), size=(n_boot, len(p)))].mean(axis=1)
  low, high = np.percentile(boot, [2.5, 97.5])
  return float(low), float(high)


@dataclasses.dataclass(frozen=True)
class _Shape:
  """What the prediction path asks of a model's config."""
  num_hidden_layers: int
  hidden_size: int


class _Output:
  def __init__(self, hidden_states):
    self.hidden_states = hidden_states


class ForwardModel(nnx.Module):
  """A user's forward and its params, as the model `TrainedProbe.predict_model` calls: the params
  are its state (traced, so new params reuse the compiled pass), the function its static part."""

  def __init__(self, forward: Callable, params: Any, shape: _Shape):
    self.forward = forward
    self.params = nnx.data(params)
    self.config = shape

  @classmethod
  def of(cls, forward: Callable, params: Any) -> "ForwardModel":
    """Wraps `params`; depth and width come from the forward's output shapes (nothing runs)."""
    ids = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    mask = jax.ShapeDtypeStruct((1, 8), jnp.bool_)
    out = jax.eval_shape(forward, params, ids, mask)
    layers = dict(out) if isinstance(out, Mapping) else dict(enumerate(out))
    if not layers:
      raise ValueError("the monitor's forward returned no hidden states")
    widths = {int(v.shape[-1]) for v in layers.values()}
    if len(widths) != 1 or any(len(v.shape) != 3 for v in layers.values()):
      raise ValueError(f"the monitor's forward must return [B, T, D] hidden states of one width; got "
                       f"{ {k: tuple(v.shape) for k, v in layers.items()} }")
    return cls(forward, params, _Shape(max(int(k) for k in layers), widths.pop()))

  def __call__(self, input_ids, attention_mask=None, *, layers=None, return_logits=False, prefix=None, **_):
    if return_logits or prefix is not None:
      raise ValueError("a user forward gives hidden states only (no logits, no prefix cache)")
    out = self.forward(self.params, input_ids, attention_mask)
    hs = out if isinstance(out, Mapping) else dict(enumerate(out))
    missing = [i for i in layers if i not in hs]
    if missing:
      raise ValueError(f"the monitor's forward returned no hidden states for layer(s) {missing}")
    return _Output({i: hs[i] for i in layers})


def _registry_formats(task_names) -> dict[str, str]:
  """Prompt-format hashes of the registered tasks among `task_names` (others are not checked)."""
  out = {}
  for t in task_names:
    try:
      out[t] = task_registry.get(t).format_hash()
    except KeyError:
      continue
  return out
