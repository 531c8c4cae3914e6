"""The watcher (launch.watch / probing.watch): what counts as a complete checkpoint, and a real
run followed live: a background `launch.pretrain` writing checkpoints, planted half-written and
unreadable ones, the watcher killed with SIGKILL and restarted, and a `--once` sweep afterwards
that gives the same timeline."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from run_fixtures import LIMIT, TASKS

from probing import watch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", TOKENIZERS_PARALLELISM="false")


# One function per launcher, so a change of its flags is made in one place.
def pretrain_cmd(workdir, steps, num):
  return [sys.executable, "-m", "launch.pretrain", "--config=configs/experiments/testbed.py:smoke",
          f"--workdir={workdir}", f"--config.train.steps={steps}", f"--config.checkpoint.num={num}"]


def watch_cmd(run_dir, probes, out, *extra):
  return [sys.executable, "-m", "launch.watch", f"--run_dir={run_dir}", f"--probes={','.join(probes)}",
          f"--out={out}", f"--tasks={','.join(TASKS)}", f"--limit={LIMIT}", *extra]


def timeline_steps(out):
  return [r["checkpoint_step"] for r in watch.read_timeline(str(out))]


def wait_for(cond, timeout, what, procs=()):
  t0 = time.time()
  while not cond():
    for p in procs:
      assert p.poll() is None, f"{what}: a process ended early ({p.args[2]}): {p.stderr.read()[-3000:]}"
    assert time.time() - t0 < timeout, f"timed out waiting for {what}"
    time.sleep(0.2)


def _safetensors(path, arrays):
  from safetensors.numpy import save_file
  save_file(arrays, path)


def test_complete_means_committed_and_fully_sized(tmp_path, testbed_run):
  ck = tmp_path / "checkpoints"
  ck.mkdir()
  ours = testbed_run["checkpoints"][0][1]
  shutil.copytree(ours, ck / "step_000003")
  shutil.copytree(ours, ck / ".tmp-step_000006-ab12")  # models.checkpoint's staged name
  shutil.copytree(ours, ck / "step_000009.orbax-checkpoint-tmp-1733")  # orbax's temporary name
  shutil.copytree(ours, ck / "step_000012", ignore=shutil.ignore_patterns("metadata.json"))  # not committed
  hf = ck / "stage1-step100"  # HF: two shards, one cut short
  hf.mkdir()
  (hf / "config.json").write_text("{}")
  _safetensors(str(hf / "a.safetensors"), {"x": np.ones((4, 4), np.float32)})
  _safetensors(str(hf / "b.safetensors"), {"y": np.ones((64, 64), np.float32)})
  (hf / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "a.safetensors",
                                                                               "y": "b.safetensors"}}))
  whole = (hf / "b.safetensors").read_bytes()
  (hf / "b.safetensors").write_bytes(whole[:-100])
  manager = ck / "7"  # a CheckpointManager step dir whose one item is our checkpoint
  manager.mkdir()
  shutil.copytree(ours, manager / "model")
  meta = json.loads((manager / "model" / "metadata.json").read_text())
  del meta["checkpoint"], meta["checkpoint_step"]  # no step of its own: the step dir's name gives it
  (manager / "model" / "metadata.json").write_text(json.dumps(meta))
  found = {c.name: c for c in watch.scan(str(tmp_path))}  # the run's work dir: its checkpoints/ is read
  assert sorted(found) == ["7", "stage1-step100", "step_000003", "step_000012"]
  assert found["step_000003"].complete and found["7"].complete and found["7"].path.endswith("model")
  assert not found["step_000012"].complete and "metadata.json" in found["step_000012"].why
  assert not found["stage1-step100"].complete and "b.safetensors has" in found["stage1-step100"].why
  assert watch.identify(found["7"]) == ("7", 7) and watch.identify(found["step_000003"]) == ("step_000003", 3)
  (hf / "b.safetensors").write_bytes(whole)
  assert watch.inspect_dir(str(hf)).complete
  os.remove(hf / "a.safetensors")
  assert watch.inspect_dir(str(hf)).why == "a.safetensors is missing"


def test_scan_reads_an_object_store(tmp_path, testbed_run, monkeypatch):
  """A run that writes its checkpoints to `gs://` is scanned through etils.epath alone."""
  from object_store import fake_bucket
  ck = tmp_path / "bucket" / "run" / "checkpoints"
  ours = testbed_run["checkpoints"][0][1]
  shutil.copytree(ours, ck / "step_000003")
  shutil.copytree(ours, ck / "step_000006", ignore=shutil.ignore_patterns("metadata.json"))  # not committed
  (ck / "stage1-step100").mkdir()
  (ck / "stage1-step100" / "config.json").write_text("{}")
  _safetensors(str(ck / "stage1-step100" / "model.safetensors"), {"x": np.ones((4, 4), np.float32)})
  with fake_bucket(tmp_path / "bucket", monkeypatch):
    found = {c.name: c for c in watch.scan("gs://run")}
    assert sorted(found) == ["stage1-step100", "step_000003", "step_000006"]
    assert found["step_000003"].complete and found["step_000003"].path == "gs://run/checkpoints/step_000003"
    assert not found["step_000006"].complete and found["stage1-step100"].complete
    assert watch.identify(found["step_000003"]) == ("step_000003", 3)


def test_watcher_follows_a_live_run(tmp_path, testbed_run, testbed_probe):
  """Started before the run writes anything; killed (SIGKILL) after its first checkpoint at a
  random delay and restarted; a checkpoint that completes late is probed with its own step; an
  unreadable one is reported and skipped; the result equals a later `--once` sweep."""
  run, out = tmp_path / "run", tmp_path / "watch"
  (run / "checkpoints").mkdir(parents=True)
  donor = testbed_run["checkpoints"][-1][1]
  shutil.copytree(donor, run / "checkpoints" / "step_000008", ignore=shutil.ignore_patterns("metadata.json"))
  shutil.copytree(donor, run / "checkpoints" / "step_000002.orbax-checkpoint-tmp-5")
  (run / "checkpoints" / "step_000011").mkdir()
  (run / "checkpoints" / "step_000011" / "metadata.json").write_text("{not json")
  probes = [os.path.dirname(testbed_probe["probe"])]  # a train_probes out dir: its probe/ is used
  start = lambda: subprocess.Popen(watch_cmd(run, probes, out, "--poll_seconds=0.3"), cwd=ROOT, env=ENV,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  first = start()
  trainer = subprocess.Popen(pretrain_cmd(run, 24, 4), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  try:
    wait_for(lambda: len(timeline_steps(out)) >= 1, 300, "the first probed checkpoint", [first])
    delay = random.uniform(0.0, 1.5)
    print(f"watcher SIGKILL delay after its first checkpoint: {delay:.3f}s")
    time.sleep(delay)
    first.send_signal(signal.SIGKILL)
    _, err_first = first.communicate(timeout=60)
    second = start()
    assert trainer.wait(timeout=300) == 0, trainer.stderr.read()[-3000:]
    meta = json.loads(open(os.path.join(donor, "metadata.json")).read())
    meta.update(checkpoint="step_000008", checkpoint_step=8)
    (run / "checkpoints" / "step_000008" / "metadata.json").write_text(json.dumps(meta))  # now complete
    want = {6, 8, 12, 18, 24}
    wait_for(lambda: set(timeline_steps(out)) == want, 300, "every checkpoint in the timeline", [second])
  finally:
    for p in (first, trainer):
      if p.poll() is None:
        p.kill()
  second.kill()
  _, err_second = second.communicate(timeout=60)
  records = watch.read_timeline(str(out))
  keys = [(r["checkpoint"], r["task"], r["probe"]) for r in records]
  assert len(keys) == len(set(keys)) == 5 * len(TASKS), "a checkpoint probed twice or partly"
  assert {r["probe"] for r in records} == {"probe_out"}  # the probe dir's base name
  assert "skipped checkpoint step_000011" in err_first + err_second
  late = [r for r in records if r["checkpoint"] == "step_000008"]
  assert late and all(r["checkpoint_step"] == 8 for r in late)
  assert records.index(late[0]) > 0  # probed after a later checkpoint, with its own step
  assert os.path.getsize(out / "timeline.png") > 1000
  once = subprocess.run(watch_cmd(run, probes, tmp_path / "once", "--once"), cwd=ROOT, env=ENV,
                        capture_output=True, text=True, timeout=300)
  assert once.returncode == 0, once.stderr[-3000:]
  assert "skipped checkpoint step_000011" in once.stderr
  swept = {(r["checkpoint"], r["task"], r["probe"]): r for r in watch.read_timeline(str(tmp_path / "once"))}
  assert set(swept) == set(keys)
  for r in records:
    s = swept[(r["checkpoint"], r["task"], r["probe"])]
    assert s["checkpoint_step"] == r["checkpoint_step"]
    for f in ("predicted", "predicted_low", "predicted_high"):
      assert s[f] == pytest.approx(r[f], abs=1e-6)
