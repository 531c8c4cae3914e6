"""Labels from evaluations already run elsewhere: lm-eval or OLMES per-document results.

  python -m launch.import_labels --format=lm_eval \
      --input=lm_eval_out/ckpt/samples_gsm8k_2026-01-01T00-00-00.000000.jsonl \
      --task=gsm8k --checkpoint=stage1-step1000 --checkpoint_step=1000 --out=runs/labels
  python -m launch.import_labels --format=olmes --input=olmes_out/task-000-gsm8k-predictions.jsonl \
      --task=gsm8k --checkpoint=stage1-step1000 --checkpoint_step=1000 --out=runs/labels

Writes <out>/<checkpoint>.<task>.imported.jsonl (label records that `launch.train_probes`
reads with the generated ones) and its .provenance.json. lm-eval: --filter picks the filter
(default: the task's first, e.g. GSM8K's strict-match), re-applied to every repeat and scored
by our task's scorer. OLMES: --metric picks the per-instance metric (default: the run's
primary one). Rerunning the same import changes nothing; other results for the same
(checkpoint, task) need --replace. Bad input fails with one line and exit 1, writing nothing.
"""
from __future__ import annotations

from absl import app, flags

from launch import common

_FORMAT = flags.DEFINE_enum("format", None, ["lm_eval", "olmes"], "Which tool wrote --input.")
_INPUT = flags.DEFINE_string("input", None, "lm-eval samples_<task>_<date>.jsonl or OLMES "
                             "task-NNN-<task>-predictions.jsonl.")
_TASK = flags.DEFINE_string("task", None, "Our task name the documents belong to (e.g. gsm8k).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Checkpoint id the records are keyed by.")
_STEP = flags.DEFINE_integer("checkpoint_step", None, "The checkpoint's monotone training step.")
_OUT = flags.DEFINE_string("out", None, "Labels directory (the one launch.train_probes reads).")
_FILTER = flags.DEFINE_string("filter", None, "lm-eval filter (default: the task's first).")
_METRIC = flags.DEFINE_string("metric", None, "Per-document metric where samples cannot be rescored "
                              "(default: the row's first / OLMES primary).")
_ALLOW = flags.DEFINE_boolean("allow_unmatched", False, "Skip (and count) documents that match none or "
                              "several of our questions instead of failing.")
_REPLACE = flags.DEFINE_boolean("replace", False, "Overwrite different labels of this (checkpoint, task) "
                                "imported before.")


def main(argv):
  del argv
  common.with_testbed()  # no JAX here: only the task registry (with the testbed's names) is needed
  missing = [f"--{f.name}" for f in (_FORMAT, _INPUT, _TASK, _CHECKPOINT, _STEP, _OUT) if f.value is None]
  with common.user_errors(ValueError, FileNotFoundError, KeyError, OSError):
    if missing:
      raise ValueError(f"set {', '.join(missing)}")
    from probing import interop
    s = interop.import_labels(_FORMAT.value, _INPUT.value, _TASK.value, _CHECKPOINT.value, _STEP.value,
                              _OUT.value, filter=_FILTER.value, metric=_METRIC.value,
                              allow_unmatched=_ALLOW.value, replace=_REPLACE.value)
  skipped = ", ".join(f"{n} {k}" for k, n in s["skipped"].items() if n) or "none"
  how = f"filter {s['filter']}" if s["filter"] else f"metric {s['metric']}"
  print(f"{s['status']}: {s['records']} {_TASK.value} labels of {_CHECKPOINT.value} -> {s['out']} "
        f"({s['format']}, {how}; skipped: {skipped})")


if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser())
