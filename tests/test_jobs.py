"""probing.jobs and the probe launch scripts: extract -> train -> predict on tiny checkpoints,
and bad input that fails early in one line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs.probes import linear
from models import checkpoint, olmo3
from probing import jobs, tasks
from probing.testbed import ALPHABET
from probing.tokenizer import CharTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = (10, 20, 30, 40)
TASKS = "syn_add,syn_sub"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """Four tiny orbax checkpoints of a character model, label files for two skills."""
  root = tmp_path_factory.mktemp("jobs")
  tok = CharTokenizer(ALPHABET)
  cfg = olmo3.tiny(vocab_size=tok.vocab_size, pad_token_id=tok.pad_id, eos_token_id=tok.eos_id, vocab_pad_multiple=8)
  rng = np.random.default_rng(0)
  os.makedirs(root / "labels")
  for i, step in enumerate(STEPS):
    name = f"step_{step:06d}"
    checkpoint.save(str(root / "ckpts" / name), olmo3.init_model(cfg, seed=i), {
        "tokenizer": {"kind": "char", "alphabet": ALPHABET}, "checkpoint": name, "checkpoint_step": step})
    with open(root / "labels" / f"{name}.jsonl", "w") as f:
      for t in TASKS.split(","):
        for q in tasks.get(t).questions(20):
          c = int(rng.integers(0, 5))
          f.write(json.dumps({"checkpoint": name, "checkpoint_step": step, "task": t, "question_id": q.id,
                              "k": 4, "c": c}) + "\n")
  return root


def io_read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def _config(root, **data):
  c = linear.get_config("testbed")
  c.data.update(dict(features=str(root / "features"), labels=str(root / "labels"), tasks=TASKS, limit=20) | data)
  c.train.epochs = 5
  c.out = str(root / "out")
  return c


def test_extract_train_predict(run):
  for step in STEPS:
    sets = jobs.extract(_config(run, checkpoint=str(run / "ckpts" / f"step_{step:06d}")))
    assert [fs.meta["task"] for fs in sets] == TASKS.split(",") and all(len(fs) == 20 for fs in sets)
  epochs = []
  result = jobs.train(_config(run), on_epoch=lambda done, total: epochs.append((done, total)))
  assert epochs and epochs == sorted(epochs) and all(0 < d <= t for d, t in epochs)  # progress from the jitted loop
  assert result["split"].train_upto_step == 30 and os.path.exists(run / "out" / "probe" / "probe_card.json")
  c = _config(run, checkpoint=str(run / "ckpts" / "step_000040"))
  c.probe = str(run / "out" / "probe")
  c.out = str(run / "predict")
  c.lm_eval_dir = str(run / "lm_eval")
  summary = jobs.predict(c)
  assert summary["checkpoint"] == "step_000040" and summary["checkpoint_step"] == 40
  assert summary["validity_warning"] is None  # trained on steps 10..30: the card vouches up to 4 x 30
  with open(summary["lm_eval"]["results"]) as f:  # the same predictions as an lm-eval run
    lm_eval = json.load(f)["results"]
  assert lm_eval["syn_add"]["acc,probe"] == pytest.approx(summary["task_accuracy"]["step_000040/syn_add"]["predicted"])
  assert summary["n_questions"] == {"syn_add": 20, "syn_sub": 20} and "metrics" in summary
  with open(run / "predict" / "predictions.jsonl") as f:
    assert len(f.readlines()) == 40
  # Labels of a random audit (as `launch.label --config.data.audit=8` writes them): the audited estimate.
  from probing.eval import audited as audit
  from probing.labels import read_labels
  labs = [r for r in read_labels(c.data.labels) if r["checkpoint"] == "step_000040" and r["task"] == "syn_add"]
  keep = set(audit.audit_questions([r["question_id"] for r in labs], 8, seed=0, task="syn_add"))
  os.makedirs(run / "audit")
  with open(run / "audit" / "step_000040.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in labs if r["question_id"] in keep)
  c.data.audit_labels = str(run / "audit")
  batches = []
  a = jobs.predict(c, on_batch=lambda i, n: batches.append(n))["audit"]
  assert batches and set(batches) == {len(batches)}  # one progress call per batch of the prefill
  assert list(a) == ["syn_add"] and (a["syn_add"]["n"], a["syn_add"]["N"]) == (8, 20)
  assert a["syn_add"]["ppi"]["ci"][0] <= a["syn_add"]["ppi"]["estimate"] <= a["syn_add"]["ppi"]["ci"][1]
  # The offset of that audit carried into a later predict: refused at the same step (it would read
  # no earlier audit), taken from an audit of step 30 at step 40.
  c.data.previous_audit = str(run / "predict")
  with pytest.raises(ValueError, match=r"previous_audit=.*step 40\) is not before this one"):
    jobs.predict(c)
  early = _config(run, checkpoint=str(run / "ckpts" / "step_000030"), limit=20)
  early.probe, early.out = c.probe, str(run / "predict30")
  labs30 = [r for r in read_labels(c.data.labels) if r["checkpoint"] == "step_000030" and r["task"] == "syn_add"]
  keep30 = set(audit.audit_questions([r["question_id"] for r in labs30], 8, seed=0, task="syn_add"))
  with open(run / "audit" / "step_000030.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in labs30 if r["question_id"] in keep30)
  early.data.audit_labels = str(run / "audit")
  offset = jobs.predict(early)["audit"]["syn_add"]["recalibration"]
  c.data.previous_audit = str(run / "predict30" / "summary.json")
  s40 = jobs.predict(c)
  assert s40["carried"]["syn_add"]["offset"] == pytest.approx(offset) and "syn_sub" not in s40["carried"]
  assert s40["audit"]["syn_add"]["carried_offset"] == pytest.approx(offset)
  p = np.asarray([r["p"] for r in io_read_jsonl(run / "predict" / "predictions.jsonl") if r["task"] == "syn_add"])
  assert s40["carried"]["syn_add"]["predicted"] == pytest.approx(float(audit.recalibrate(p, offset).mean()))
  c.data.previous_audit = str(run / "lm_eval")  # no summary.json there
  with pytest.raises(FileNotFoundError, match="previous_audit"):
    jobs.predict(c)
  c.data.audit_labels = c.data.previous_audit = None
  c.data.tasks = "syn_mul"  # not trained on: refused before the checkpoint is read
  with pytest.raises(ValueError, match=r"not trained on task\(s\) \['syn_mul'\]"):
    jobs.predict(c)
  c.data.tasks, c.data.tokenizer = TASKS, "char:0123456789+-= "  # not the probe's tokenizer (card hash)
  with pytest.raises(ValueError, match=r"trained on features of tokenizer .*--config.data.tokenizer"):
    jobs.predict(c)
  c.data.tokenizer = None
  again = _config(run, checkpoint=str(run / "ckpts" / "step_000010"), limit=10)  # another extraction
  with pytest.raises(ValueError, match=r"--config.data.overwrite=True"):
    jobs.extract(again)
  again.data.overwrite = True
  assert [len(fs) for fs in jobs.extract(again)] == [10, 10]


def test_bad_config_fails_in_one_line(run):
  c = _config(run, checkpoint=str(run / "ckpts" / "step_000010"), tasks="syn_add,nope")
  with pytest.raises(ValueError, match=r"unknown task 'nope'.*--config.data.tasks"):
    jobs.extract(c)
  c = _config(run, checkpoint=str(run / "ckpts" / "step_000010"))
  c.extract.layers = (0, 1, 9)  # the tiny model has 2 blocks: refused before its weights are read
  with pytest.raises(ValueError, match=r"layers \[9\] do not exist.*--config.extract.layers"):
    jobs.extract(c)
  c = _config(run, checkpoint=str(run / "ckpts" / "step_000010"), tokenizer="shipped:gpt-neox-olmo-dolma-v1_5")
  with pytest.raises(ValueError, match=r"tokenizer .* has 50280 ids, the model .* only 52 embedding rows.*"
                                       r"--config.data.tokenizer"):
    jobs.extract(c)
  c = _config(run, tasks="syn_mul")  # a task without features or labels: never all-zero labels
  with pytest.raises(ValueError, match=r"task 'syn_mul' has no features"):
    jobs.train(c)
  c = _config(run)
  c.head.hiden = 3
  with pytest.raises(ValueError, match="hiden"):
    jobs.train(c)
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  for args, message in (([], "error: pass --config="),
                        (["--config=configs/probes/linear.py:testbed"], "error: set --config.probe")):
    proc = subprocess.run([sys.executable, "-m", "launch.predict"] + args, cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr[-2000:]


def test_steps_from_olmo3_revision_names():
  """OLMo3's stage counters restart: stageK-stepN names map to one monotone step."""
  from probing.checkpoints import CheckpointError, step_from_name
  assert step_from_name("stage1-step1000") == 1000
  assert step_from_name("stage2-step2000") == 1_413_814 + 2_000
  assert step_from_name("stage3-step10") == 1_413_814 + 47_684 + 10
  assert step_from_name("step_000120") == 120 and step_from_name("main") is None
  assert step_from_name("stage2-step5", stage_lengths=(100,)) == 105
  with pytest.raises(CheckpointError, match="stage 4"):
    step_from_name("stage4-step1")
  names = ["stage1-step1000", "stage1-step2000", "stage2-step0", "stage2-step2000", "stage3-step100"]
  assert sorted(names, key=step_from_name) == names


def test_demo_reads_steps_from_revision_names(tmp_path):
  """Monotone steps from the names, in step order whatever the given order; one step for two
  checkpoints, or steps against their names' order, is an error naming both."""
  from configs.experiments import olmo3_7b
  from probing.checkpoints import CheckpointError
  from probing.demo.pipeline import external_checkpoints
  dirs = [tmp_path / n for n in ("stage1-step1000", "stage2-step0", "stage2-step500")]
  for d in dirs:
    d.mkdir()
    (d / "config.json").write_text("{}")
  cfg = olmo3_7b.get_config()
  cfg.data.checkpoints = ",".join(map(str, dirs[::-1]))
  assert external_checkpoints(cfg) == [(1000, str(dirs[0])), (1_413_814, str(dirs[1])), (1_414_314, str(dirs[2]))]
  cfg.data.stage_lengths = (2000,)  # another run's stage lengths
  assert [s for s, _ in external_checkpoints(cfg)] == [1000, 2000, 2500]
  cfg.data.checkpoint_steps = "1000,1000,2000"
  with pytest.raises(CheckpointError, match="'stage2-step500' and 'stage2-step0' both have step 1000|"
                                            "'stage2-step0' and 'stage2-step500' both have step 1000"):
    external_checkpoints(cfg)
  cfg.data.checkpoint_steps = "2,3,1"  # given order: stage2-step500 gets a step before stage2-step0
  with pytest.raises(CheckpointError, match="'stage2-step500' .*'stage2-step0' .*contradict"):
    external_checkpoints(cfg)
