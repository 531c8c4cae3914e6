"""Session fixtures: one tiny testbed run (the real pretraining loop) and a probe trained on it.

Shared by the watcher, monitor and resume-after-kill tests, so the run and the probe are paid for
once per session: a 12-step smoke pretrain (checkpoints at steps 3, 6, 9, 12), features of two
skills' questions at its four checkpoints, label records (random, seeded: the tests check
plumbing, not probe quality) and a linear probe trained on them with the testbed preset.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ("syn_sum", "syn_rev")
LIMIT = 16


def smoke_pretrain_config(steps: int = 12, num: int = 4):
  from configs.experiments import testbed
  c = testbed.get_config("smoke")
  c.train.steps, c.checkpoint.num = steps, num
  return c


@pytest.fixture(scope="session")
def testbed_run(tmp_path_factory):
  """{'workdir', 'checkpoints': [(step, path)]} of a 12-step smoke pretrain."""
  from probing.testbed import pretrain
  workdir = str(tmp_path_factory.mktemp("testbed_run"))
  pretrain.train(smoke_pretrain_config(), workdir)
  return {"workdir": workdir, "checkpoints": pretrain.list_checkpoints(workdir)}


def probe_config(root, **data):
  from configs.probes import linear
  c = linear.get_config("testbed")
  c.data.update(dict(features=str(root / "features"), labels=str(root / "labels"), tasks=",".join(TASKS),
                     limit=LIMIT) | data)
  c.train.epochs = 5
  c.eval.baselines = False
  c.head.layers = c.extract.layers = (0, 1, 2)  # the smoke model has 2 blocks
  c.extract.token_layer = 1
  c.out = str(root / "probe_out")
  return c


@pytest.fixture(scope="session")
def testbed_probe(testbed_run, tmp_path_factory):
  """{'root', 'probe' (dir), 'labels' (dir), 'features' (dir)}: a linear probe trained on the
  run's first three checkpoints."""
  from probing import jobs, tasks
  root = tmp_path_factory.mktemp("testbed_probe")
  rng = np.random.default_rng(0)
  os.makedirs(root / "labels")
  for step, path in testbed_run["checkpoints"]:
    name = os.path.basename(path)
    jobs.extract(probe_config(root, checkpoint=path))
    with open(root / "labels" / f"{name}.jsonl", "w") as f:
      for t in TASKS:
        for q in tasks.get(t).questions(LIMIT):
          f.write(json.dumps({"checkpoint": name, "checkpoint_step": step, "task": t, "question_id": q.id,
                              "k": 4, "c": int(rng.integers(0, 5))}) + "\n")
  jobs.train(probe_config(root))  # steps 3, 6, 9 train; 12 is the later checkpoint
  return {"root": root, "probe": str(root / "probe_out" / "probe"), "labels": str(root / "labels"),
          "features": str(root / "features")}


def demo_smoke_cmd(workdir):
  return [sys.executable, "-m", "launch.demo", "--config=configs/experiments/demo.py:smoke", f"--workdir={workdir}"]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
  """(workdir, completed process) of one uninterrupted smoke demo (`launch.demo --config=configs/experiments/demo.py:smoke`)."""
  workdir = str(tmp_path_factory.mktemp("demo") / "smoke")
  proc = subprocess.run(demo_smoke_cmd(workdir), cwd=ROOT, capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return workdir, proc
