"""Multi-process runs for real: 2 JAX processes x 4 CPU devices on localhost against 1 process x 8
devices (this pytest process), for convert -> label -> extract -> train_probes -> predict and the
in-loop monitor. Label records, counts and ids must be identical, floats within 1e-5; a store
written by one process count must serve the other; only process 0 writes shared files."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import multihost_monitor
from configs.experiments import label as label_configs
from configs.probes import linear
from models import checkpoint, convert, olmo3
from probing import features, jobs, tasks
from probing import labels as labels_lib
from probing.testbed import ALPHABET
from probing.tokenizer import CharTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_STEPS = (10, 20, 30)
NEW = "step_000040"  # the checkpoint converted, labelled, extracted and predicted by both runs
TASKS = "syn_add,syn_sub"
LIMIT = 20
TOL = 1e-5


# One small function per launcher: its command line (the in-process reference uses the same values).

def label_values(ckpt, out):
  return {"data.checkpoint": ckpt, "data.tasks": TASKS, "out": out, "data.limit": LIMIT, "num_samples": 4,
          "max_new_tokens": 6, "data.tokenizer": "char", "data.mesh": "data=-1", "kv_cache_gib": 0.05}


def label_command(ckpt, out):
  return ["-m", "launch.label", "--config=configs/experiments/label.py"] + [
      f"--config.{k}={v}" for k, v in label_values(ckpt, out).items()]


def probe_values(work, **extra):
  return {"data.features": f"{work}/features", "data.labels": f"{work}/labels", "data.tasks": TASKS,
          "data.limit": LIMIT, "data.tokenizer": "char", "train.epochs": 5} | extra


def probe_command(launcher, work, **extra):
  return ["-m", f"launch.{launcher}", "--config=configs/probes/linear.py:testbed"] + [
      f"--config.{k}={v}" for k, v in probe_values(work, **extra).items()]


def convert_command(hf_dir, out):
  return ["-m", "launch.convert", f"--hf_dir={hf_dir}", f"--out_dir={out}", "--dtype=float32"]


def extract_command(work, tasks=TASKS):
  return probe_command("extract", work, **{"data.checkpoint": f"{work}/ckpts/{NEW}", "data.tasks": tasks})


def train_command(work):
  return probe_command("train_probes", work, out=f"{work}/trained")


def predict_command(work):
  return probe_command("predict", work, probe=f"{work}/trained/probe", out=f"{work}/predict",
                       **{"data.checkpoint": f"{work}/ckpts/{NEW}"})


def monitor_command(work):
  return ["tests/multihost_monitor.py", f"--checkpoint={work}/ckpts/{NEW}", f"--probe={work}/trained/probe",
          f"--tasks={TASKS}", f"--limit={LIMIT}", f"--out={work}/monitor.jsonl"]


def _config(values, base):
  for key, value in values.items():
    node = base
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return base


def start_two(args, *, wait_alone_s: float = 0.0):
  """`python <args>` as processes 0 and 1 of one job (4 CPU devices each), started. With
  `wait_alone_s`, process 0 runs alone that long first and must still be waiting for its peer."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
  procs = []
  for i in range(2):
    procs.append(subprocess.Popen(
        [sys.executable] + [str(a) for a in args] + [
            f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}",
            f"--compilation_cache_dir={ROOT_CACHE}"],
        cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    if i == 0 and wait_alone_s:
      time.sleep(wait_alone_s)
      assert procs[0].poll() is None, procs[0].communicate()[1][-3000:]
  return procs


def finish(procs, timeout=300):
  """Both processes' (stdout, stderr); each must exit 0."""
  outs = [p.communicate(timeout=timeout) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-4000:]
  return outs


def cache_files():
  return sum(len(files) for _, _, files in os.walk(ROOT_CACHE))


ROOT_CACHE = ""  # set by the fixture: one compilation cache for the module's runs


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  """A tiny HF checkpoint to convert; features and labels of three earlier checkpoints (train data)."""
  global ROOT_CACHE
  root = tmp_path_factory.mktemp("multihost")
  ROOT_CACHE = str(root / "jax_cache")
  tok = CharTokenizer(ALPHABET)
  cfg = olmo3.tiny(vocab_size=tok.vocab_size, pad_token_id=tok.pad_id, eos_token_id=tok.eos_id,
                   vocab_pad_multiple=8)
  convert.save_hf(olmo3.init_model(cfg, seed=9), root / "hf" / NEW)
  rng = np.random.default_rng(0)
  os.makedirs(root / "base" / "labels")
  for i, step in enumerate(TRAIN_STEPS):
    name = f"step_{step:06d}"
    checkpoint.save(str(root / "ckpts" / name), olmo3.init_model(cfg, seed=i), {
        "tokenizer": {"kind": "char", "alphabet": ALPHABET}, "checkpoint": name, "checkpoint_step": step})
    jobs.extract(_config(probe_values(root / "base", **{"data.checkpoint": str(root / "ckpts" / name)}),
                         linear.get_config("testbed")))
    with open(root / "base" / "labels" / f"{name}.jsonl", "w") as f:
      for t in TASKS.split(","):
        for q in tasks.get(t).questions(LIMIT):
          f.write(json.dumps({"checkpoint": name, "checkpoint_step": step, "task": t, "question_id": q.id,
                              "k": 4, "c": int(rng.integers(0, 5))}) + "\n")
  return root


def _work(root, name):
  work = root / name
  shutil.copytree(root / "base", work)
  return work


def _labels(path):
  with open(path) as f:
    return sorted((json.loads(line) for line in f), key=lambda r: (r["task"], r["question_id"]))


def _close(a, b, where):
  """Equal structure; floats within TOL; everything else identical."""
  if isinstance(a, dict):
    assert sorted(a) == sorted(b), where
    for k in a:
      _close(a[k], b[k], f"{where}.{k}")
  elif isinstance(a, (list, tuple)):
    assert len(a) == len(b), where
    for i, (x, y) in enumerate(zip(a, b)):
      _close(x, y, f"{where}[{i}]")
  elif isinstance(a, float) or isinstance(b, float):
    assert a == pytest.approx(b, abs=TOL), where
  else:
    assert a == b, where


def test_two_processes_match_one(shared):
  """Each stage starts its 2-process command, computes the 1-process reference meanwhile, then compares."""
  one, two = _work(shared, "one"), _work(shared, "two")
  probe_config = lambda work, **extra: _config(probe_values(work, **extra), linear.get_config("testbed"))  # noqa: E731
  at_new = lambda work: {"data.checkpoint": str(work / "ckpts" / NEW)}  # noqa: E731

  # convert: the same checkpoint from 2 processes as from 1, staged and renamed once
  procs = start_two(convert_command(shared / "hf" / NEW, two / "ckpts" / NEW))
  checkpoint.save(str(one / "ckpts" / NEW), convert.load_hf(shared / "hf" / NEW), {"source": "hf"})
  finish(procs)
  assert sorted(os.listdir(two / "ckpts")) == [NEW]
  pa, pb = _params(checkpoint.load(one / "ckpts" / NEW)), _params(checkpoint.load(two / "ckpts" / NEW))
  assert len(pa) == len(pb) > 0
  for x, y in zip(pa, pb):
    np.testing.assert_array_equal(x, y)

  # label: identical records, each written once
  procs = start_two(label_command(two / "ckpts" / NEW, two / "labels"))
  labels_lib.run(_config(label_values(str(one / "ckpts" / NEW), str(one / "labels")), label_configs.get_config()),
                 log=lambda msg: None)
  jobs.extract(probe_config(one, **at_new(one), **{"data.tasks": TASKS + ",syn_mul"}))
  finish(procs)
  got, want = _labels(two / "labels" / f"{NEW}.jsonl"), _labels(one / "labels" / f"{NEW}.jsonl")
  assert len(got) == len(want) == 2 * LIMIT and [r["question_id"] for r in got] == [r["question_id"] for r in want]
  drop = lambda r: {k: v for k, v in r.items() if k != "timings"}  # noqa: E731
  assert [drop(r) for r in got] == [drop(r) for r in want]

  # extract: syn_add's store comes from the 1-process run (2 processes must serve it, not redo it);
  # syn_mul's rows are shards a 1-process run left (2 processes continue it: nothing left to run);
  # syn_sub's is extracted by 2 processes, and then serves 1 process as is
  shutil.copytree(one / "features" / NEW / "syn_add", two / "features" / NEW / "syn_add")
  before = os.path.getmtime(two / "features" / NEW / "syn_add" / features.SIDECAR)
  left = two / "features" / NEW / "syn_mul" / "shards"
  os.makedirs(left)
  started = _json(one / "features" / NEW / "syn_mul" / features.SIDECAR)
  _write_json(left / "spec.json", {"fingerprint": started["fingerprint"]})
  shutil.copyfile(one / "features" / NEW / "syn_mul" / "features.npz", left / "n00001-b000000.npz")
  procs = start_two(extract_command(two, TASKS + ",syn_mul"))
  jobs.train(probe_config(one, out=str(one / "trained")))
  (_, err0), _ = finish(procs)
  assert "extract syn_sub" in err0 and not any(f"extract {t}" in err0 for t in ("syn_add", "syn_mul")), err0[-3000:]
  assert os.path.getmtime(two / "features" / NEW / "syn_add" / features.SIDECAR) == before
  assert not left.exists()
  for task in TASKS.split(",") + ["syn_mul"]:
    x = features.load_features(one / "features" / NEW / task)
    y = features.load_features(two / "features" / NEW / task)
    assert x.meta["fingerprint"] == y.meta["fingerprint"] and x.question_ids == y.question_ids
    assert sorted(x.arrays) == sorted(y.arrays)
    for k in x.arrays:
      np.testing.assert_allclose(y.arrays[k], x.arrays[k], atol=TOL, err_msg=f"{task}/{k}")
  assert sorted(os.listdir(two / "features" / NEW / "syn_sub")) == ["features.json", "features.npz"]
  calls = []
  again = jobs.extract(probe_config(two, **at_new(two)), on_progress=lambda *a: calls.append(a))
  assert not calls and [len(fs) for fs in again] == [LIMIT, LIMIT]  # 2 processes' store serves 1

  # train_probes: the same probe, metrics and rows
  procs = start_two(train_command(two))
  jobs.predict(probe_config(one, probe=str(one / "trained" / "probe"), out=str(one / "predict"), **at_new(one)))
  monitored = multihost_monitor.train_with_monitor(str(one / "ckpts" / NEW), str(one / "trained" / "probe"), TASKS,
                                                   LIMIT, None)
  finish(procs)
  _close(_json(two / "trained" / "metrics.json")["probe"], _json(one / "trained" / "metrics.json")["probe"],
         "metrics")
  _close(_jsonl(two / "trained" / "predictions.jsonl"), _jsonl(one / "trained" / "predictions.jsonl"), "train rows")

  # predict: every question predicted and written once; process 0 waits for its peer first
  finish(start_two(predict_command(two), wait_alone_s=3.0))
  got, want = _jsonl(two / "predict" / "predictions.jsonl"), _jsonl(one / "predict" / "predictions.jsonl")
  assert len(got) == 2 * LIMIT
  _close(got, want, "predictions")
  s2, s1 = _json(two / "predict" / "summary.json"), _json(one / "predict" / "summary.json")
  assert s2["n_questions"] == s1["n_questions"] == {"syn_add": LIMIT, "syn_sub": LIMIT}
  _close(s2["task_accuracy"], s1["task_accuracy"], "task_accuracy")
  _close(s2["metrics"], s1["metrics"], "metrics")

  # the in-loop monitor: the same predictions at every step, recorded once
  finish(start_two(monitor_command(two)))
  got = _jsonl(two / "monitor.jsonl")
  assert [(r["step"], r["task"]) for r in got] == [(r["step"], r["task"]) for r in monitored]
  for g, w in zip(got, monitored):
    assert g["predicted"] == pytest.approx(w["predicted"], abs=TOL) and g["n_questions"] == w["n_questions"] == LIMIT

  # the compilation cache: the same predict command again compiles nothing new
  cached = cache_files()
  finish(start_two(predict_command(two)))
  assert cached > 0 and cache_files() == cached


def _params(model):
  import jax
  from flax import nnx
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def _write_json(path, obj):
  with open(path, "w") as f:
    json.dump(obj, f)


def _json(path):
  with open(path) as f:
    return json.load(f)


def _jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]
