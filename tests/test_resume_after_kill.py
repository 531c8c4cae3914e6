"""Every long job survives SIGKILL: the real command is killed at a random point (the delay is
printed; set RESUME_KILL_DELAY=<seconds> to replay one), what it left is checked (nothing partial
reads as complete), the same command is rerun, and its output equals an uninterrupted run's
(ids and labels exactly, floats within 1e-6). Uninterrupted references come from the session
fixtures (tests/run_fixtures.py) where they exist, so each job costs one killed run and one rerun."""
import json
import os
import random
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from run_fixtures import LIMIT, TASKS, probe_config

from models import checkpoint as model_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ)  # the 8 CPU devices of conftest, as the in-process references use


def kill_then_rerun(cmd, low, high, timeout=300, check_partial=None):
  """Runs `cmd`, SIGKILLs it after a random delay in [low, high) s (unless it finished), calls
  `check_partial()` on what it left, reruns it to completion; returns the rerun's process."""
  delay = float(os.environ.get("RESUME_KILL_DELAY") or random.uniform(low, high))
  print(f"{cmd[2]}: SIGKILL after {delay:.2f}s (replay with RESUME_KILL_DELAY={delay:.2f})")
  proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    proc.wait(timeout=delay)
    print(f"{cmd[2]}: finished before the kill")
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
  if check_partial is not None:
    check_partial()
  again = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
  assert again.returncode == 0, again.stderr[-3000:]
  return again


def config_flags(c):
  """The settings `run_fixtures.probe_config` changes from the testbed preset, as flags."""
  data = [f"--config.data.{k}={c.data[k]}" for k in ("features", "labels", "tasks", "limit", "checkpoint")
          if c.data[k] is not None]
  return data + [f"--config.train.epochs={c.train.epochs}", f"--config.eval.baselines={c.eval.baselines}",
                 f"--config.head.layers={tuple(c.head.layers)}", f"--config.extract.layers={tuple(c.extract.layers)}",
                 f"--config.extract.token_layer={c.extract.token_layer}", f"--config.out={c.out}"]


# One function per launcher, so a change of its flags is made in one place.
def pretrain_cmd(workdir):
  return [sys.executable, "-m", "launch.pretrain", "--config=configs/experiments/testbed.py:smoke",
          f"--workdir={workdir}", "--config.train.steps=12", "--config.checkpoint.num=4"]


def extract_cmd(c):
  return [sys.executable, "-m", "launch.extract", "--config=configs/probes/linear.py:testbed", *config_flags(c)]


def train_probes_cmd(c):
  return [sys.executable, "-m", "launch.train_probes", "--config=configs/probes/linear.py:testbed",
          *config_flags(c)]


def convert_cmd(hf_dir, out_dir):
  return [sys.executable, "-m", "launch.convert", f"--hf_dir={hf_dir}", f"--out_dir={out_dir}", "--dtype=float32"]


def watch_cmd(run_dir, probe, out):
  return [sys.executable, "-m", "launch.watch", f"--run_dir={run_dir}", f"--probes={probe}", f"--out={out}",
          f"--tasks={','.join(TASKS)}", f"--limit={LIMIT}", "--once"]


def _params(path_or_model):
  model = model_checkpoint.load(path_or_model) if isinstance(path_or_model, str) else path_or_model
  return jax.tree.leaves(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _same_params(a, b):
  for x, y in zip(_params(a), _params(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-6)


def test_pretrain(tmp_path, testbed_run):
  from probing.testbed import pretrain
  workdir = tmp_path / "run"

  def every_checkpoint_loads():
    for _, path in pretrain.list_checkpoints(str(workdir)):
      model_checkpoint.load(path)

  kill_then_rerun(pretrain_cmd(workdir), 2, 20, check_partial=every_checkpoint_loads)
  got = pretrain.list_checkpoints(str(workdir))
  assert [s for s, _ in got] == [s for s, _ in testbed_run["checkpoints"]]
  for (_, a), (_, b) in zip(got, testbed_run["checkpoints"]):
    _same_params(a, b)


def test_extract(tmp_path, testbed_run, testbed_probe):
  from probing import features
  step, path = testbed_run["checkpoints"][-1]
  c = probe_config(tmp_path, checkpoint=path)

  def stores_are_whole():
    try:
      sets = features.load_feature_sets(c.data.features)
    except features.FeatureError:
      return  # nothing complete yet
    assert all(len(fs) == LIMIT for fs in sets)

  kill_then_rerun(extract_cmd(c), 2, 15, check_partial=stores_are_whole)
  got = {fs.meta["task"]: fs for fs in features.load_feature_sets(c.data.features)}
  want = {fs.meta["task"]: fs for fs in features.load_feature_sets(testbed_probe["features"],
                                                                   checkpoints=[os.path.basename(path)])}
  assert sorted(got) == sorted(want) == sorted(TASKS)
  for t in TASKS:
    assert got[t].question_ids == want[t].question_ids
    assert sorted(got[t].arrays) == sorted(want[t].arrays)
    for k in want[t].arrays:
      np.testing.assert_allclose(got[t].arrays[k], want[t].arrays[k], rtol=0, atol=1e-6)


def _jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_train_probes(tmp_path, testbed_probe):
  from probing.probes import load_probe
  c = probe_config(testbed_probe["root"])
  c.out = str(tmp_path / "out")

  def probe_loads_if_carded():
    if os.path.exists(tmp_path / "out" / "probe" / "probe_card.json"):
      load_probe(str(tmp_path / "out" / "probe"))
    for name in ("metrics.json", "predictions.jsonl"):
      if os.path.exists(tmp_path / "out" / name):
        with open(tmp_path / "out" / name) as f:
          [json.loads(line) for line in f] if name.endswith("l") else json.load(f)

  kill_then_rerun(train_probes_cmd(c), 2, 20, check_partial=probe_loads_if_carded)
  got, want = _jsonl(tmp_path / "out" / "predictions.jsonl"), _jsonl(testbed_probe["root"] / "probe_out" /
                                                                       "predictions.jsonl")
  key = lambda r: (r["checkpoint"], r["task"], r["question_id"], r.get("split"))
  assert [key(r) for r in got] == [key(r) for r in want]
  assert [r["p"] for r in got] == pytest.approx([r["p"] for r in want], abs=1e-6)


def test_convert(tmp_path, testbed_run):
  from models import convert
  _, path = testbed_run["checkpoints"][-1]
  hf_dir, out = tmp_path / "hf", tmp_path / "converted"
  convert.save_hf(model_checkpoint.load(path), str(hf_dir))

  def complete_or_absent():
    if os.path.exists(out):
      model_checkpoint.load(str(out))

  kill_then_rerun(convert_cmd(hf_dir, out), 1, 12, check_partial=complete_or_absent)
  _same_params(str(out), convert.load_hf(str(hf_dir), dtype="float32"))  # as an uninterrupted convert loads it


def test_watch(tmp_path, testbed_run, testbed_probe):
  from models import sharding
  from probing import tasks, watch
  from probing.probes import load_probe
  out = tmp_path / "watch"

  def timeline_whole():
    keys = [(r["checkpoint"], r["task"]) for r in watch.read_timeline(str(out))]
    assert len(keys) == len(set(keys))

  kill_then_rerun(watch_cmd(testbed_run["workdir"], testbed_probe["probe"], out), 3, 20,
                  check_partial=timeline_whole)
  questions = {t: list(tasks.get(t).questions(LIMIT)) for t in TASKS}
  ref = watch.Watcher(testbed_run["workdir"], {"probe": load_probe(testbed_probe["probe"])}, questions,
                      str(tmp_path / "ref"), mesh=sharding.make_mesh("data=-1"),
                      prompt_format_hashes={t: tasks.get(t).format_hash() for t in TASKS})
  ref.sweep()
  got = sorted(watch.read_timeline(str(out)), key=lambda r: (r["checkpoint_step"], r["task"]))
  want = sorted(watch.read_timeline(str(tmp_path / "ref")), key=lambda r: (r["checkpoint_step"], r["task"]))
  assert [(r["checkpoint"], r["task"], r["probe"]) for r in got] == [(r["checkpoint"], r["task"], r["probe"])
                                                                      for r in want]
  for a, b in zip(got, want):
    for f in ("predicted", "predicted_low", "predicted_high"):
      assert a[f] == pytest.approx(b[f], abs=1e-6)


LABEL_SETTINGS = {"data.tasks": ",".join(TASKS), "data.limit": 4, "num_samples": 2, "batch_size": 2,
                  "max_new_tokens": 12}


def label_cmd(checkpoint, out):
  return [sys.executable, "-m", "launch.label", "--config=configs/experiments/label.py",
          f"--config.data.checkpoint={checkpoint}", f"--config.out={out}",
          *[f"--config.{k}={v}" for k, v in LABEL_SETTINGS.items()]]


def test_label(tmp_path, testbed_run):
  from configs.experiments import label
  from probing import labels
  _, path = testbed_run["checkpoints"][-1]
  c = label.get_config()
  c.data.checkpoint, c.out = path, str(tmp_path / "ref")
  for k, v in LABEL_SETTINGS.items():
    section, _, field = k.rpartition(".")
    (c[section] if section else c)[field] = v
  labels.run(c, log=lambda _: None)
  out = tmp_path / "labels"

  def whole_lines_only():
    for f in (out.glob("*.jsonl") if out.exists() else ()):
      lines = f.read_text().split("\n")
      for line in lines[:-1]:  # every finished line is a whole record; a torn tail is cut on read
        json.loads(line)

  kill_then_rerun(label_cmd(path, out), 2, 25, check_partial=whole_lines_only)
  key = lambda r: (r["checkpoint"], r["task"], r["question_id"])
  got = {key(r): r for r in labels.read_labels(str(out))}
  want = {key(r): r for r in labels.read_labels(str(tmp_path / "ref"))}
  assert sorted(got) == sorted(want) and len(want) == 4 * len(TASKS)
  for k, r in want.items():
    assert (got[k]["c"], got[k]["k"], got[k]["greedy"]) == (r["c"], r["k"], r["greedy"])


def test_demo(tmp_path, smoke_run):
  """The smoke demo killed anywhere and rerun gives the uninterrupted smoke demo's labels and
  predictions (the session's smoke-demo fixture is the reference)."""
  from run_fixtures import demo_smoke_cmd
  ref, _ = smoke_run
  workdir = tmp_path / "demo"

  def finished_files_whole():
    for name in ("summary.json",):
      if (workdir / name).exists():
        json.loads((workdir / name).read_text())
    for name in ("labels.jsonl", "predictions.jsonl"):
      if (workdir / name).exists():
        _jsonl(workdir / name)

  kill_then_rerun(demo_smoke_cmd(workdir), 5, 90, timeout=1800, check_partial=finished_files_whole)
  label_key = lambda r: (r["checkpoint"], r["task"], r["question_id"])
  got = sorted(_jsonl(workdir / "labels.jsonl"), key=label_key)
  want = sorted(_jsonl(os.path.join(ref, "labels.jsonl")), key=label_key)
  assert [label_key(r) for r in got] == [label_key(r) for r in want]
  assert [(r["c"], r["k"], r.get("greedy")) for r in got] == [(r["c"], r["k"], r.get("greedy")) for r in want]
  pred_key = lambda r: (r["checkpoint"], r["task"], r["question_id"], r["probe"], r["split"])
  got = sorted(_jsonl(workdir / "predictions.jsonl"), key=pred_key)
  want = sorted(_jsonl(os.path.join(ref, "predictions.jsonl")), key=pred_key)
  assert [pred_key(r) for r in got] == [pred_key(r) for r in want]
  assert [r["p"] for r in got] == pytest.approx([r["p"] for r in want], abs=1e-6)
