"""The demo pipeline and its output schema, on the smoke preset (numbers are not checked)."""
import json
import os
import subprocess
import sys

import pytest

from probing.demo import evaluate as demo_eval
from probing.eval import metrics

pytestmark = pytest.mark.slow  # end to end; still part of `make test`

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("demo") / "smoke")
  proc = subprocess.run([sys.executable, "-m", "launch.demo", "--config=configs/experiments/demo.py:smoke", f"--workdir={workdir}"],
                        cwd=ROOT, capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return workdir, proc


def _jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def test_outputs_and_schema(smoke_run):
  workdir, proc = smoke_run
  for name in ("labels.jsonl", "predictions.jsonl", "summary.json", "report.md"):
    assert os.path.exists(os.path.join(workdir, name)), name
  labels = _jsonl(os.path.join(workdir, "labels.jsonl"))
  preds = _jsonl(os.path.join(workdir, "predictions.jsonl"))
  assert {"checkpoint_step", "task", "question_id", "k", "c"} <= set(labels[0])
  assert {"checkpoint_step", "task", "question_id", "probe", "p", "split"} <= set(preds[0])
  assert {p["split"] for p in preds} <= {"train", "val", "test"}
  families = {p["probe"] for p in preds if ":" not in p["probe"]}
  assert {p["probe"].split(":")[0] for p in preds if ":" in p["probe"]} == {"baseline", "reference"}
  assert families == {"linear", "mlp", "attention", "submodel", "hybrid"}
  with open(os.path.join(workdir, "summary.json")) as f:
    s = json.load(f)
  for key in ("auroc_same_checkpoint", "auroc_later_checkpoints", "task_accuracy_abs_error", "latency_seconds",
              "latency_seconds_real_task", "baselines", "references", "settings", "bars", "stage_seconds",
              "headline", "paired_differences", "testbed_checks", "selection"):
    assert key in s, key
  assert set(s["auroc_same_checkpoint"]) == families
  for block in ("latency_seconds", "latency_seconds_real_task"):
    assert {"generative_eval", "probe", "ratio"} <= set(s[block])
  assert {"task_prior", "task_difficulty_prior", "metadata_lr", "surface_lr", "gold_nll_sum",
          "gold_nll_mean"} <= set(s["baselines"])
  assert set(s["references"]) == {"sklearn_logreg"}
  assert s["settings"]["activation_only_families"] == ["linear", "mlp", "attention", "submodel"]
  for block in list(s["auroc_later_checkpoints"].values()) + [b["auroc_later_checkpoints"] for b in s["baselines"].values()]:
    assert {"mean", "ci_low", "ci_high", "cells", "per_task"} <= set(block)
    if block["mean"] is not None and block["ci_low"] is not None:
      assert block["ci_low"] <= block["mean"] + 0.05 and block["mean"] - 0.05 <= block["ci_high"]
  assert s["headline"]["family"] in s["settings"]["activation_only_families"]
  assert set(s["selection"]["scores"]) == set(s["settings"]["activation_only_families"])
  for name, check in s["testbed_checks"].items():
    if isinstance(check, dict) and "met" in check:
      assert {"value", "bar", "met"} <= set(check), name
  steps = sorted({r["checkpoint_step"] for r in labels})
  assert len(steps) >= 8 and s["settings"]["train_checkpoints"] == steps[:len(s["settings"]["train_checkpoints"])]
  assert len(s["settings"]["train_checkpoints"]) >= 3
  assert "bars missed" in proc.stdout  # the headline table is printed
  with open(os.path.join(workdir, "report.md")) as f:
    text = f.read()
  for fig in ("accuracy_curves.png", "cross_checkpoint.png", "reliability.png", "latency.png"):
    assert fig in text and os.path.getsize(os.path.join(workdir, "figures", fig)) > 1000


def test_summary_recomputes_from_the_jsonl_files(smoke_run):
  workdir, _ = smoke_run
  labels = _jsonl(os.path.join(workdir, "labels.jsonl"))
  preds = _jsonl(os.path.join(workdir, "predictions.jsonl"))
  with open(os.path.join(workdir, "summary.json")) as f:
    s = json.load(f)
  again = demo_eval.summary_from_records(preds, labels, activation_only=s["settings"]["activation_only_families"],
                                         selection=s["selection"]["scores"])
  for key in ("auroc_same_checkpoint", "auroc_later_checkpoints"):
    for fam, block in s[key].items():
      assert again[key][fam]["mean"] == block["mean"]
      assert again[key][fam]["ci_low"] == pytest.approx(block["ci_low"])
  assert json.loads(json.dumps(again["headline"])) == s["headline"]  # paired CIs included
  # and independently of our own join: one family's later-checkpoint AUROC from scratch
  index = {(r["checkpoint_step"], r["task"], r["question_id"]): r for r in labels}
  recs = [dict(p, c=index[(p["checkpoint_step"], p["task"], p["question_id"])]["c"],
               k=index[(p["checkpoint_step"], p["task"], p["question_id"])]["k"])
          for p in preds if p["probe"] == "linear" and p["split"] == "test" and p["checkpoint_role"] == "later"]
  assert metrics.primary_auroc(recs)["mean"] == s["auroc_later_checkpoints"]["linear"]["mean"]


def test_test_questions_never_train(smoke_run):
  workdir, _ = smoke_run
  with open(os.path.join(workdir, "summary.json")) as f:
    train_upto = max(json.load(f)["settings"]["train_checkpoints"])
  with open(os.path.join(workdir, "probes", "linear", "probe_card.json")) as f:
    card = json.load(f)
  preds = _jsonl(os.path.join(workdir, "predictions.jsonl"))
  test_q = {(p["task"], p["question_id"]) for p in preds if p["split"] == "test"}
  trained = {(t, q) for t, qs in card["trained_on"]["train_questions"].items() for q in qs}
  trained |= {(t, q) for t, qs in card["trained_on"]["val_questions"].items() for q in qs}
  assert trained and not (trained & test_q)
  assert max(card["trained_on"]["checkpoints"].values()) <= train_upto
