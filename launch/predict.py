"""A checkpoint -> one prefill pass -> predicted pass@1 per question and task accuracy with CIs.

  python -m launch.predict --config=configs/probes/linear.py:testbed \
      --config.probe=runs/probes/linear/probe \
      --config.data.checkpoint=runs/testbed/checkpoints/step_1200 \
      --config.data.tasks=syn_add,syn_sort --config.out=runs/predict/linear
With --config.data.labels the measured accuracy and the probe's AUROC are reported beside it;
with --config.data.audit_labels the audited (PPI++) accuracy and the stale alarm, and with
--config.data.previous_audit=<an earlier audited run> the accuracy through that audit's offset.
Writes <out>/predictions.jsonl and <out>/summary.json with the wall time of each stage (load
probe, load checkpoint, extract, predict; extraction includes jit compilation on this first run,
and `--config.timing_repeats=2` adds warm timings).
"""
from __future__ import annotations

import json

from absl import app, flags, logging
from ml_collections import config_flags

from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/probes/*.py file.", lock_config=True)
_REPEATS = flags.DEFINE_integer("timing_repeats", 1, "Runs of extract+predict (2+: warm timings).")


def main(argv):
  del argv
  common.init_runtime()
  common.quiet_orbax_logs()
  c = common.config_of(_CONFIG)
  with common.user_errors():
    from probing import jobs
    bar = []

    def on_batch(i, n):  # count, rate and ETA of the one prefill pass
      if not bar or bar[0].done >= bar[0].total:  # a new pass (--timing_repeats)
        bar[:] = [common.Progress(n, "predict: prefill", "batches")]
      bar[0].update(1)
    summary = jobs.predict(c, timing_repeats=_REPEATS.value, log=logging.info, on_batch=on_batch)
  logging.info("predicted task accuracy: %s", {k: round(v["predicted"], 4) for k, v in summary["task_accuracy"].items()})
  print(json.dumps({"out": c.out, "seconds": summary["seconds"]}))


if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser())
