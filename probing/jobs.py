"""Config in, run directory out: the bodies of the probe launch scripts, as library calls.

Each job takes a probe config (`configs/probes/*.py`: sections head, train, split, eval,
extract, data) and writes what its script promises; `launch/extract.py`, `train_probes.py` and
`predict.py` are flags plus one of these. Labelling is `probing.labels.run`.
"""
from __future__ import annotations

import os
import time
from typing import Callable

from models import io, multihost
from models import sharding as sharding_lib
from probing import cards, checkpoints, features, interop, tasks
from probing import labels as labels_lib
from probing.eval import evaluate
from probing.probes import build_data, configs_from, load_probe, make_split, train_and_evaluate


def require(c, *fields: str) -> None:
  """Raises ValueError naming every missing `--config.<field>` at once."""
  def get(node, dotted):
    for part in dotted.split("."):
      node = node[part]
    return node
  missing = [f for f in fields if get(c, f) is None]
  if missing:
    raise ValueError("set " + ", ".join(f"--config.{f}" for f in missing))


def open_data_checkpoint(data, mesh) -> checkpoints.Checkpoint:
  """The checkpoint named by a config's `data` section (id and step as labels name them)."""
  return checkpoints.open_checkpoint(data.checkpoint, mesh=mesh, dtype=data.model_dtype,
                                     tokenizer=data.tokenizer or "", name=data.checkpoint_name,
                                     step=data.checkpoint_step)


def extract(c, *, on_progress: Callable[[str, int, int], None] | None = None) -> list[features.FeatureSet]:
  """Features of `data.checkpoint` for `data.tasks`, one resumable store per task under
  `data.features/<checkpoint>/<task>`. `on_progress(task, batch, n_batches)` follows each batch."""
  require(c, "data.checkpoint", "data.features", "data.tasks")
  spec = features.spec_from_config(c.extract)
  names = tasks.expand(c.data.tasks)
  mesh = sharding_lib.make_mesh(c.data.mesh)
  ck = open_data_checkpoint(c.data, mesh)
  out = []
  for name in names:
    task = tasks.get(name)
    progress = None if on_progress is None else (lambda i, n, name=name: on_progress(name, i, n))
    out.append(features.extract(
        ck.model, ck.tokenizer, list(task.questions(c.data.limit)), spec, mesh=mesh, checkpoint=ck.name,
        checkpoint_step=ck.step, task=name, prompt_format_hash=task.format_hash(),
        out_dir=features.store_dir(c.data.features, ck.name, name), overwrite=c.data.overwrite,
        on_batch=progress))
  return out


def train(c) -> dict:
  """Trains `head.family` on the features and labels of earlier checkpoints and evaluates it
  (and the baselines) on the held-out questions of later ones.

  Writes `<out>/probe` (orbax params + probe_card.json), `<out>/metrics.json` and
  `<out>/predictions.jsonl` (the test rows); bad input fails before anything is written.
  """
  require(c, "data.features", "data.labels", "out")
  head, train_cfg = configs_from(c)
  names = tasks.expand(c.data.tasks) if c.data.tasks else None
  sets = features.load_feature_sets(c.data.features, tasks=names)
  has_nll = all("nll_mean" in fs.arrays for fs in sets)
  data = build_data(sets, labels_lib.read_labels(c.data.labels),
                    **head.data_kwargs(nll=bool(c.eval.baselines and has_nll)))
  split = make_split(data, **c.split.to_dict())
  result = train_and_evaluate(data, split, head, train_cfg, olmo_source=c.data.checkpoint,
                              with_baselines=c.eval.baselines, sklearn_c=c.eval.sklearn_c)
  # Every process trained the same probe on the same data; the probe's orbax save is collective
  # (process 0 writes it), the other files are process 0's.
  if multihost.is_writer():
    io.mkdirs(c.out)
  result["probe"].save(os.path.join(c.out, "probe"))
  if multihost.is_writer():
    io.write_json(os.path.join(c.out, "metrics.json"), result["metrics"] | {"config": c.to_dict()}, default=float)
    io.write_jsonl(os.path.join(c.out, "predictions.jsonl"), result["records"])
  return result | {"split": split}


def predict(c, *, timing_repeats: int = 1) -> dict:
  """Predicted pass@1 of `data.tasks`' questions at `data.checkpoint` with the probe at `probe`.

  Writes `<out>/predictions.jsonl` and `<out>/summary.json` (task accuracy with intervals, the
  wall time of each stage; with `data.labels`, the measured accuracy and AUROC beside them), and
  with `lm_eval_dir` the same predictions as an lm-eval run (`probing.interop.write_lm_eval`).
  Tasks and prompt formats the probe's card does not know are refused before the model is read;
  a checkpoint step outside the card's validity window is warned about (and in the summary).
  `timing_repeats` >= 2 adds warm timings (the first run compiles).
  """
  require(c, "probe", "data.checkpoint", "data.tasks", "out")
  times = {}
  t = time.perf_counter()
  probe = load_probe(c.probe)
  times["load_probe"] = time.perf_counter() - t
  task_list = [tasks.get(n) for n in tasks.expand(c.data.tasks)]
  formats = {tk.name: tk.format_hash() for tk in task_list}
  probe.check_tasks(formats, name=c.probe, formats=formats)  # before the model is read
  t = time.perf_counter()
  mesh = sharding_lib.make_mesh(c.data.mesh)
  ck = open_data_checkpoint(c.data, mesh)
  times["load_checkpoint"] = time.perf_counter() - t
  questions = {tk.name: list(tk.questions(c.data.limit)) for tk in task_list}
  labels = None
  if c.data.labels:
    labels = [r for r in labels_lib.read_labels(c.data.labels) if str(r["checkpoint"]) == ck.name]
  # What the probe reads and how its training features were cut come from its card; only the
  # batch size is this run's own.
  spec = probe.extract_spec(batch_size=c.extract.batch_size)
  for rep in range(max(1, timing_repeats)):
    suffix = "" if rep == 0 else "_warm"
    pred = probe.predict_model(ck.model, ck.tokenizer, questions, mesh=mesh, spec=spec, checkpoint=ck.name,
                               checkpoint_step=ck.step, labels=labels,
                               prompt_format_hashes=formats)
    times["extract" + suffix], times["predict" + suffix] = pred.seconds["extract"], pred.seconds["predict"]
  summary = {"checkpoint": ck.name, "checkpoint_step": ck.step, "probe": c.probe,
             "family": probe.card["family"], "seconds": times, "task_accuracy": pred.task_accuracy(),
             "n_questions": {name: len(qs) for name, qs in questions.items()},
             "validity_warning": cards.step_warning(probe.card, ck.step, c.probe)}
  if labels is not None:
    summary["metrics"] = evaluate(pred.data, pred.p)
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
