"""Config in, run directory out: the bodies of the probe launch scripts, as library calls.

Each job takes a probe config (`configs/probes/*.py`: sections head, train, split, eval,
extract, data) and writes what its script promises; `launch/extract.py`, `train_probes.py` and
`predict.py` are flags plus one of these. Labelling is `probing.labels.run`.
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable

from etils import epath

from models import io, multihost
from models import sharding as sharding_lib
from probing import cards, checkpoints, features, interop, tasks
from probing import tokenizer as tokenizer_lib
from probing import labels as labels_lib
from probing.eval import evaluate
from probing.probes import build_data, configs_from, load_probe, make_split, train_and_evaluate
from probing.probes import train as train_lib


def require(c, *fields: str) -> None:
  """Raises ValueError naming every missing `--config.<field>` at once."""
  def get(node, dotted):
    for part in dotted.split("."):
      node = node[part]
    return node
  missing = [f for f in fields if get(c, f) is None]
  if missing:
    raise ValueError("set " + ", ".join(f"--config.{f}" for f in missing))


def inspect_data_checkpoint(data) -> checkpoints.Checkpoint:
  """The checkpoint named by a config's `data` section (id and step as labels name them), its
  tokenizer and model config checked, its weights not read yet."""
  return checkpoints.inspect_checkpoint(data.checkpoint, tokenizer=data.tokenizer or "", name=data.checkpoint_name,
                                        step=data.checkpoint_step, stage_lengths=tuple(data.stage_lengths))


def task_names(c, *, required: bool = True) -> list[str]:
  """`data.tasks` expanded over the registry; an unknown name is an error naming the flag."""
  try:
    names = tasks.expand(c.data.tasks or "")
  except KeyError as e:
    raise ValueError(f"{e.args[0]} (--config.data.tasks)") from e
  if required and not names:
    raise ValueError("set --config.data.tasks")
  return names


def extract(c, *, on_progress: Callable[[str, int, int], None] | None = None) -> list[features.FeatureSet]:
  """Features of `data.checkpoint` for `data.tasks`, one resumable store per task under
  `data.features/<checkpoint>/<task>`. `on_progress(task, batch, n_batches)` follows each batch."""
  require(c, "data.checkpoint", "data.features", "data.tasks")
  spec = features.spec_from_config(c.extract)
  task_list = [tasks.get(n) for n in task_names(c)]
  ck = inspect_data_checkpoint(c.data)  # every check before the weights are read
  checkpoints.check_layers(ck, spec.layers + ((spec.token_layer,) if spec.token_layer is not None else ()),
                           flag="--config.extract.layers / --config.extract.token_layer")
  mesh = sharding_lib.make_mesh(c.data.mesh)
  ck = checkpoints.load_weights(ck, mesh=mesh, dtype=c.data.model_dtype)
  out = []
  for task in task_list:
    name = task.name
    progress = None if on_progress is None else (lambda i, n, name=name: on_progress(name, i, n))
    out.append(features.extract(
        ck.model, ck.tokenizer, list(task.questions(c.data.limit)), spec, mesh=mesh, checkpoint=ck.name,
        checkpoint_step=ck.step, task=name, prompt_format_hash=task.format_hash(),
        out_dir=features.store_dir(c.data.features, ck.name, name), overwrite=c.data.overwrite,
        on_batch=progress))
  return out


def check_inputs(sets, labels, names, features_root, labels_path) -> None:
  """Every requested task has features and labels, and the checkpoints' steps agree with their
  names; else one error naming what is missing (never a silent all-zero label)."""
  have_features = {fs.meta["task"] for fs in sets}
  have_labels = {r["task"] for r in labels}
  for name in names or sorted(have_features):
    if name not in have_features:
      raise ValueError(f"task {name!r} has no features under {features_root} (run launch.extract for it, or "
                       "drop it from --config.data.tasks)")
    if name not in have_labels:
      raise ValueError(f"task {name!r} has no labels in {labels_path} (run launch.label for it, or drop it "
                       "from --config.data.tasks)")
  steps = {(fs.meta["checkpoint"], fs.meta["checkpoint_step"]) for fs in sets}
  checkpoints.check_step_order(steps)


def check_tokenizer(card, tokenizer, probe_path) -> None:
  """The checkpoint's tokenizer is the one the probe's features were made with (card hash)."""
  want = cards.summary(card)["tokenizer_hash"]
  got = tokenizer_lib.tokenizer_hash(tokenizer)
  if isinstance(want, str) and want != got:
    raise ValueError(f"probe {probe_path} was trained on features of tokenizer {want}, this checkpoint's is "
                     f"{got} ({tokenizer!r}); set --config.data.tokenizer to the probe's tokenizer")


def train(c, *, log: Callable[[str], None] = lambda _: None,
          on_epoch: Callable[[int, int], None] | None = None) -> dict:
  """Trains `head.family` on the features and labels of earlier checkpoints and evaluates it
  (and the baselines) on the held-out questions of later ones.

  Writes `<out>/probe` (orbax params + probe_card.json), `<out>/metrics.json` and
  `<out>/predictions.jsonl` (the test rows); bad input fails before anything is written.
  """
  require(c, "data.features", "data.labels", "out")
  head, train_cfg = configs_from(c)
  names = task_names(c, required=False) or None
  try:
    sets = features.load_feature_sets(c.data.features, tasks=names)
  except features.FeatureError:
    if not names:
      raise
    sets = []  # check_inputs names the first requested task without features
  labels = labels_lib.read_labels(c.data.labels)
  check_inputs(sets, labels, names, c.data.features, c.data.labels)
  has_nll = all("nll_mean" in fs.arrays for fs in sets)
  data = build_data(sets, labels, **head.data_kwargs(nll=bool(c.eval.baselines and has_nll)))
  split = make_split(data, **c.split.to_dict())
  log(f"train {head.family}: {len(sets)} feature sets, {int(split.train.sum())} training rows up to step "
      f"{split.train_upto_step}, {int(split.test.sum())} test rows; training (one jitted loop) ...")
  t0 = time.perf_counter()
  with train_lib.on_epochs(on_epoch or (lambda *_: None)):
    result = train_and_evaluate(data, split, head, train_cfg, olmo_source=c.data.checkpoint,
                                with_baselines=c.eval.baselines, sklearn_c=c.eval.sklearn_c)
  log(f"train {head.family}: trained and evaluated in {time.perf_counter() - t0:.1f}s")
  # Every process trained the same probe on the same data; the probe's orbax save is collective
  # (process 0 writes it), the other files are process 0's.
  if multihost.is_writer():
    io.mkdirs(c.out)
  result["probe"].save(os.path.join(c.out, "probe"))
  if multihost.is_writer():
    io.write_json(os.path.join(c.out, "metrics.json"), result["metrics"] | {"config": c.to_dict()}, default=float)
    io.write_jsonl(os.path.join(c.out, "predictions.jsonl"), result["records"])
  return result | {"split": split}


def predict(c, *, timing_repeats: int = 1, log: Callable[[str], None] = lambda _: None,
            on_batch: Callable[[int, int], None] | None = None) -> dict:
  """Predicted pass@1 of `data.tasks`' questions at `data.checkpoint` with the probe at `probe`.

  Writes `<out>/predictions.jsonl` and `<out>/summary.json` (task accuracy with intervals, the
  wall time of each stage; with `data.labels`, the measured accuracy and AUROC beside them), and
  with `lm_eval_dir` the same predictions as an lm-eval run (`probing.interop.write_lm_eval`).
  With `data.audit_labels` (labels of a random audit, `launch.label --config.data.audit=N`), the
  summary's `audit` holds each audited task's PPI++ accuracy with its 95% interval, the
  "probe stale: relabel" alarm (`probing.eval.audited.audit_tasks`) and the offset this audit
  fits. `data.previous_audit` (the summary.json of a predict run with audit labels at an earlier
  checkpoint) carries that offset here: `carried` holds each task's accuracy from the probe
  through it, and the stale test reads it (`probing.eval.audited.recalibration`).
  Tasks and prompt formats the probe's card does not know are refused before the model is read;
  a checkpoint step outside the card's validity window is warned about (and in the summary).
  `timing_repeats` >= 2 adds warm timings (the first run compiles); `on_batch(i, n)` follows the
  extraction's batches.
  """
  require(c, "probe", "data.checkpoint", "data.tasks", "out")
  times = {}
  t = time.perf_counter()
  probe = load_probe(c.probe)
  times["load_probe"] = time.perf_counter() - t
  task_list = [tasks.get(n) for n in task_names(c)]
  formats = {tk.name: tk.format_hash() for tk in task_list}
  probe.check_tasks(formats, name=c.probe, formats=formats)  # before the model is read
  ck = inspect_data_checkpoint(c.data)
  offsets = previous_offsets(c.data.previous_audit, probe.card["family"], ck.step) if c.data.get(
      "previous_audit") else None
  check_tokenizer(probe.card, ck.tokenizer, c.probe)
  spec = probe.extract_spec(batch_size=c.extract.batch_size)
  checkpoints.check_layers(ck, spec.layers + ((spec.token_layer,) if spec.token_layer is not None else ()),
                           flag="--config.data.checkpoint (this probe reads layers the model lacks)")
  t = time.perf_counter()
  mesh = sharding_lib.make_mesh(c.data.mesh)
  ck = checkpoints.load_weights(ck, mesh=mesh, dtype=c.data.model_dtype)
  times["load_checkpoint"] = time.perf_counter() - t
  questions = {tk.name: list(tk.questions(c.data.limit)) for tk in task_list}
  n_q = sum(map(len, questions.values()))
  log(f"predict: {ck.name} (step {ck.step}) loaded in {times['load_checkpoint']:.1f}s; one prefill pass over "
      f"{n_q} questions of {len(questions)} task(s) ...")
  labels = None
  if c.data.labels:
    labels = [r for r in labels_lib.read_labels(c.data.labels) if str(r["checkpoint"]) == ck.name]
  # What the probe reads and how its training features were cut come from its card (`spec`
  # above); only the batch size is this run's own.
  for rep in range(max(1, timing_repeats)):
    suffix = "" if rep == 0 else "_warm"
    pred = probe.predict_model(ck.model, ck.tokenizer, questions, mesh=mesh, spec=spec, checkpoint=ck.name,
                               checkpoint_step=ck.step, labels=labels,
                               prompt_format_hashes=formats, on_batch=on_batch)
    times["extract" + suffix], times["predict" + suffix] = pred.seconds["extract"], pred.seconds["predict"]
    log(f"predict: {n_q}/{n_q} questions in {pred.seconds['extract'] + pred.seconds['predict']:.1f}s "
        f"({n_q / max(pred.seconds['extract'] + pred.seconds['predict'], 1e-9):.1f} q/s, ETA 0s)")
  summary = {"checkpoint": ck.name, "checkpoint_step": ck.step, "probe": c.probe,
             "family": probe.card["family"], "seconds": times, "task_accuracy": pred.task_accuracy(),
             "n_questions": {name: len(qs) for name, qs in questions.items()},
             "validity_warning": cards.step_warning(probe.card, ck.step, c.probe)}
  if labels is not None:
    summary["metrics"] = evaluate(pred.data, pred.p)
  if offsets is not None:
    summary["carried"] = carried(pred, offsets, c.data.previous_audit, log)
  if c.data.get("audit_labels"):
    summary["audit"] = audited(c, pred, ck.name, log, offsets)
  if not multihost.is_writer():  # every process holds every prediction; process 0 writes them
    return summary
  io.mkdirs(c.out)
  if c.get("lm_eval_dir"):
    summary["lm_eval"] = interop.write_lm_eval(
        c.lm_eval_dir, pred.data, pred.p, questions, checkpoint=ck.name, checkpoint_step=ck.step, probe=c.probe,
        card=probe.card, formats=formats, limit=c.data.limit, seconds=times["extract"] + times["predict"],
        total_questions={tk.name: sum(1 for _ in tk.questions()) for tk in task_list})
  io.write_jsonl(os.path.join(c.out, "predictions.jsonl"), pred.records())
  io.write_json(os.path.join(c.out, "summary.json"), summary, default=float)
  return summary


def previous_offsets(path: str, family: str, step: int | None) -> dict[str, float]:
  """task -> the offset the audit of an earlier predict run fitted (its summary.json, or the dir
  holding it). Refused: a summary without an audit, another probe family, a checkpoint not before
  this one (carrying an offset backwards in training would read the future)."""
  flag = f"--config.data.previous_audit={path}"
  file = epath.Path(path if path.endswith(".json") else os.path.join(path, "summary.json"))
  if not file.exists():
    raise FileNotFoundError(f"{flag}: no {file}")
  try:
    prev = json.loads(file.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{flag}: {file} is not JSON ({e})") from None
  if not prev.get("audit"):
    raise ValueError(f"{flag}: {file} has no audit (run that predict with --config.data.audit_labels)")
  if prev.get("family") != family:
    raise ValueError(f"{flag}: its probe is a {prev.get('family')!r} probe, this one a {family!r} probe; an "
                     "offset belongs to the probe its audit read")
  if step is not None and prev.get("checkpoint_step") is not None and int(prev["checkpoint_step"]) >= int(step):
    raise ValueError(f"{flag}: its checkpoint (step {prev['checkpoint_step']}) is not before this one (step {step})")
  missing = sorted(t for t, a in prev["audit"].items() if "recalibration" not in a)
  if missing:
    raise ValueError(f"{flag}: task(s) {missing} in {file} have no 'recalibration' (written by an older version)")
  return {t: float(a["recalibration"]) for t, a in prev["audit"].items()}


def carried(pred, offsets: dict[str, float], source: str, log: Callable[[str], None]) -> dict:
  """task -> the probe's task accuracy through the offset carried from an earlier audit."""
  from probing.eval import audited as audited_lib  # pylint: disable=import-outside-toplevel
  out = {}
  for task in sorted(set(map(str, pred.data.task)) & set(offsets)):
    p = audited_lib.recalibrate(pred.p[pred.data.task == task], offsets[task])
    out[task] = {"offset": offsets[task], "predicted": float(p.mean()), "from": source}
    log(f"predict: {task}: {out[task]['predicted']:.3f} through the offset {offsets[task]:+.3f} of the audit in "
        f"{source}")
  return out


def audited(c, pred, checkpoint: str, log: Callable[[str], None], offsets: dict[str, float] | None = None) -> dict:
  """task -> the audited estimate at `checkpoint` from the labels at `data.audit_labels`."""
  from probing.eval import audited as audited_lib  # pylint: disable=import-outside-toplevel
  records = [r for r in labels_lib.read_labels(c.data.audit_labels) if str(r["checkpoint"]) == checkpoint]
  if not records:
    raise ValueError(f"--config.data.audit_labels={c.data.audit_labels}: no labels of checkpoint {checkpoint!r}")
  out = audited_lib.audit_tasks(pred.records(), records, stale_tolerance=c.stale_tolerance, offsets=offsets)
  for task, a in out.items():
    lo, hi = a["ppi"]["ci"]
    log(f"predict: {task}: audited accuracy {a['ppi']['estimate']:.3f} [{lo:.3f}, {hi:.3f}] (PPI++, {a['n']} of "
        f"{a['N']} questions audited; probe alone {a['probe_only']:.3f})"
        + ("; probe stale: relabel" if a["alarm"] else ""))
  return out
