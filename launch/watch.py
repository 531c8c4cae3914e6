"""Follows a training run: every complete new checkpoint probed once, in step order.

  python -m launch.watch --run_dir=runs/testbed --probes=runs/probes/linear,runs/probes/mlp \
      --out=runs/testbed/watch [--once] [--poll_seconds=60] [--tasks=syn_add,syn_sort]

`--run_dir` is a run's work dir (with `checkpoints/`) or its checkpoints dir: `launch.pretrain`
step dirs, orbax CheckpointManager step dirs or HF directories; half-written ones are waited for.
Appends per (checkpoint, task, probe) records to <out>/timeline.jsonl, redraws
<out>/timeline.png and writes TensorBoard scalars under <out>/tensorboard at each checkpoint's
training step. Killed and rerun, it continues where it stopped. `--once` sweeps what exists and
exits; without it, it polls until killed.
"""
from __future__ import annotations

import os

from absl import app, flags, logging

from launch import common

RUN_DIR = flags.DEFINE_string("run_dir", None, "The training run's work dir or checkpoints dir.", required=True)
PROBES = flags.DEFINE_list("probes", None, "Trained probe dirs (a probe, or a train_probes out dir holding "
                           "probe/); records name each by its base name.", required=True)
OUT = flags.DEFINE_string("out", None, "Where the timeline, figure and TensorBoard logs go.", required=True)
ONCE = flags.DEFINE_bool("once", False, "Sweep the checkpoints that exist now, then exit.")
POLL = flags.DEFINE_float("poll_seconds", 60.0, "Seconds between looks at the run dir.")
TASKS = flags.DEFINE_string("tasks", "", "Tasks to predict (patterns allowed); default: every task the probes know.")
LIMIT = flags.DEFINE_integer("limit", None, "Questions per task (default: all).")
LABELS = flags.DEFINE_string("labels", "", "Label files or dirs: measured accuracy where every question is "
                             "labelled; the audited estimate where only a random audit is.")
AUDIT = flags.DEFINE_integer("audit_size", 0, "With full labels: an audited PPI++ estimate from a random audit "
                             "of this many questions per task (what an audit would have given).")
BATCH = flags.DEFINE_integer("batch_size", None, "Extraction batch size (default: the probe card's).")
TOKENIZER = flags.DEFINE_string("tokenizer", "", "Tokenizer setting (default: each checkpoint's own).")
MESH = flags.DEFINE_string("mesh", "data=-1", "Mesh axes, e.g. 'data=-1' or 'fsdp=4,tensor=2'.")


def main(argv):
  del argv
  common.init_runtime()
  common.quiet_orbax_logs()
  from models import sharding as sharding_lib
  from probing import tasks, watch
  from probing.labels import read_labels
  from probing.probes import load_probe
  with common.user_errors(ValueError, FileNotFoundError, KeyError):
    probes = {os.path.basename(os.path.normpath(p)): load_probe(watch.probe_dir(p)) for p in PROBES.value}
    names = tasks.expand(TASKS.value) if TASKS.value else watch.shared_tasks(probes.values())
    task_list = [tasks.get(n) for n in names]
    questions = {tk.name: list(tk.questions(LIMIT.value)) for tk in task_list}
    watcher = watch.Watcher(RUN_DIR.value, probes, questions, OUT.value, mesh=sharding_lib.make_mesh(MESH.value),
                            tokenizer=TOKENIZER.value or None, batch_size=BATCH.value,
                            labels=read_labels(LABELS.value) if LABELS.value else None, audit_size=AUDIT.value,
                            prompt_format_hashes={tk.name: tk.format_hash() for tk in task_list},
                            report=lambda m: logging.info("watch: %s", m))
    if ONCE.value:
      probed = watcher.sweep()
      print(f"watch: probed {len(probed)} checkpoint(s); skipped {len(watcher.failed)}; timeline "
            f"{os.path.join(watcher.out, watch.TIMELINE)}")
      return
    logging.info("watch: following %s every %.0fs (Ctrl-C or kill to stop)", watch.checkpoints_dir(RUN_DIR.value),
                 POLL.value)
    watcher.follow(POLL.value)


if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser())
