"""Scalars in TensorBoard event files, read back with TensorBoard's own reader (its
EventAccumulator, which `tensorboard --logdir` serves from): the writer protocol, and the
watcher's timeline at each checkpoint's training step."""
import os

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from run_fixtures import LIMIT, TASKS

from probing import tasks, tensorboard, watch
from probing.labels import read_labels
from probing.probes import load_probe


def read_scalars(logdir):
  """{tag: [(step, value), ...]} across every event file under logdir."""
  out = {}
  for root, _, files in os.walk(logdir):
    if any(f.startswith("events.out.tfevents") for f in files):
      acc = EventAccumulator(root, size_guidance={"scalars": 0})
      acc.Reload()
      for tag in acc.Tags()["scalars"]:
        out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
  return {k: sorted(v) for k, v in out.items()}


def test_writer_round_trip(tmp_path):
  w = tensorboard.TensorBoardWriter(tmp_path / "tb")
  assert isinstance(w, tensorboard.ScalarWriter)
  w.write_scalars(1200, {"predicted/syn_sum/linear": 0.25, "skipped": float("nan")})
  w.write_scalars(2400, {"predicted/syn_sum/linear": 0.5})  # flushed: readable before close
  assert read_scalars(tmp_path / "tb") == {"predicted/syn_sum/linear": [(1200, 0.25), (2400, 0.5)]}
  w.close()
  with pytest.raises(TypeError, match="write_scalars"):
    tensorboard.as_writer(3)


def test_watcher_scalars_at_checkpoint_steps(tmp_path, testbed_run, testbed_probe):
  questions = {t: list(tasks.get(t).questions(LIMIT)) for t in TASKS}
  w = watch.Watcher(testbed_run["workdir"], {"linear": load_probe(testbed_probe["probe"])}, questions,
                    str(tmp_path / "out"), labels=read_labels(testbed_probe["labels"]), audit_size=8,
                    prompt_format_hashes={t: tasks.get(t).format_hash() for t in questions})
  assert w.sweep() == [os.path.basename(p) for _, p in testbed_run["checkpoints"]]
  assert w.sweep() == []  # nothing twice
  records = watch.read_timeline(str(tmp_path / "out"))
  scalars = read_scalars(tmp_path / "out" / "tensorboard")
  for field in ("predicted", "predicted_low", "predicted_high", "measured", "audited", "audited_low",
                "audited_high"):
    for task in TASKS:
      want = [(r["checkpoint_step"], r[field]) for r in records if r["task"] == task]
      got = scalars[f"{field}/{task}/linear"]
      assert [s for s, _ in got] == [s for s, _ in want] == [3, 6, 9, 12]
      assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-6)  # stored as float32
  r = records[0]
  assert r["audited_low"] <= r["audited"] <= r["audited_high"] and r["audit_size"] == 8
  assert os.path.getsize(tmp_path / "out" / "timeline.png") > 1000


def test_watcher_audits_with_labels_of_a_random_audit_only(tmp_path, testbed_run, testbed_probe):
  """Labels of a random audit alone (no measured accuracy) give the audited PPI++ estimate, the
  interval the demo's coverage figures are for, and the stale flag."""
  from probing.eval import audited as audit
  questions = {t: list(tasks.get(t).questions(LIMIT)) for t in TASKS}
  labels = read_labels(testbed_probe["labels"])
  keep = {t: set(audit.audit_questions([q.id for q in qs], 6, seed=0, task=t)) for t, qs in questions.items()}
  partial = [r for r in labels if r["question_id"] in keep.get(r["task"], ())]
  w = watch.Watcher(testbed_run["workdir"], {"linear": load_probe(testbed_probe["probe"])}, questions,
                    str(tmp_path / "out"), labels=partial,
                    prompt_format_hashes={t: tasks.get(t).format_hash() for t in questions})
  w.sweep()
  labelled = [r for r in watch.read_timeline(str(tmp_path / "out")) if "audited" in r]
  assert labelled and all("measured" not in r and r["audit_size"] == 6 for r in labelled)
  assert all(r["audited_low"] <= r["audited"] <= r["audited_high"] and isinstance(r["stale"], bool)
             for r in labelled)
  # Each audit's offset is carried to the next checkpoint: the timeline can be replayed by hand.
  by = {(r["checkpoint_step"], r["task"]): r for r in watch.read_timeline(str(tmp_path / "out"))}
  steps = sorted({s for s, _ in by})
  for task in TASKS:
    assert "carried_offset" not in by[(steps[0], task)]
    for prev, step in zip(steps, steps[1:]):
      r = by[(step, task)]
      assert r["carried_offset"] == pytest.approx(by[(prev, task)]["recalibration"])
      assert 0.0 < r["predicted_recalibrated"] < 1.0
