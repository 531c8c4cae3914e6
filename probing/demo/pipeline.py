"""The demo pipeline: the paper's experiment end to end on in-training checkpoints we make.

Stages (each a method of `Demo`, timed and logged):
  1. pretrain the testbed model up to the last probe-training checkpoint;
  2. generative labels (k samples per question) and one-pass features at those checkpoints;
  3. train every probe family on the labels of those checkpoints (training questions only);
  4. resume pretraining to the end, with the in-loop monitor logging predicted accuracies;
  5. labels and features at the later checkpoints;
  6. predictions for every (checkpoint, question, family), metrics, baselines, latency
     (`probing.demo.evaluate`);
  7. the report (`probing.demo.report`).
Every stage writes into the work dir and skips what is already there, so a killed demo resumes.
The config is `configs/experiments/demo.py`; this module receives it and never loads configs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from typing import Callable

import numpy as np

from models import io, sharding
from probing import checkpoints as checkpoints_lib
from probing import features as features_lib
from probing import labels as labels_lib
from probing import tasks as task_registry
from probing import tokenizer as tokenizer_lib
from probing.demo import audit, evaluate
from probing.demo.inputs import checked_inputs, external_checkpoints
from probing.demo import report as demo_report
from probing.monitor import ProbeMonitor
from probing.probes import Split, build_data, configs_from, load_probe, train_probe
from probing.probes.data import question_roles, train_checkpoint_count
from probing.probes.trained import CARD
from probing.testbed import ALPHABET, checks, pretrain, skills


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


def selected_families(cfg, fit: bool = True) -> dict:
  """family -> probe config: the `families` that `probe_families` names, with `fit` fitted to the
  testbed model (real checkpoints keep their layers; they are checked against each model)."""
  names = [f.strip() for f in cfg.probe_families.split(",") if f.strip()]
  if not names:
    raise ValueError("demo: probe_families is empty")
  unknown = [f for f in names if f not in cfg.families]
  if unknown:
    raise ValueError(f"demo: probe_families names {unknown}; the config has {sorted(cfg.families)}")
  return {f: fit_layers(cfg.families[f], cfg.pretrain.model.num_layers) if fit else cfg.families[f] for f in names}


def fit_layers(fcfg, num_layers: int):
  """Maps a probe config's layers onto a model with fewer layers (the smoke preset's 2)."""
  wanted = list(fcfg.head.layers) + list(fcfg.extract.layers) + [fcfg.extract.token_layer or 0]
  if max(wanted) <= num_layers:
    return fcfg
  mid = max(1, num_layers // 2)
  fcfg.extract.layers = tuple(range(num_layers + 1))
  fcfg.extract.token_layer = mid
  fcfg.head.layers = tuple(range(num_layers + 1)) if len(fcfg.head.layers) > 1 else (mid,)
  if fcfg.head.token_layer is not None:
    fcfg.head.token_layer = mid
  fcfg.head.submodel_blocks = max(1, min(fcfg.head.submodel_blocks, num_layers - mid))
  return fcfg


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
    self.families = selected_families(cfg, fit=not self.external)
    first = next(iter(self.families.values()))
    self.extract_spec = features_lib.spec_from_config(first.extract)
    if not self.external:  # testbed prompts are 5-40 characters: pad lengths to 4s, not 64s
      self.extract_spec = dataclasses.replace(self.extract_spec, length_bucket=4, batch_size=256)
    if self.external:  # real checkpoints (e.g. OLMo3 revisions) instead of the testbed run
      self.tokenizer, self.task_names = checked_inputs(cfg, self.external, self.families)
      self.schedule = [s for s, _ in self.external]
    else:
      self.tokenizer = tokenizer_lib.CharTokenizer(ALPHABET)
      self.task_names = [skills.get_skill(s).task_name for s in cfg.pretrain.data.skills]
      p = cfg.pretrain
      self.schedule = pretrain.checkpoint_steps(p.train.steps, p.checkpoint.num, p.checkpoint.spacing,
                                                p.checkpoint.first or None)
    if len(self.schedule) < cfg.min_train_checkpoints + 1:
      raise ValueError(f"demo needs more than {cfg.min_train_checkpoints} checkpoints, the schedule "
                       f"has {len(self.schedule)}")
    n = train_checkpoint_count(len(self.schedule), cfg.train_checkpoint_frac, cfg.min_train_checkpoints)
    self.train_steps, self.later_steps = self.schedule[:n], self.schedule[n:]

  # --------------------------------------------------------------------------- inputs

  def checkpoints(self, steps) -> list[tuple[int, str]]:
    have = dict(self.external or pretrain.list_checkpoints(self.pretrain_dir))
    missing = [s for s in steps if s not in have]
    if missing:
      raise RuntimeError(f"pretraining left no checkpoint for steps {missing}")
    return [(s, have[s]) for s in steps]

  def questions(self, task: str) -> list:
    return list(task_registry.get(task).questions(self.cfg.data.limit or None))

  def label_config(self, path: str, out_dir: str):
    """The demo's label config (`cfg.labels`) pointed at one checkpoint and the demo's tasks."""
    c = self.cfg.labels.copy_and_resolve_references()
    c.data.checkpoint, c.data.tasks, c.out = path, ",".join(self.task_names), out_dir
    c.data.limit = self.cfg.data.limit
    c.data.tokenizer = self.cfg.data.tokenizer if self.external else "char"
    if self.external:
      c.data.checkpoint_step = dict((p, s) for s, p in self.external)[path]
    return c

  def load(self, path: str):
    """Our orbax checkpoint or a HF safetensors dir, in the configured dtype."""
    return checkpoints_lib.open_checkpoint(path, mesh=self.mesh, dtype=self.cfg.dtype, tokenizer=self.tokenizer,
                                           require_step=False).model

  @property
  def mesh(self):
    """Real checkpoints are placed on `cfg.mesh` (a 7B needs its devices); the testbed runs unsharded."""
    if self.external and getattr(self, "_mesh", None) is None:
      self._mesh = sharding.make_mesh(self.cfg.mesh)
    return getattr(self, "_mesh", None)

  def labels(self) -> list[dict]:
    """Every label record in the work dir (re-read only when a label file has changed)."""
    files = sorted(os.path.join(self.labels_dir, n) for n in os.listdir(self.labels_dir) if n.endswith(".jsonl"))
    key = tuple((f, os.stat(f).st_mtime_ns, os.stat(f).st_size) for f in files)
    if getattr(self, "_labels_key", None) != key:
      self._labels = [r for f in files for r in labels_lib.read_label_file(f)]
      self._labels_key = key
    return list(self._labels)

  def data(self, steps, family: str):
    """(ProbeData, ProbeConfig, TrainConfig) of the given checkpoints for one family (features
    joined with labels; the NLL always loaded, for the baselines)."""
    names = [checkpoints_lib.checkpoint_id(p)[0] for _, p in self.checkpoints(steps)]
    sets = features_lib.load_feature_sets(self.features_dir, tasks=self.task_names, checkpoints=names)
    labels = [r for r in self.labels() if r["checkpoint"] in names]
    head, train_cfg = configs_from(self.families[family])
    return build_data(sets, labels, **head.data_kwargs(nll=True)), head, train_cfg

  def split(self, data, train_upto: int) -> tuple[Split, np.ndarray]:
    """Train/val rows up to `train_upto`, test questions at every checkpoint; and each row's role."""
    roles = question_roles(data.task, data.question_id, self.cfg.test_frac, self.cfg.val_frac, self.cfg.seed)
    early = data.step <= train_upto
    return Split(train=(roles == "train") & early, val=(roles == "val") & early,
                 test=roles == "test", train_upto_step=int(train_upto)), roles

  def context(self) -> evaluate.Context:
    questions = {(t, q.id): q for t in self.task_names for q in self.questions(t)}
    return evaluate.Context(train_steps=self.train_steps, later_steps=self.later_steps, data=self.data,
                            split=self.split, min_train_checkpoints=self.cfg.min_train_checkpoints,
                            questions=questions, load_model=lambda step: self.load(self.checkpoints([step])[0][1]))

  def activation_only(self) -> list[str]:
    """Families that read activations alone (no gold-answer NLL)."""
    return [f for f in self.families if not configs_from(self.families[f])[0].uses_nll]

  # --------------------------------------------------------------------------- stages

  def pretrain(self, stop_at: int | None = None, monitor: ProbeMonitor | None = None) -> dict:
    callback = None if monitor is None else (lambda step, trainer: monitor.maybe_run(step, trainer.synced_model()))
    return pretrain.train(self.cfg.pretrain, self.pretrain_dir, stop_at=stop_at, callback=callback)

  def label_and_extract(self, ckpts, which: str) -> None:
    with self.timer(f"labels ({which})"):
      for _, path in ckpts:
        labels_lib.run(self.label_config(path, self.labels_dir), log=self._quiet)
    with self.timer(f"features ({which})"):
      for step, path in ckpts:
        self._extract(step, path)

  def _extract(self, step: int, path: str) -> None:
    name, model = checkpoints_lib.checkpoint_id(path)[0], None
    for task_name in self.task_names:
      out = features_lib.store_dir(self.features_dir, name, task_name)
      if os.path.exists(os.path.join(out, features_lib.SIDECAR)):
        continue
      model = model or self.load(path)
      task = task_registry.get(task_name)
      features_lib.extract(model, self.tokenizer, self.questions(task_name), self.extract_spec, checkpoint=name,
                           checkpoint_step=step, task=task_name, prompt_format_hash=task.format_hash(),
                           out_dir=out, mesh=self.mesh)

  def train_probes(self) -> dict:
    """family -> TrainedProbe, trained on the probe-training checkpoints only."""
    trained = {}
    upto = self.train_steps[-1]
    for family in self.families:
      path = os.path.join(self.probes_dir, family)
      if os.path.exists(os.path.join(path, CARD)):
        probe = load_probe(path)
        head, train_cfg = configs_from(self.families[family])
        same = lambda a, b: json.loads(json.dumps(a, default=list)) == json.loads(json.dumps(b, default=list))  # noqa: E731
        if same(probe.card.get("config"), dataclasses.asdict(head)) and same(probe.card.get("train"),
                                                                             dataclasses.asdict(train_cfg)):
          trained[family] = probe
          continue
        self.log(f"   {family}: settings changed since {path} was trained; retraining")
      data, head, train_cfg = self.data(self.train_steps, family)
      split, _ = self.split(data, upto)
      t0 = time.perf_counter()
      source = self.load(self.checkpoints([upto])[0][1]) if head.encoder == "submodel" else None
      probe = train_probe(data, split, head, train_cfg, olmo_source=source)
      probe.card["train_seconds"] = time.perf_counter() - t0
      with io.staged_dir(path, replace=True) as tmp:
        probe.save(tmp)
      trained[family] = probe
      self.log(f"   {family}: trained in {time.perf_counter() - t0:.1f}s on {int(split.train.sum())} rows")
    return trained

  def monitor(self, probes: dict) -> ProbeMonitor | None:
    m = self.cfg.monitor
    if not m.enabled or m.family not in probes:
      return None
    questions = {}
    for t in self.task_names:
      qs = self.questions(t)
      roles = question_roles([t] * len(qs), [q.id for q in qs], self.cfg.test_frac, self.cfg.val_frac,
                             self.cfg.seed)
      questions[t] = [q for q, role in zip(qs, roles) if role == "test"]
    out = os.path.join(self.workdir, "monitor.jsonl")
    if os.path.exists(out):
      os.remove(out)
    return ProbeMonitor({m.family: probes[m.family]}, questions, self.tokenizer, every=m.every, log=self.log,
                        out_path=out)

  def predict_and_evaluate(self, probes: dict) -> tuple[dict, list[dict], list[dict]]:
    """(summary metrics, prediction records, label records), the records also written as files."""
    labels = self.labels()
    io.write_jsonl(os.path.join(self.workdir, "labels.jsonl"), sorted(
        labels, key=lambda r: (r["checkpoint_step"], r["task"], r["question_id"])), sort_keys=True)
    ctx = self.context()
    predictions = evaluate.prediction_records(ctx, probes)
    io.write_jsonl(os.path.join(self.workdir, "predictions.jsonl"), predictions, sort_keys=True)
    selection = evaluate.selection_scores(ctx, self.activation_only())
    summary = evaluate.summary_from_records(predictions, labels, activation_only=self.activation_only(),
                                            selection=selection)
    summary["selection"] = {"protocol": "train on the probe-training checkpoints but the last, score "
                                        "within-cell AUROC on the last one's non-test questions",
                            "scores": selection}
    family = self.cfg.cross_checkpoint_family
    cross = evaluate.cross_checkpoint(ctx, family)
    summary["cross_checkpoint"] = {"family": family, "train_upto_steps": cross.train_steps,
                                   "test_steps": cross.test_steps,
                                   "auroc": [[None if np.isnan(v) else float(v) for v in row] for row in cross.matrix]}
    return summary, predictions, labels

  def latency(self, probes: dict, step: int, path: str) -> dict:
    """Generative evaluation vs the probe at one checkpoint (and on a real task's shapes)."""
    family = "hybrid" if "hybrid" in probes else next(iter(probes))
    setup = labels_lib.setup(self.label_config(path, os.path.join(self.workdir, "latency-labels")))
    questions = {t.name: self.questions(t.name) for t in setup.tasks}
    out = {"latency_seconds": evaluate.latency_same_checkpoint(setup, questions, self.tokenizer, probes, family,
                                                               step)}
    if self.cfg.real_task.enabled and not self.external:
      out["latency_seconds_real_task"] = evaluate.latency_real_task(
          setup.model, probes[family], self.cfg.real_task, stand_in_task=self.task_names[0], mesh=setup.mesh)
    return out

  def audit(self, predictions: list[dict], labels: list[dict]) -> dict:
    """Audited task accuracy (PPI++), predicted pass@k and the drift alarm of `cfg.audit.family`
    at the later checkpoints (`probing.demo.audit`)."""
    a = self.cfg.audit
    family = a.family if a.family in self.families else next(iter(self.families))
    head = configs_from(self.families[family])[0]
    names = [checkpoints_lib.checkpoint_id(p)[0] for _, p in self.checkpoints(self.schedule)]
    sets = features_lib.load_feature_sets(self.features_dir, tasks=self.task_names, checkpoints=names)
    out = {"audit": audit.audit_summary(predictions, labels, family=family, later_steps=self.later_steps,
                                        sizes=tuple(a.sizes), default_size=a.questions_per_task,
                                        draws=a.draws, seed=self.cfg.seed),
           "pass_at_k": audit.pass_at_k_summary(predictions, labels, family=family,
                                                audit_size=a.questions_per_task, draws=a.draws, seed=self.cfg.seed),
           "drift": audit.drift_summary(predictions, labels, sets, family=family, train_steps=self.train_steps,
                                        later_steps=self.later_steps, layers=head.layers if head.uses_x else (),
                                        # centered per cell whatever the probe does: uncentered cell
                                        # means move with any training (alarms everywhere)
                                        pooling=head.pooling, center=True, nll=True,
                                        audit_size=a.questions_per_task, draws=a.draws, seed=self.cfg.seed,
                                        stale_tolerance=a.stale_tolerance)}
    out["audit"]["family"] = family
    return out

  def settings(self) -> dict:
    cfg = self.cfg
    return {"preset": cfg.preset, "config": cfg.copy_and_resolve_references().to_dict(),
            "train_checkpoints": self.train_steps, "later_checkpoints": self.later_steps,
            "tasks": self.task_names, "families": list(self.families), "test_frac": cfg.test_frac,
            "val_frac": cfg.val_frac, "labels": cfg.labels.to_dict(),
            "activation_only_families": self.activation_only(), "extract": self.extract_spec.to_dict(),
            "probe_configs": {f: c.to_dict() for f, c in self.families.items()},
            "pretrain": None if self.external else cfg.pretrain.to_dict(),
            "checkpoints": [p for _, p in self.external] or None,
            "selection": "no setting was chosen on test questions or later checkpoints"}

  def _quiet(self, msg: str) -> None:
    if msg.startswith("labels:"):
      self.log("   " + msg)


# ----------------------------------------------------------------------------- the whole run


def run(cfg, workdir: str, log: Callable[[str], None] = print) -> dict:
  """Runs every stage (resuming what a killed run finished) and returns summary.json's dict."""
  d = Demo(cfg, workdir, log)
  os.makedirs(d.workdir, exist_ok=True)
  t_start = time.perf_counter()
  log(f"demo: {len(d.schedule)} checkpoints at steps {d.schedule}; probes train on the labels of "
      f"steps {d.train_steps}; families {list(d.families)}")
  if not d.external:
    with d.timer("pretrain (to the last probe-training checkpoint)"):
      d.pretrain(stop_at=d.train_steps[-1])
  d.label_and_extract(d.checkpoints(d.train_steps), "probe-training checkpoints")
  with d.timer("train probes"):
    probes = d.train_probes()
  monitor = None if d.external else d.monitor(probes)
  t_pre = time.perf_counter()
  if not d.external:
    with d.timer("pretrain (rest, with the in-loop monitor)"):
      info = d.pretrain(monitor=monitor)
  rest_seconds = time.perf_counter() - t_pre
  later = d.checkpoints(d.later_steps)
  d.label_and_extract(later, "later checkpoints")
  with d.timer("predict and evaluate"):
    summary, predictions, labels = d.predict_and_evaluate(probes)
  with d.timer("latency"):
    summary.update(d.latency(probes, *later[-1]))
  if monitor is not None:
    summary["monitor"] = monitor_summary(monitor, cfg.monitor, info, rest_seconds)
  summary["settings"] = d.settings()
  summary["measured_accuracy"] = measured_accuracy(labels)
  if cfg.audit.enabled:
    with d.timer("audit, pass@k, drift"):
      summary.update(d.audit(predictions, labels))
      summary["latency_seconds"]["audited"] = evaluate.audited_clock(summary["latency_seconds"], summary["audit"])
  if not d.external:
    difficulty = {(t, q.id): q.difficulty for t in d.task_names for q in d.questions(t)}
    summary["testbed_checks"] = checks.testbed_checks(labels, predictions, summary, difficulty,
                                                      d.train_steps[-1], d.task_names)
  summary["stage_seconds"] = dict(d.timer.seconds)
  summary_path = os.path.join(d.workdir, "summary.json")
  with d.timer("report"):
    summary["bars"] = demo_report.bars(summary)
    write_summary(summary_path, summary)
    demo_report.write(d.workdir, summary, predictions, labels)
  summary["stage_seconds"] = dict(d.timer.seconds)
  summary["total_seconds"] = time.perf_counter() - t_start
  summary["bars"] = demo_report.bars(summary)  # now with the demo's own wall time
  write_summary(summary_path, summary)
  return summary


def write_summary(path: str, summary: dict) -> None:
  io.write_json(path, summary, indent=2, sort_keys=True, default=io.jsonable)


def monitor_summary(monitor: ProbeMonitor, mcfg, info: dict, rest_seconds: float) -> dict:
  """The monitor's cost per call, also in training steps (its own calls taken out of the steps)."""
  steps_run = max(1, info["end_step"] - info["start_step"])
  cost = monitor.cost_seconds()
  step_s = (rest_seconds - sum(monitor.call_seconds)) / steps_run
  return {"family": mcfg.family, "every_steps": mcfg.every, **cost, "train_step_seconds": step_s,
          "cost_in_train_steps": None if cost["median_warm"] is None else cost["median_warm"] / step_s,
          "records": monitor.history}


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
