"""Probe cards: what a trained probe is valid for, written beside its params (probe_card.json).

Training adds (`training_fields`): the checkpoint range it was fitted on, each task's
prompt-format hash and the tokenizer hash, per-task validation AUROC and ECE, a drift threshold
(null until a drift check sets one) and a validity window of checkpoint steps. `summary` reads
any card (older ones too, from what they hold) into one flat shape; `table` prints it;
`format_mismatches` and `step_warning` are the checks the prediction path runs. Plain JSON and
numpy only, so `launch.card` reads a card without loading JAX.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np

CARD = "probe_card.json"


def validity_window(steps, factor: float) -> dict:
  """Steps whose predictions the card vouches for: from the first trained checkpoint up to
  `factor` x the last one (probes are trained to predict later checkpoints, not any)."""
  first, last = int(min(steps)), int(max(steps))
  return {"min_step": first, "max_step": int(round(factor * last)) if last > 0 else last,
          "rule": f"first trained step .. {factor:g} x last trained step ({last})"}


def training_fields(data, train_rows, val_rows, validation: Mapping, val_ece: Mapping[str, float], tasks,
                    validity_factor: float) -> dict:
  """Card fields of a probe fitted on `train_rows` of `data` (`validation`: `probing.eval.evaluate`
  of its predictions on `val_rows`; `val_ece`: task -> ECE of them)."""
  tr, va = np.asarray(train_rows, bool), np.asarray(val_rows, bool)
  steps = sorted({int(s) for s in data.step[tr]})
  feats = [f for f in data.meta.get("features") or [] if f.get("task") in set(tasks)]
  formats = {t: next((f.get("prompt_format_hash") or None for f in feats if f.get("task") == t), None)
             for t in tasks}
  tokenizers = sorted({str(f.get("tokenizer_hash")) for f in feats if f.get("tokenizer_hash")})
  auroc = ((validation.get("auroc") or {}).get("primary") or {}).get("per_task") or {}
  per_task = {t: {"auroc": auroc.get(t), "ece": val_ece.get(t), "n_rows": int(np.sum(data.task[va] == t))}
              for t in tasks}
  return {"prompt_formats": formats, "tokenizer_hash": tokenizers[0] if len(tokenizers) == 1 else tokenizers or None,
          "checkpoint_range": {"first_step": steps[0] if steps else None, "last_step": steps[-1] if steps else None,
                               "n_checkpoints": len(steps)},
          "validation_per_task": per_task, "drift": {"threshold": None},
          "validity": validity_window(steps, validity_factor) if steps else None}


# ----------------------------------------------------------------------------- reading a card


def read_card(path: str | os.PathLike) -> dict:
  """The card of a saved probe directory (or the card file itself); no params are loaded."""
  path = os.fspath(path)
  file = path if path.endswith(".json") else os.path.join(path, CARD)
  if not os.path.exists(file):
    raise FileNotFoundError(f"{path}: no {CARD}; not a (complete) saved probe")
  with open(file) as f:
    return json.load(f)


def prompt_formats(card: Mapping) -> dict[str, str]:
  """task -> prompt-format hash the probe was trained with (cards before the field: from the
  features it read); tasks with no recorded hash are left out."""
  if card.get("prompt_formats") is not None:
    return {t: h for t, h in card["prompt_formats"].items() if h}
  return {str(f["task"]): f["prompt_format_hash"] for f in card.get("features") or []
          if f.get("task") in set(card.get("tasks") or ()) and f.get("prompt_format_hash")}


def format_mismatches(card: Mapping, formats: Mapping[str, str] | None) -> dict[str, tuple[str, str]]:
  """task -> (the card's hash, the given one) where both are known and differ."""
  trained = prompt_formats(card)
  return {t: (trained[t], h) for t, h in (formats or {}).items() if h and trained.get(t) and trained[t] != h}


def step_warning(card: Mapping, step: int | None, name: str | None = None) -> str | None:
  """A warning when `step` lies outside the card's validity window, else None."""
  window = card.get("validity")
  if not window or step is None or int(step) < 0:
    return None
  lo, hi = window.get("min_step"), window.get("max_step")
  if (lo is not None and step < lo) or (hi is not None and step > hi):
    return (f"probe {name or card.get('family')!r}: checkpoint step {step} lies outside its validity window "
            f"[{lo}, {hi}] ({window.get('rule')}); its predictions there are extrapolations")
  return None


def summary(card: Mapping) -> dict[str, Any]:
  """The card's answer to "what is this probe valid for", in one flat shape (older cards too)."""
  steps = sorted(int(s) for s in ((card.get("trained_on") or {}).get("checkpoints") or {}).values())
  rng = card.get("checkpoint_range") or {"first_step": steps[0] if steps else None,
                                         "last_step": steps[-1] if steps else None, "n_checkpoints": len(steps)}
  tokenizer = card.get("tokenizer_hash")
  if tokenizer is None:
    toks = sorted({str(f.get("tokenizer_hash")) for f in card.get("features") or [] if f.get("tokenizer_hash")})
    tokenizer = toks[0] if len(toks) == 1 else (toks or None)
  per_task = card.get("validation_per_task")
  if per_task is None:
    auroc = (((card.get("validation") or {}).get("auroc") or {}).get("primary") or {}).get("per_task") or {}
    per_task = {t: {"auroc": auroc.get(t), "ece": None, "n_rows": None} for t in card.get("tasks") or []}
  formats = prompt_formats(card)
  config = card.get("config") or {}
  return {"family": card.get("family"), "base": config.get("base") if card.get("family") == "hybrid" else None,
          "layers": card.get("layers"), "pooling": card.get("pooling"), "token_layer": card.get("token_layer"),
          "heads": card.get("heads"), "trained_on": rng,
          "train_upto_step": (card.get("trained_on") or {}).get("train_upto_step"),
          "tasks": {t: {"prompt_format": formats.get(t), **per_task.get(t, {})} for t in card.get("tasks") or []},
          "tokenizer_hash": tokenizer, "drift_threshold": (card.get("drift") or {}).get("threshold"),
          "validity": card.get("validity"), "code_version": card.get("code_version"), "created": card.get("created")}


def _num(v) -> str:
  return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def table(card: Mapping, name: str = "") -> str:
  """A readable card: one block of what the probe is, one row per task."""
  s = summary(card)
  rng, window = s["trained_on"], s["validity"]
  reads = (f"layers {s['layers']} ({s['pooling']} pooling)" if s["family"] not in ("attention", "submodel")
           else f"token states of layer {s['token_layer']}")
  lines = [f"probe {name}".rstrip(),
           f"  family       {s['family']}" + (f" (base {s['base']})" if s["base"] else "") + f", reads {reads}",
           f"  trained on   {rng['n_checkpoints']} checkpoint(s), steps {rng['first_step']}..{rng['last_step']}",
           f"  tokenizer    {s['tokenizer_hash'] or 'unknown'}",
           "  validity     " + (f"steps {window['min_step']}..{window['max_step']} ({window['rule']})" if window
                                else "not recorded (card predates validity windows)"),
           f"  drift        threshold {_num(s['drift_threshold'])}",
           f"  code         {s['code_version']}, created {s['created']}",
           "",
           f"  {'task':<20} {'prompt format':<18} {'val AUROC':>9} {'val ECE':>8} {'val rows':>8}"]
  for t, v in s["tasks"].items():
    lines.append(f"  {t:<20} {v.get('prompt_format') or '-':<18} {_num(v.get('auroc')):>9} {_num(v.get('ece')):>8} "
                 f"{_num(v.get('n_rows')):>8}")
  return "\n".join(lines)
