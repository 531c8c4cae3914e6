"""A trained probe: heads, training-row standardization and its card; the one prediction path.

`TrainedProbe.extract_spec()` says what the probe needs from a model (declared once, from its
own `ProbeSpec` and card, the way gemma's `SowConfig` declares what a transformer emits), and
`TrainedProbe.predict_model(model, tokenizer, questions)` is the one card -> extract -> predict
path that the predict job, the in-training monitor and the demo all call. `load_probe(path)` is
the one way to open a saved probe.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
import warnings
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models import io
from probing import cards
from probing import features as features_lib
from probing.eval.baselines import cell_accuracy, to_records
from probing.probes.config import ProbeConfig
from probing.probes.data import ProbeData, build_data, center_cells, standardize
from probing.probes.heads import Probe, ProbeError, ProbeSpec, build_probe, check_inputs, flat_params, set_flat_params

CARD = cards.CARD


class ProbeWindowWarning(UserWarning):
  """A checkpoint step outside the card's validity window: the prediction is an extrapolation."""


# ----------------------------------------------------------------------------- applying heads


def bucket(n: int) -> int:
  """Row counts padded to few sizes (powers of two, then multiples of 1024): fewer compiles."""
  return max(64, 1 << (n - 1).bit_length()) if n <= 1024 else -(-n // 1024) * 1024


@functools.lru_cache(maxsize=64)
def _applier(graphdef):
  return jax.jit(lambda state, batch: jax.nn.sigmoid(nnx.merge(graphdef, state)(batch)))


def apply(probe: Probe, inputs: Mapping[str, np.ndarray], chunk: int | None = None) -> np.ndarray:
  """Predicted p for standardized inputs, in padded row chunks (bounded memory, few compiles).

  The default chunk keeps one chunk's inputs near 256 MiB (token states of a 7B are ~1 MiB a row).
  """
  graphdef, state = nnx.split(probe)
  n = len(inputs["task"])
  if chunk is None:
    row_bytes = sum(v[:1].nbytes for v in inputs.values()) or 1
    chunk = int(min(4096, max(16, 1 << ((2 ** 28 // row_bytes).bit_length() - 1))))
  out = []
  for a in range(0, n, chunk):
    part = {k: v[a:a + chunk] for k, v in inputs.items()}
    m = len(part["task"])
    size = min(bucket(m), chunk)
    padded = {k: jnp.asarray(np.concatenate([v, np.zeros((size - m,) + v.shape[1:], v.dtype)]))
              for k, v in part.items()}
    out.append(np.asarray(_applier(graphdef)(state, padded))[:m])
  return np.concatenate(out) if out else np.zeros((0,), np.float32)


def _select(inputs: Mapping[str, np.ndarray], spec: ProbeSpec) -> dict[str, np.ndarray]:
  keys = ["task", "y"] + (["x"] if spec.uses_x else [])
  keys += ["tokens", "tokens_mask"] if spec.uses_tokens else []
  keys += ["nll"] if spec.uses_nll else []
  keys += ["nll_logit"] if spec.nll_anchor else []
  return {k: inputs[k] for k in keys if k in inputs}


# ----------------------------------------------------------------------------- the trained probe


@dataclasses.dataclass
class Prediction:
  """What `predict_model` returns: the rows, their predicted pass@1, the features and timings."""
  data: ProbeData
  p: np.ndarray
  features: list
  seconds: dict

  def task_accuracy(self) -> dict:
    """task -> predicted accuracy (mean p) with a bootstrap interval over questions."""
    return cell_accuracy(self.data, self.p)

  def records(self) -> list[dict]:
    return to_records(self.data, self.p)


@dataclasses.dataclass
class TrainedProbe:
  """Heads ('shared', or one per task), the training-row standardization and the probe card."""
  config: ProbeConfig
  spec: ProbeSpec
  heads: dict[str, Probe]
  stats: dict[str, np.ndarray]
  tasks: list[str]
  card: dict

  # -- what the probe reads

  @property
  def layers(self) -> tuple[int, ...]:
    """Pooled layers the head reads (none for token-state families)."""
    return tuple(self.card["layers"]) if self.spec.uses_x else ()

  @property
  def pooling(self) -> str:
    return self.card["pooling"]

  def extract_spec(self, **overrides) -> features_lib.ExtractSpec:
    """The smallest extraction that feeds this probe, with the settings its training features
    were extracted with (reference EOS, truncation, store dtype); `overrides` change the rest
    (batch size, length bucket, ...)."""
    trained = dict(self.card.get("extract") or {})
    want = dict(layers=self.layers, pooling=tuple(self.pooling.split("+")),
                token_layer=self.card.get("token_layer") if self.spec.uses_tokens else None,
                hybrid=self.spec.uses_nll)
    fields = {f.name for f in dataclasses.fields(features_lib.ExtractSpec)}
    return features_lib.ExtractSpec(**{k: v for k, v in trained.items() if k in fields} | want | overrides)

  def check_tasks(self, tasks, name: str | None = None, formats: Mapping[str, str] | None = None) -> None:
    """Raises ProbeError naming the tasks this probe was not trained on, or (with `formats`,
    task -> prompt-format hash) a task whose prompt format differs from the card's; before any
    model work."""
    name = name or self.card.get("family")
    unknown = sorted(set(tasks) - set(self.tasks))
    if unknown:
      raise ProbeError(f"probe {name!r} was not trained on task(s) {unknown} (it knows {self.tasks})")
    changed = cards.format_mismatches(self.card, formats)
    if changed:
      raise ProbeError(f"probe {name!r} was trained on other prompt formats: " + "; ".join(
          f"task {t} has prompt format {now}, the probe's card {was}" for t, (was, now) in sorted(changed.items()))
          + " (retrain the probe, or predict with the prompts it was trained on)")

  def check_step(self, step: int | None, name: str | None = None) -> str | None:
    """Warns (ProbeWindowWarning) when `step` lies outside the card's validity window; returns
    the warning or None."""
    msg = cards.step_warning(self.card, step, name)
    if msg:
      warnings.warn(msg, ProbeWindowWarning, stacklevel=3)
    return msg

  def build_data(self, feature_sets: Sequence, labels=None) -> ProbeData:
    """Rows of the given feature sets (joined with labels if given) holding what the heads read."""
    return build_data(feature_sets, labels, layers=self.layers, pooling=self.pooling,
                      tokens=self.spec.uses_tokens, nll=self.spec.uses_nll)

  def inputs(self, data: ProbeData, rows=None, center_rows=None) -> dict[str, np.ndarray]:
    """Standardized, width-checked inputs (+ task index) of `rows` of data.

    With `center='checkpoint_task'` the pooled features are first centered per cell, on the mean
    of the `center_rows` among them (default: all; see `probing.probes.data.center_cells`).
    """
    if center_rows is not None and rows is not None:
      center_rows = np.asarray(center_rows, bool)[np.asarray(rows)]
    data = data if rows is None else data.subset(rows)
    where = f"features of {sorted(set(data.checkpoint))}"
    check_inputs(self.spec, data.inputs, where=where)
    trained_tok = {f.get("tokenizer_hash") for f in self.card.get("features") or []}
    got_tok = {f.get("tokenizer_hash") for f in data.meta.get("features") or []}
    if trained_tok and got_tok and got_tok != trained_tok:
      raise ProbeError(f"{where}: tokenizer {sorted(map(str, got_tok))} differs from the "
                       f"one the probe was trained with {sorted(map(str, trained_tok))}")
    self.check_tasks(data.task)
    if self.config.center == "checkpoint_task":
      data = center_cells(data, center_rows)
    out = standardize(data.inputs, self.stats)
    if self.spec.nll_anchor:  # raw columns: sum and log(1 - exp(-sum)) (probes.data.nll_features)
      out["nll_logit"] = (-data.inputs["nll"][:, 1] - data.inputs["nll"][:, 2]).astype(np.float32)
    out["task"] = np.asarray([self.tasks.index(t) for t in data.task], np.int32)
    return _select(out, self.spec)

  # -- prediction

  def predict(self, data: ProbeData, center_rows=None) -> np.ndarray:
    """Predicted pass@1 for every row of data (`center_rows`: see `inputs`)."""
    inputs = self.inputs(data, center_rows=center_rows)
    inputs.pop("y", None)
    if "shared" in self.heads:
      return apply(self.heads["shared"], inputs)
    p = np.full(len(data), np.nan, np.float32)
    for t, head in self.heads.items():
      rows = data.task == t
      if rows.any():
        sub = {k: v[rows] for k, v in inputs.items()}
        sub["task"] = np.zeros(rows.sum(), np.int32)
        p[rows] = apply(head, sub)
    return p

  def predict_model(self, model, tokenizer, questions: Mapping[str, Sequence[Any]], *, mesh=None,
                    checkpoint: str = "", checkpoint_step: int = -1,
                    prompt_format_hashes: Mapping[str, str] | None = None, labels=None,
                    spec: features_lib.ExtractSpec | None = None, on_batch=None, **spec_overrides) -> Prediction:
    """Predicted pass@1 of `questions` ({task: questions}) from one prefill pass of `model`.

    Checks the tasks and their prompt formats before any model work, and warns when
    `checkpoint_step` lies outside the card's validity window; every task's questions run in one
    length-sorted extraction (`features.extract_tasks`). With `labels` (records of this
    checkpoint) the rows carry them, for metrics. `spec` replaces `extract_spec(**spec_overrides)`;
    `on_batch(i, n)` follows the extraction's batches (progress lines).
    """
    self.check_tasks(questions, formats=prompt_format_hashes)
    self.check_step(checkpoint_step)
    spec = spec or self.extract_spec(**spec_overrides)
    t0 = time.perf_counter()
    sets = features_lib.extract_tasks(model, tokenizer, questions, spec, mesh=mesh, checkpoint=checkpoint,
                                      checkpoint_step=checkpoint_step,
                                      prompt_format_hashes=prompt_format_hashes, on_batch=on_batch)
    t1 = time.perf_counter()
    data = self.build_data(sets, labels)
    p = self.predict(data)
    return Prediction(data, p, sets, {"extract": t1 - t0, "predict": time.perf_counter() - t1})

  # -- files

  def save(self, path: str | os.PathLike) -> None:
    """Params and standardization stats with orbax under path/params, then the card (written last).
    In a multi-process run every process calls it (orbax's save is collective); process 0 writes."""
    import orbax.checkpoint as ocp
    from models import multihost  # pylint: disable=import-outside-toplevel
    path = io.absolute(path)
    if multihost.is_writer():
      io.mkdirs(path)
    tree = {"heads": {name: flat_params(h) for name, h in self.heads.items()},
            "stats": {k: np.asarray(v) for k, v in self.stats.items()}}
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(os.path.join(path, "params"), tree, force=True)
    ckpt.wait_until_finished()
    if multihost.is_writer():
      io.write_json(os.path.join(path, CARD), self.card, indent=1)


def load_probe(path: str | os.PathLike) -> TrainedProbe:
  """Opens a probe saved by `TrainedProbe.save`."""
  import orbax.checkpoint as ocp

  from etils import epath  # pylint: disable=import-outside-toplevel
  path = io.absolute(path)
  card_file = epath.Path(path) / CARD
  if not card_file.exists():
    raise ProbeError(f"{path}: no {CARD}; not a (complete) saved probe")
  card = json.loads(card_file.read_text())
  spec = ProbeSpec(**card["spec"])
  heads = {name: build_probe(spec) for name in card["heads"]}
  target = {"heads": {n: {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in flat_params(h).items()}
                      for n, h in heads.items()},
            "stats": {k: jax.ShapeDtypeStruct(tuple(s), np.float32)
                      for k, s in card["standardization"]["shapes"].items()}}
  tree = ocp.StandardCheckpointer().restore(os.path.join(path, "params"), target)
  heads = {n: set_flat_params(h, tree["heads"][n]) for n, h in heads.items()}
  stats = {k: np.asarray(v) for k, v in tree["stats"].items()}
  config = dict(card["config"])
  if "train" not in card:  # cards written before the train section existed mixed both in "config"
    config = {f.name: config[f.name] for f in dataclasses.fields(ProbeConfig) if f.name in config}
  return TrainedProbe(ProbeConfig(**config), spec, heads, stats, list(card["tasks"]), card)
