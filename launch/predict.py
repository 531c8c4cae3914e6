"""A checkpoint -> one prefill pass -> predicted pass@1 per question and task accuracy with CIs.

  python -m launch.predict --config=configs/probes/linear.py:testbed \
      --config.probe=runs/probes/linear/probe \
      --config.data.checkpoint=runs/testbed/checkpoints/step_1200 \
      --config.data.tasks=syn_add,syn_sort --config.out=runs/predict/linear
With --config.data.labels the measured accuracy and the probe's AUROC are reported beside it.
Writes <out>/predictions.jsonl and <out>/summary.json with the wall time of each stage (load
probe, load checkpoint, extract, predict; extraction includes jit compilation on this first run,
and `--config.timing_repeats=2` adds warm timings).
"""
from __future__ import annotations

import json
import os
import time

from absl import app, flags, logging
from ml_collections import config_flags

from launch import common
from launch.probe_io import load_checkpoint, require, task_names, write_json, write_jsonl

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/probes/*.py file.", lock_config=True)
_REPEATS = flags.DEFINE_integer("timing_repeats", 1, "Runs of extract+predict (2+: warm timings).")


def main(argv):
  del argv
  common.init_runtime()
  c = _CONFIG.value
  with common.user_errors():
    from models import sharding
    from probing import features, tasks, train
    require(c, "probe", "data.checkpoint", "data.tasks", "out")
    times = {}
    t = time.perf_counter()
    probe = train.load_probe(c.probe)
    times["load_probe"] = time.perf_counter() - t
    card = probe.card
    uses_x = probe.spec.encoder in ("linear", "mlp")
    spec = features.spec_from_config(
        c.extract, layers=tuple(card["layers"]) if uses_x else (), pooling=tuple(card["pooling"].split("+")),
        token_layer=card["token_layer"] if probe.spec.uses_tokens else None, hybrid=probe.spec.uses_nll)
    t = time.perf_counter()
    mesh = sharding.make_mesh(c.data.mesh)
    ck = load_checkpoint(c.data, mesh)
    times["load_checkpoint"] = time.perf_counter() - t
    task_list = [tasks.get(n) for n in task_names(c.data)]
    questions = {tk.name: list(tk.questions(c.data.limit)) for tk in task_list}
    labels = None
    if c.data.labels:
      labels = [r for r in train.read_labels(c.data.labels) if str(r["checkpoint"]) == ck.name]
    for rep in range(max(1, _REPEATS.value)):
      suffix = "" if rep == 0 else "_warm"
      t = time.perf_counter()
      sets = [features.extract(ck.model, ck.tokenizer, questions[tk.name], spec, mesh=mesh,
                               checkpoint=ck.name, checkpoint_step=ck.step, task=tk.name,
                               prompt_format_hash=tk.format_hash()) for tk in task_list]
      times["extract" + suffix] = time.perf_counter() - t
      t = time.perf_counter()
      data = train.build_data(sets, labels, layers=card["layers"] if uses_x else (),
                              pooling=card["pooling"], tokens=probe.spec.uses_tokens,
                              nll=probe.spec.uses_nll)
      p = probe.predict(data)
      times["predict" + suffix] = time.perf_counter() - t
    summary = {"checkpoint": ck.name, "checkpoint_step": ck.step, "probe": c.probe,
               "family": card["family"], "seconds": times,
               "task_accuracy": train.task_accuracy(data, p),
               "n_questions": {tk.name: len(questions[tk.name]) for tk in task_list}}
    if labels is not None:
      summary["metrics"] = train.evaluate(data, p)
    os.makedirs(c.out, exist_ok=True)
    write_jsonl(os.path.join(c.out, "predictions.jsonl"), train.to_records(data, p))
    write_json(os.path.join(c.out, "summary.json"), summary)
  logging.info("predicted task accuracy: %s", {k: round(v["predicted"], 4) for k, v in summary["task_accuracy"].items()})
  print(json.dumps({"out": c.out, "seconds": times}))


if __name__ == "__main__":
  app.run(main)
