"""Predict downstream pass@1 of in-training checkpoints from their activations.

The data path, one public name per step:
  open_checkpoint   an orbax checkpoint of ours or a HF directory -> model, tokenizer, id, step
  tasks             the task registry: tasks.get('gsm8k').questions(), task.score(q, text)
  label_checkpoint  generative evaluation -> per-question pass@1 label files (resumable)
  read_labels       the records of label files
  ExtractSpec       what one prefill pass computes (layers, pooling, token states, gold NLL)
  extract           features of one task's questions, optionally as a resumable store
  load_feature_sets the stores under a directory
  build_data        features joined with labels -> ProbeData; make_split: leak-free splits
  ProbeConfig       what a probe is (family, inputs, architecture); TrainConfig: how it is fitted
  train_probe       fit one probe family -> TrainedProbe
  TrainedProbe      extract_spec(), predict_model(model, tokenizer, questions), predict(data), save()
  load_probe        open a saved probe
  evaluate          AUROC (within task and checkpoint), Brier, ECE, task-accuracy error
  ProbeMonitor      the same prediction path as a callback inside a training loop

Names are resolved on first use (PEP 562), so `import probing.tasks` alone stays light (the
code sandbox imports it under a bare interpreter without JAX).
"""
import importlib

_EXPORTS = {
    "Checkpoint": "probing.checkpoints", "open_checkpoint": "probing.checkpoints",
    "evaluate": "probing.eval",
    "ExtractSpec": "probing.features", "FeatureSet": "probing.features", "extract": "probing.features",
    "extract_tasks": "probing.features", "load_feature_sets": "probing.features",
    "read_labels": "probing.labels", "label_checkpoint": "probing.labels:run",
    "ProbeMonitor": "probing.monitor",
    "ProbeConfig": "probing.probes", "ProbeData": "probing.probes", "TrainConfig": "probing.probes",
    "TrainedProbe": "probing.probes", "build_data": "probing.probes", "load_probe": "probing.probes",
    "make_split": "probing.probes", "train_probe": "probing.probes",
    "tasks": "probing.tasks:",
}

__all__ = ["Checkpoint", "ExtractSpec", "FeatureSet", "ProbeConfig", "ProbeData", "ProbeMonitor", "TrainConfig",
           "TrainedProbe", "build_data", "evaluate", "extract", "extract_tasks", "label_checkpoint",
           "load_feature_sets", "load_probe", "make_split", "open_checkpoint", "read_labels", "tasks",
           "train_probe"]


def __getattr__(name: str):
  if name not in _EXPORTS:
    raise AttributeError(f"module 'probing' has no attribute {name!r}")
  module, _, attr = _EXPORTS[name].partition(":")
  value = importlib.import_module(module)
  if attr or not _EXPORTS[name].endswith(":"):
    value = getattr(value, attr or name)
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(__all__))
