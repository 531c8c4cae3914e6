"""The demo pipeline: the paper's experiment end to end on in-training checkpoints we make.

Stages (each timed and logged):
  1. pretrain the testbed model up to the last probe-training checkpoint;
  2. generative labels (k samples per question) and one-pass features at those checkpoints;
  3. train every probe family on the labels of those checkpoints (training questions only);
  4. resume pretraining to the end, with the in-loop monitor logging predicted accuracies;
  5. labels and features at the later checkpoints;
  6. predictions for every (checkpoint, question, family), metrics, baselines, latency;
  7. the report (`probing.demo_report`).
Every stage writes into the work dir and skips what is already there, so a killed demo resumes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import tempfile
import time
from typing import Callable

import numpy as np

from configs.experiments import label as label_config
from models import checkpoint as ckpt_lib
from probing import atomic
from probing import features as features_lib
from probing import labels as labels_lib
from probing import pretrain
from probing import tasks as task_registry
from probing import tokenizer as tokenizer_lib
from probing import train as train_lib
from probing.monitor import ProbeMonitor
from probing.probe_data import split_unit
from probing.tasks import synthetic
from probing.tokenizer import CharTokenizer


class StageTimer:
  """Wall time per named stage, logged as each one ends."""

  def __init__(self, log: Callable[[str], None]):
    self.log, self.seconds = log, {}

  @contextlib.contextmanager
  def __call__(self, name: str):
    self.log(f"== {name} ...")
    t0 = time.perf_counter()
    yield
    dt = time.perf_counter() - t0
    self.seconds[name] = self.seconds.get(name, 0.0) + dt
    self.log(f"== {name}: {dt:.1f}s")


def probe_configs(cfg) -> dict:
  """The family configs (configs/probes/<family>.py, testbed preset) the demo trains."""
  import importlib
  out = {}
  for family in [f.strip() for f in cfg.probe_families.split(",") if f.strip()]:
    module = importlib.import_module(f"configs.probes.{family}")
    out[family] = fit_layers(module.get_config(cfg.probe_preset), cfg.pretrain.model.num_layers)
  if not out:
    raise ValueError("demo: probe_families is empty")
  return out


def fit_layers(fcfg, num_layers: int):
  """Maps a probe config's layers onto a model with fewer layers (the smoke preset's 2)."""
  wanted = list(fcfg.layers) + list(fcfg.extract.layers) + [fcfg.extract.token_layer or 0]
  if max(wanted) <= num_layers:
    return fcfg
  mid = max(1, num_layers // 2)
  fcfg.extract.layers = tuple(range(num_layers + 1))
  fcfg.extract.token_layer = mid
  fcfg.layers = tuple(range(num_layers + 1)) if len(fcfg.layers) > 1 else (mid,)
  if fcfg.token_layer is not None:
    fcfg.token_layer = mid
  fcfg.submodel_blocks = max(1, min(fcfg.submodel_blocks, num_layers - mid))
  return fcfg


def split_checkpoints(steps: list[int], frac: float, min_train: int) -> int:
  """Number of earliest checkpoints whose labels train the probes (>= min_train, < all)."""
  if len(steps) < min_train + 1:
    raise ValueError(f"demo needs more than {min_train} checkpoints, the schedule has {len(steps)}")
  return min(max(min_train, math.ceil(frac * len(steps))), len(steps) - 1)


def question_split(task: str, question_id: str, test_frac: float, val_frac: float) -> str:
  """'test' / 'val' / 'train' by a stable hash of the question (the same at every checkpoint)."""
  if split_unit(task, question_id) < test_frac:
    return "test"
  return "val" if split_unit(task, question_id, "val/") < val_frac else "train"


class Demo:
  """Holds the run's settings and paths; the stages are methods."""

  def __init__(self, cfg, workdir: str, log: Callable[[str], None] = print):
    self.cfg, self.workdir, self.log = cfg, os.path.abspath(workdir), log
    self.timer = StageTimer(log)
    self.pretrain_dir = os.path.join(self.workdir, "pretrain")
    self.labels_dir = os.path.join(self.workdir, "labels")
    self.features_dir = os.path.join(self.workdir, "features")
    self.probes_dir = os.path.join(self.workdir, "probes")
    self.external = external_checkpoints(cfg)
    self.families = probe_configs(cfg)
    first = next(iter(self.families.values()))
    self.extract_spec = features_lib.spec_from_config(first.extract)
    if not self.external:  # testbed prompts are 5-40 characters: pad lengths to 4s, not 64s
      self.extract_spec = dataclasses.replace(self.extract_spec, length_bucket=4, batch_size=256)
    if self.external:  # real checkpoints (e.g. OLMo3 revisions) instead of the testbed run
      self.tokenizer = tokenizer_lib.HFTokenizer(cfg.tokenizer)
      self.task_names = [t.strip() for t in cfg.tasks.split(",") if t.strip()]
      self.schedule = [s for s, _ in self.external]
    else:
      self.tokenizer = CharTokenizer(synthetic.ALPHABET)
      self.task_names = [synthetic.get_skill(s).task_name for s in cfg.pretrain.data.skills]
      p = cfg.pretrain
      self.schedule = pretrain.checkpoint_steps(p.train.steps, p.checkpoint.num, p.checkpoint.spacing,
                                                p.checkpoint.first or None)
    n = split_checkpoints(self.schedule, cfg.train_checkpoint_frac, cfg.min_train_checkpoints)
    self.train_steps, self.later_steps = self.schedule[:n], self.schedule[n:]

  # --------------------------------------------------------------------------- stages

  def checkpoints(self, steps) -> list[tuple[int, str]]:
    have = dict(self.external or pretrain.list_checkpoints(self.pretrain_dir))
    missing = [s for s in steps if s not in have]
    if missing:
      raise RuntimeError(f"pretraining left no checkpoint for steps {missing}")
    return [(s, have[s]) for s in steps]

  def label_config(self, path: str, out_dir: str):
    c = label_config.get_config()
    lc = self.cfg.labels
    c.checkpoint, c.tasks, c.out_dir = path, ",".join(self.task_names), out_dir
    c.num_samples, c.temperature, c.top_p, c.greedy = lc.num_samples, lc.temperature, lc.top_p, lc.greedy
    c.batch_size, c.seed, c.mesh = lc.batch_size, self.cfg.seed, self.cfg.mesh
    c.tokenizer = self.cfg.tokenizer if self.external else "char"
    c.dtype = self.cfg.dtype
    if self.external:
      c.checkpoint_step = dict((p, s) for s, p in self.external)[path]
    c.limit = lc.limit or None
    # One budget for every skill (each still stops at EOS), so one sampler program serves them all.
    c.max_new_tokens = max(task_registry.get(t).max_new_tokens for t in self.task_names)
    return c

  def label(self, ckpts) -> None:
    for step, path in ckpts:
      labels_lib.run(self.label_config(path, self.labels_dir), log=self._quiet)

  def extract(self, ckpts) -> None:
    for step, path in ckpts:
      model = self.load(path)
      name = checkpoint_name(path)
      for task_name in self.task_names:
        task = task_registry.get(task_name)
        out = features_lib.store_dir(self.features_dir, name, task_name)
        if os.path.exists(os.path.join(out, features_lib.SIDECAR)):
          continue
        features_lib.extract(model, self.tokenizer, list(task.questions(self.cfg.labels.limit or None)),
                             self.extract_spec, checkpoint=name, checkpoint_step=step, task=task_name,
                             prompt_format_hash=task.format_hash(), out_dir=out)

  def label_and_extract(self, ckpts, which: str) -> None:
    with self.timer(f"labels ({which})"):
      self.label(ckpts)
    with self.timer(f"features ({which})"):
      self.extract(ckpts)

  def labels(self) -> list[dict]:
    """Every label record in the work dir (re-read only when a label file has changed)."""
    files = sorted(os.path.join(self.labels_dir, n) for n in os.listdir(self.labels_dir) if n.endswith(".jsonl"))
    key = tuple((f, os.stat(f).st_mtime_ns, os.stat(f).st_size) for f in files)
    if getattr(self, "_labels_key", None) != key:
      self._labels = [r for f in files for r in labels_lib.load_records(f)]
      self._labels_key = key
    return list(self._labels)

  def data(self, steps, family_cfg):
    """ProbeData of the given checkpoints for one family config (features joined with labels)."""
    names = [checkpoint_name(p) for _, p in self.checkpoints(steps)]
    sets = features_lib.load_feature_sets(self.features_dir, tasks=self.task_names, checkpoints=names)
    labels = [r for r in self.labels() if r["checkpoint"] in names]
    cfg = train_lib.ProbeConfig.from_mapping(family_cfg.to_dict())
    from probing import probes as probes_lib
    return train_lib.build_data(sets, labels, layers=cfg.layers, pooling=cfg.pooling,
                                tokens=cfg.encoder in probes_lib.TOKEN_FAMILIES, nll=True), cfg

  def split(self, data, train_upto: int):
    roles = np.asarray([question_split(t, q, self.cfg.test_frac, self.cfg.val_frac)
                        for t, q in zip(data.task, data.question_id)])
    early = data.step <= train_upto
    return train_lib.Split(train=(roles == "train") & early, val=(roles == "val") & early,
                           test=roles == "test", train_upto_step=int(train_upto)), roles

  def train_probes(self) -> dict:
    """family -> TrainedProbe, trained on the probe-training checkpoints only."""
    trained = {}
    upto = self.train_steps[-1]
    for family, fcfg in self.families.items():
      path = os.path.join(self.probes_dir, family)
      if os.path.exists(os.path.join(path, "probe_card.json")):
        trained[family] = train_lib.load_probe(path)
        continue
      data, pcfg = self.data(self.train_steps, fcfg)
      split, _ = self.split(data, upto)
      t0 = time.perf_counter()
      source = self.checkpoints([upto])[0][1] if pcfg.encoder == "submodel" else None
      probe = train_lib.train_probe(data, split, pcfg, olmo_source=_model_source(source))
      probe.card["train_seconds"] = time.perf_counter() - t0
      _replace_dir(path, probe.save)
      trained[family] = probe
      self.log(f"   {family}: trained in {time.perf_counter() - t0:.1f}s on {int(split.train.sum())} rows")
    return trained

  def monitor(self, probes: dict) -> ProbeMonitor | None:
    m = self.cfg.monitor
    if not m.enabled or m.family not in probes:
      return None
    questions = {t: [q for q in task_registry.get(t).questions(self.cfg.labels.limit or None)
                     if question_split(t, q.id, self.cfg.test_frac, self.cfg.val_frac) == "test"]
                 for t in self.task_names}
    out = os.path.join(self.workdir, "monitor.jsonl")
    if os.path.exists(out):
      os.remove(out)
    from probing.demo_eval import probe_spec  # the smallest extraction that feeds the probe
    return ProbeMonitor({m.family: probes[m.family]}, questions, self.tokenizer,
                        probe_spec(self, probes[m.family]), every=m.every, log=self.log, out_path=out)

  def load(self, path: str):
    """Our orbax checkpoint or a HF safetensors dir, in the configured dtype."""
    return labels_lib.load_checkpoint(path, dtype=self.cfg.dtype)[0]

  def _quiet(self, msg: str) -> None:
    if msg.startswith("labels:"):
      self.log("   " + msg)


def _model_source(path):
  return None if path is None else labels_lib.load_checkpoint(path)[0]


def checkpoint_name(path: str) -> str:
  """The record key of a checkpoint dir (as probing.labels names it)."""
  if ckpt_lib.is_checkpoint(path):
    return ckpt_lib.read_metadata(path).get("checkpoint") or os.path.basename(path.rstrip("/"))
  return os.path.basename(os.path.abspath(path).rstrip("/"))


def external_checkpoints(cfg) -> list[tuple[int, str]]:
  """(step, dir) of `cfg.checkpoints` (comma-separated dirs; steps from `cfg.checkpoint_steps`)."""
  dirs = [p.strip() for p in (cfg.get("checkpoints") or "").split(",") if p.strip()]
  if not dirs:
    return []
  steps = [int(s) for s in (cfg.get("checkpoint_steps") or "").split(",") if s.strip()]
  if len(steps) != len(dirs):
    raise ValueError(f"checkpoint_steps: {len(steps)} steps for {len(dirs)} checkpoints (give one "
                     "monotone training step per checkpoint: OLMo3 stage counters restart)")
  missing = [d for d in dirs if not os.path.isdir(d)]
  if missing:
    raise FileNotFoundError(f"checkpoints not found: {missing}")
  if sorted(steps) != steps or len(set(steps)) != len(steps):
    raise ValueError(f"checkpoint_steps must increase: {steps}")
  return [(s, os.path.abspath(d)) for s, d in zip(steps, dirs)]


def _replace_dir(path: str, write: Callable[[str], None]) -> None:
  """Writes a directory under a temporary name, then renames it into place."""
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
  try:
    write(os.path.join(tmp, "d"))
    if os.path.exists(path):
      shutil.rmtree(path)
    os.replace(os.path.join(tmp, "d"), path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def write_jsonl_atomic(path: str, rows) -> None:
  atomic.write_jsonl(path, rows, sort_keys=True)


def write_json_atomic(path: str, obj) -> None:
  atomic.write_json(path, obj, indent=2, sort_keys=True, default=_jsonable)


def _jsonable(x):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  if dataclasses.is_dataclass(x):
    return dataclasses.asdict(x)
  return str(x)


# ----------------------------------------------------------------------------- the whole run


def run(cfg, workdir: str, log: Callable[[str], None] = print) -> dict:
  """Runs every stage (resuming what a killed run finished) and returns summary.json's dict."""
  from probing import demo_eval, demo_report
  d = Demo(cfg, workdir, log)
  os.makedirs(d.workdir, exist_ok=True)
  t_start = time.perf_counter()
  log(f"demo: {len(d.schedule)} checkpoints at steps {d.schedule}; probes train on the labels of "
      f"steps {d.train_steps}; families {list(d.families)}")
  if not d.external:
    with d.timer("pretrain (to the last probe-training checkpoint)"):
      pretrain.train(cfg.pretrain, d.pretrain_dir, stop_at=d.train_steps[-1])
  d.label_and_extract(d.checkpoints(d.train_steps), "probe-training checkpoints")
  with d.timer("train probes"):
    probes = d.train_probes()
  monitor = None if d.external else d.monitor(probes)
  t_pre = time.perf_counter()
  if not d.external:
    with d.timer("pretrain (rest, with the in-loop monitor)"):
      info = pretrain.train(cfg.pretrain, d.pretrain_dir,
                            callback=None if monitor is None else
                            (lambda step, trainer: monitor.maybe_run(step, trainer.synced_model())))
  rest_seconds = time.perf_counter() - t_pre
  later = d.checkpoints(d.later_steps)
  d.label_and_extract(later, "later checkpoints")
  with d.timer("predict and evaluate"):
    labels = d.labels()
    write_jsonl_atomic(os.path.join(d.workdir, "labels.jsonl"), sorted(
        labels, key=lambda r: (r["checkpoint_step"], r["task"], r["question_id"])))
    predictions = demo_eval.prediction_records(d, probes)
    write_jsonl_atomic(os.path.join(d.workdir, "predictions.jsonl"), predictions)
    summary = demo_eval.summary_from_records(predictions, labels)
    cross = demo_eval.cross_checkpoint(d, cfg.cross_checkpoint_family)
  with d.timer("latency"):
    last_step, last_path = later[-1]
    family = "hybrid" if "hybrid" in probes else next(iter(probes))
    summary["latency_seconds"] = demo_eval.latency_same_checkpoint(d, probes, family, last_step, last_path)
    if cfg.real_task.enabled and not d.external:
      summary["latency_seconds_real_task"] = demo_eval.latency_real_task(d, probes[family], last_path)
  summary["cross_checkpoint"] = {"family": cfg.cross_checkpoint_family, "train_upto_steps": cross.train_steps,
                                 "test_steps": cross.test_steps,
                                 "auroc": [[None if np.isnan(v) else float(v) for v in row] for row in cross.matrix]}
  if monitor is not None:
    steps_run = max(1, info["end_step"] - info["start_step"])
    cost = monitor.cost_seconds()
    step_s = (rest_seconds - sum(monitor.call_seconds)) / steps_run
    summary["monitor"] = {"family": cfg.monitor.family, "every_steps": cfg.monitor.every, **cost,
                          "train_step_seconds": step_s,
                          "cost_in_train_steps": None if cost["median_warm"] is None else cost["median_warm"] / step_s,
                          "records": monitor.history}
  summary["settings"] = {
      "preset": cfg.preset, "train_checkpoints": d.train_steps, "later_checkpoints": d.later_steps,
      "tasks": d.task_names, "families": list(d.families), "test_frac": cfg.test_frac, "val_frac": cfg.val_frac,
      "labels": cfg.labels.to_dict(), "extract": d.extract_spec.to_dict(),
      "probe_configs": {f: c.to_dict() for f, c in d.families.items()},
      "pretrain": None if d.external else cfg.pretrain.to_dict(),
      "checkpoints": [p for _, p in d.external] or None,
      "selection": "no setting was chosen on test questions or later checkpoints"}
  summary["measured_accuracy"] = measured_accuracy(labels)
  summary["stage_seconds"] = dict(d.timer.seconds)
  with d.timer("report"):
    summary["bars"] = demo_report.bars(summary)
    write_json_atomic(os.path.join(d.workdir, "summary.json"), summary)
    demo_report.write(d, summary, predictions, labels)
  summary["stage_seconds"] = dict(d.timer.seconds)
  summary["total_seconds"] = time.perf_counter() - t_start
  write_json_atomic(os.path.join(d.workdir, "summary.json"), summary)
  return summary


def measured_accuracy(labels: list[dict]) -> dict:
  """task -> {step: mean pass@1 over all its questions} (and greedy accuracy)."""
  cells: dict[tuple, list] = {}
  for r in labels:
    cells.setdefault((r["task"], r["checkpoint_step"]), []).append(r)
  out: dict[str, dict] = {}
  for (task, step), rows in sorted(cells.items()):
    greedy = [r["greedy"] for r in rows if r.get("greedy") is not None]
    out.setdefault(task, {})[str(step)] = {"pass1": float(np.mean([r["c"] / r["k"] for r in rows])),
                                           "greedy": float(np.mean(greedy)) if greedy else None}
  return out
