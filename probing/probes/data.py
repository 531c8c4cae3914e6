"""Probe training rows: feature stores joined with labels, leak-free splits, standardization.

Rows are (checkpoint, task, question). `build_data` joins feature sets with label records
(c correct of k samples) by (checkpoint, task, question_id) and refuses anything that does not
match. Splits:
  * by question, hash-stable: a question is a test question when sha256("task/question_id")
    maps below `test_frac`; validation questions are drawn the same way (salted) from the rest;
  * by checkpoint (earlier predicts later): train/val rows come from checkpoints with
    step <= s, test rows from held-out questions at steps > s. By default s is the step of the
    first 40% of checkpoints (at least 3, always leaving one later).
Standardization statistics are fitted on the rows given (training rows only, by the caller).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from probing.features import FeatureError, FeatureSet


class LabelJoinError(FeatureError):
  """Label records that do not join the features (missing, duplicate, inconsistent, unlabeled)."""


@dataclasses.dataclass
class ProbeData:
  """Row-aligned arrays: ids, labels (NaN when unlabeled) and probe inputs (raw)."""
  checkpoint: np.ndarray
  step: np.ndarray
  task: np.ndarray
  question_id: np.ndarray
  c: np.ndarray
  k: np.ndarray
  difficulty: np.ndarray
  greedy: np.ndarray
  inputs: dict[str, np.ndarray]
  meta: dict

  def __len__(self) -> int:
    return len(self.question_id)

  @property
  def y(self) -> np.ndarray:
    return self.c / self.k

  def subset(self, rows) -> "ProbeData":
    rows = np.asarray(rows)
    pick = lambda a: a[rows]  # noqa: E731
    return dataclasses.replace(
        self, **{f: pick(getattr(self, f)) for f in ("checkpoint", "step", "task", "question_id",
                                                     "c", "k", "difficulty", "greedy")},
        inputs={k: pick(v) for k, v in self.inputs.items()})


def _label_index(labels: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], Mapping]:
  out = {}
  for i, r in enumerate(labels):
    missing = [f for f in ("checkpoint", "checkpoint_step", "task", "question_id", "c", "k") if f not in r]
    if missing:
      raise LabelJoinError(f"label record {i}: missing field(s) {missing}")
    key = (str(r["checkpoint"]), str(r["task"]), str(r["question_id"]))
    if key in out:
      raise LabelJoinError(f"labels: duplicate record for checkpoint={key[0]!r} task={key[1]!r} "
                           f"question={key[2]!r}")
    if not 0 <= float(r["c"]) <= float(r["k"]) or float(r["k"]) <= 0:
      raise LabelJoinError(f"labels: checkpoint={key[0]!r} task={key[1]!r} question={key[2]!r} has "
                           f"c={r['c']}, k={r['k']} (need 0 <= c <= k, k > 0)")
    out[key] = r
  return out


NLL_FEATURES = 3


def nll_features(nll_mean: np.ndarray, nll_sum: np.ndarray) -> np.ndarray:
  """[N, 3]: mean and summed gold-answer NLL, and log(1 - p_ref) with p_ref = exp(-sum).

  p_ref is the probability that sampling at T = 1 reproduces the reference exactly, so
  logit(p_ref) = -sum - log(1 - p_ref) is linear in these features: a logistic head can
  represent it exactly, which keeps a hybrid probe calibrated where the NLL is informative.
  """
  s = np.maximum(np.asarray(nll_sum, np.float64), 1e-4)
  log_not_ref = np.log(-np.expm1(-s))
  return np.stack([nll_mean, nll_sum, log_not_ref], 1).astype(np.float32)


def build_data(feature_sets: Sequence[FeatureSet], labels: Iterable[Mapping[str, Any]] | None = None,
               *, layers: Sequence[int] = (), pooling: str = "mean", tokens: bool = False,
               nll: bool = False) -> ProbeData:
  """Joins feature sets with labels by (checkpoint, task, question_id).

  Without labels the rows are unlabeled (for prediction). With labels, every feature set must
  have labels for exactly its questions at the same checkpoint_step; anything else raises a
  FeatureError naming the checkpoint, task and questions, before anything is trained or written.
  """
  if not feature_sets:
    raise FeatureError("no feature sets given")
  index = None if labels is None else _label_index(labels)
  width = _check_compatible(feature_sets)
  cols: dict[str, list] = {k: [] for k in _ID_COLUMNS + _LABEL_COLUMNS}
  inputs: dict[str, list] = {}
  token_layers = set()
  for fs in feature_sets:
    for name, a in _input_arrays(fs, layers, pooling, tokens, nll).items():
      inputs.setdefault(name, []).append(a)
    if tokens:
      token_layers.add(fs.meta.get("token_layer"))
    _append_rows(cols, fs, index)
  if len(token_layers) > 1:
    raise FeatureError(f"feature sets hold token states of different layers {sorted(token_layers)}")
  arr = {k: np.asarray(v, dtype=object if k in ("checkpoint", "task", "question_id") else None)
         for k, v in cols.items()}
  meta = {"layers": list(layers), "pooling": pooling, "token_layer": next(iter(token_layers), None),
          "hidden_size": width, "extract": feature_sets[0].meta.get("spec"), "features": [
              {k: fs.meta.get(k) for k in ("checkpoint", "checkpoint_step", "task", "tokenizer_hash",
                                           "prompt_format_hash", "code_version")}
              for fs in feature_sets]}
  return ProbeData(**arr, inputs={k: np.concatenate(v) for k, v in inputs.items()}, meta=meta)


_ID_COLUMNS = ("checkpoint", "step", "task", "question_id")
_LABEL_COLUMNS = ("c", "k", "difficulty", "greedy")


def _check_compatible(feature_sets: Sequence[FeatureSet]) -> int:
  """One hidden size, one tokenizer, one prompt format per task; returns the hidden size."""
  widths = {fs.meta.get("hidden_size") for fs in feature_sets}
  if len(widths) > 1:
    raise FeatureError(f"feature sets have different hidden sizes {sorted(widths)}")
  hashes = {fs.meta.get("tokenizer_hash") for fs in feature_sets}
  if len(hashes) > 1:
    raise FeatureError(f"feature sets come from different tokenizers {sorted(map(str, hashes))}")
  formats: dict[str, set] = {}
  for fs in feature_sets:
    formats.setdefault(str(fs.meta["task"]), set()).add(fs.meta.get("prompt_format_hash"))
  changed = {t: sorted(map(str, v)) for t, v in formats.items() if len(v) > 1}
  if changed:
    raise FeatureError(f"prompt formats differ across checkpoints for task(s) {changed}")
  return widths.pop()


def _where(fs: FeatureSet) -> str:
  return f"features of checkpoint {str(fs.meta['checkpoint'])!r} task {str(fs.meta['task'])!r}"


def _input_arrays(fs: FeatureSet, layers, pooling: str, tokens: bool, nll: bool) -> dict[str, np.ndarray]:
  """The probe inputs of one feature set (raw), refusing missing or non-finite ones."""
  where, qids = _where(fs), fs.question_ids
  arrays = {}
  if layers:
    arrays["x"] = fs.pooled(pooling, layers)
  if tokens:
    if "tokens" not in fs.arrays:
      raise FeatureError(f"{where}: no token states (extract with token_layer set)")
    arrays["tokens"] = fs.arrays["tokens"].astype(np.float32)
    arrays["tokens_mask"] = fs.arrays["tokens_mask"].astype(bool)
  if nll:
    if "nll_mean" not in fs.arrays:
      raise FeatureError(f"{where}: no gold-answer NLL (extract with hybrid=True)")
    arrays["nll"] = nll_features(fs.arrays["nll_mean"], fs.arrays["nll_sum"])
  for name, a in arrays.items():
    if a.dtype.kind == "f" and not np.isfinite(a).all():
      bad = np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(axis=1))
      raise FeatureError(f"{where}: {name} has NaN/inf for question(s) "
                         f"{[qids[i] for i in bad[:5]]} ({len(bad)} rows)")
  return arrays


def _append_rows(cols: dict[str, list], fs: FeatureSet, index) -> None:
  """Appends one feature set's ids and (if `index` is given) its labels, which must match."""
  ck, task, step = str(fs.meta["checkpoint"]), str(fs.meta["task"]), int(fs.meta["checkpoint_step"])
  where, qids = _where(fs), fs.question_ids
  if index is not None:
    got = {q for (c, t, q) in index if c == ck and t == task}
    if not got:
      cks = sorted({c for (c, t, _) in index if t == task})
      raise LabelJoinError(f"{where}: labels have no records for this checkpoint (labels of task "
                           f"{task!r} cover checkpoints {cks[:10]})")
    no_label, no_feat = [q for q in qids if q not in got], sorted(got - set(qids))
    if no_label or no_feat:
      raise LabelJoinError(f"{where}: questions do not match the labels: {len(no_label)} without "
                           f"labels (e.g. {no_label[:3]}), {len(no_feat)} labeled but not extracted "
                           f"(e.g. {no_feat[:3]})")
  for q in qids:
    r = index[(ck, task, q)] if index is not None else {}
    if r and int(r["checkpoint_step"]) != step:
      raise LabelJoinError(f"{where}: checkpoint_step {step} but labels say {r['checkpoint_step']}")
    cols["checkpoint"].append(ck)
    cols["step"].append(step)
    cols["task"].append(task)
    cols["question_id"].append(q)
    cols["c"].append(float(r.get("c", np.nan)))
    cols["k"].append(float(r.get("k", np.nan)))
    d, g = r.get("difficulty"), r.get("greedy")
    cols["difficulty"].append(np.nan if d is None else float(d))
    cols["greedy"].append(np.nan if g is None else float(g))


# ----------------------------------------------------------------------------- splits


def split_unit(task: str, question_id: str, salt: str = "") -> float:
  """A uniform number in [0, 1) from sha256 of the task and question id (process-independent)."""
  h = hashlib.sha256(f"{salt}{task}/{question_id}".encode()).digest()
  return int.from_bytes(h[:8], "big") / 2.0 ** 64


@dataclasses.dataclass(frozen=True)
class Split:
  train: np.ndarray
  val: np.ndarray
  test: np.ndarray
  train_upto_step: int | None


def question_roles(tasks: Sequence[str], question_ids: Sequence[str], test_frac: float,
                   val_frac: float, seed: int = 0) -> np.ndarray:
  """'test' / 'val' / 'train' per question by a stable hash (the same at every checkpoint);
  another `seed` draws another split."""
  salt = f"seed{seed}/" if seed else ""
  roles = []
  for t, q in zip(tasks, question_ids):
    if split_unit(t, q, salt) < test_frac:
      roles.append("test")
    else:
      roles.append("val" if split_unit(t, q, salt + "val/") < val_frac else "train")
  return np.asarray(roles, dtype=object)


def train_checkpoint_count(n_checkpoints: int, frac: float = 0.4, min_checkpoints: int = 3) -> int:
  """How many of the earliest checkpoints train probes: ceil(frac * n), at least
  `min_checkpoints`, always leaving one later checkpoint."""
  if n_checkpoints < 2:
    raise ValueError(f"earlier-predicts-later needs >= 2 checkpoints, got {n_checkpoints}")
  return min(max(min_checkpoints, math.ceil(frac * n_checkpoints)), n_checkpoints - 1)


def default_train_upto(steps: Sequence[int], frac: float = 0.4, min_checkpoints: int = 3) -> int:
  s = sorted(set(int(x) for x in steps))
  if len(s) < 2:
    raise ValueError(f"earlier-predicts-later needs >= 2 checkpoints, got steps {s}")
  return s[train_checkpoint_count(len(s), frac, min_checkpoints) - 1]


def make_split(data: ProbeData, *, test_frac: float = 0.3, val_frac: float = 0.15,
               earlier_predicts_later: bool = True, train_upto_step: int | None = None,
               train_checkpoint_frac: float = 0.4, min_train_checkpoints: int = 3) -> Split:
  """Question split (hash-stable) x checkpoint split (train on steps <= s, test on later)."""
  roles = question_roles(data.task, data.question_id, test_frac, val_frac)
  test_q, val_q = roles == "test", roles == "val"
  if earlier_predicts_later:
    s = train_upto_step if train_upto_step is not None else default_train_upto(
        data.step, train_checkpoint_frac, min_train_checkpoints)
    early = data.step <= s
    return Split(~test_q & ~val_q & early, val_q & early, test_q & ~early, int(s))
  return Split(~test_q & ~val_q, val_q, test_q, None)


# ----------------------------------------------------------------------------- centering

CENTERINGS = ("none", "checkpoint_task")


def center_cells(data: ProbeData, reference=None) -> ProbeData:
  """Pooled features `x` minus their mean over the rows of the same (checkpoint, task).

  This removes the shift a checkpoint applies to every question's state (training progress),
  so a head reads only how a question differs from the others of its task at that checkpoint.
  The hybrid uses it: its gold-answer NLL carries the checkpoint-level change, which the NLL
  tracks (p_ref = exp(-sum) is pass@1 at T = 1 for a unique answer), and its activations only the ranking
  within a cell, so an activation direction that drifts over training cannot drag the predicted
  accuracy. The means are unlabeled statistics of the rows passed in together (predict a task's
  questions at a checkpoint together, not one by one), or of the `reference` rows among them
  (a boolean mask): an evaluation passes its non-test rows, so no test question's features
  shape another's prediction.
  """
  if "x" not in data.inputs:
    raise FeatureError("center_cells: no pooled features 'x' to center")
  ref = np.ones(len(data), bool) if reference is None else np.asarray(reference, bool)
  x = data.inputs["x"].astype(np.float32, copy=True)
  cells: dict[tuple[str, str], list[int]] = {}
  for i, key in enumerate(zip(data.checkpoint, data.task)):
    cells.setdefault(key, []).append(i)
  for (ck, task), rows in cells.items():
    ref_rows = [i for i in rows if ref[i]]
    if not ref_rows:
      raise FeatureError(f"center_cells: checkpoint {ck!r} task {task!r} has no reference rows "
                         "to take the mean from")
    x[rows] -= x[ref_rows].mean(axis=0)
  return dataclasses.replace(data, inputs=dict(data.inputs, x=x))


# ----------------------------------------------------------------------------- standardization


def fit_standardizer(inputs: Mapping[str, np.ndarray], family: str) -> dict[str, np.ndarray]:
  """Mean/std per feature from the given (training) rows only; tiny stds become 1."""
  def ms(a, axis):
    m, s = a.mean(axis=axis), a.std(axis=axis)
    return m.astype(np.float32), np.where(s < 1e-6, 1.0, s).astype(np.float32)
  stats = {}
  if "x" in inputs:
    stats["x_mean"], stats["x_std"] = ms(inputs["x"], 0)
  if "tokens" in inputs and family == "attention":  # the submodel reads raw residual states
    stats["tokens_mean"], stats["tokens_std"] = ms(inputs["tokens"][inputs["tokens_mask"]], 0)
  if "nll" in inputs:
    stats["nll_mean"], stats["nll_std"] = ms(inputs["nll"], 0)
  return stats


def standardize(inputs: Mapping[str, np.ndarray], stats: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  out = dict(inputs)
  for key in ("x", "tokens", "nll"):
    if f"{key}_mean" in stats and key in out:
      out[key] = ((out[key] - stats[f"{key}_mean"]) / stats[f"{key}_std"]).astype(np.float32)
  if "tokens_mean" in stats and "tokens" in out:  # keep padding positions at zero
    out["tokens"] = np.where(out["tokens_mask"][..., None], out["tokens"], 0.0)
  return out
