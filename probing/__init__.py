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
"""
from probing import tasks
from probing.checkpoints import Checkpoint, open_checkpoint
from probing.eval import evaluate
from probing.features import ExtractSpec, FeatureSet, extract, extract_tasks, load_feature_sets
from probing.labels import read_labels
from probing.labels import run as label_checkpoint
from probing.monitor import ProbeMonitor
from probing.probes import (ProbeConfig, ProbeData, TrainConfig, TrainedProbe, build_data, load_probe, make_split,
                            train_probe)

__all__ = ["Checkpoint", "ExtractSpec", "FeatureSet", "ProbeConfig", "ProbeData", "ProbeMonitor", "TrainConfig",
           "TrainedProbe", "build_data", "evaluate", "extract", "extract_tasks", "label_checkpoint",
           "load_feature_sets", "load_probe", "make_split", "open_checkpoint", "read_labels", "tasks",
           "train_probe"]
