"""probing.interop.write_lm_eval: predicted pass@1 as an lm-eval run (results and samples files),
checked field by field and read back with lm-eval's own helpers where it is installed."""
import dataclasses
import json
import os
import re

import numpy as np
import pytest

from probe_fixtures import synthetic

from probing.interop import write_lm_eval
from probing.probes import build_data
from probing.tasks import Question


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  sets, _ = synthetic(n_questions=10, steps=(100, 200))
  sets = [dataclasses.replace(s, meta=dict(s.meta, checkpoint=s.meta["checkpoint"].replace("ck", "stage1/step")))
          for s in sets]
  data = build_data(sets, layers=(1,))
  p = np.random.default_rng(0).uniform(size=len(data)).astype(np.float32)
  questions = {t: [Question(f"{t}-{i}", f"prompt {t} {i}", f"ref {i}") for i in (3, 1, 4, 0)] for t in ("ta", "tb")}
  out = tmp_path_factory.mktemp("lm_eval")
  files = write_lm_eval(str(out), data, p, questions, checkpoint="stage1/step200", checkpoint_step=200,
                        probe="runs/probes/linear/probe", card={"family": "linear", "layers": [1], "pooling": "mean"},
                        formats={"ta": "fa", "tb": "fb"}, total_questions={"ta": 10, "tb": 10}, now=1.7e9)
  want = {t: [float(p[(data.checkpoint == "stage1/step200") & (data.question_id == q.id)][0]) for q in qs]
          for t, qs in questions.items()}
  return files, want


def test_results_and_samples_follow_lm_eval_schema(written):
  files, want = written
  assert os.path.basename(files["dir"]) == "stage1__step200"  # lm-eval's sanitized model name
  with open(files["results"]) as f:
    res = json.load(f)
  assert os.path.basename(files["results"]) == f"results_{files['results'].split('results_')[1]}"
  for t in ("ta", "tb"):
    r = res["results"][t]
    assert r["alias"] == t and r["sample_len"] == 4
    assert r["acc,probe"] == pytest.approx(np.mean(want[t]))
    assert r["acc_stderr,probe"] == pytest.approx(np.std(want[t], ddof=1) / 2)
    assert res["n-samples"][t] == {"original": 10, "effective": 4} and res["higher_is_better"][t] == {"acc": True}
  assert res["versions"] == {"ta": "fa", "tb": "fb"} and res["date"] == 1.7e9
  assert res["config"]["model"] == "olmo-probe" and res["config"]["probe_family"] == "linear"
  assert res["model_name"] == "stage1/step200" and res["checkpoint_step"] == 200
  with open(files["samples"]["ta"]) as f:
    rows = [json.loads(line) for line in f]
  assert [r["doc"]["question_id"] for r in rows] == ["ta-3", "ta-1", "ta-4", "ta-0"]
  assert [r["doc_id"] for r in rows] == [0, 1, 2, 3]
  for r, p in zip(rows, want["ta"]):
    assert r["filter"] == "probe" and r["metrics"] == ["acc"] and r["acc"] == pytest.approx(p)
    assert r["filtered_resps"] == [r["acc"]] and len(r["prompt_hash"]) == len(r["doc_hash"]) == 64
  date = files["results"].split("results_")[1][:-len(".json")]
  assert "_" not in date and os.path.basename(files["samples"]["tb"]) == f"samples_tb_{date}.jsonl"


def test_lm_eval_reads_them_back(written):
  utils = pytest.importorskip("lm_eval.utils")
  files, _ = written
  paths = [files["results"], *files["samples"].values()]
  assert utils.get_results_filenames(paths) == [files["results"]]
  samples = utils.get_sample_results_filenames(paths)
  assert sorted(utils.get_file_task_name(os.path.basename(s)) for s in samples) == ["ta", "tb"]
  assert {utils.get_file_datetime(os.path.basename(s)) for s in samples} == {
      utils.get_file_datetime(os.path.basename(files["results"])).removesuffix(".json")}
  with open(files["results"]) as f:
    table = utils.make_table(json.load(f))
  assert re.search(r"\|ta\s*\|fa\s*\|probe\s*\|\s*\|acc\s*\|", table), table


def test_missing_predictions_are_named(tmp_path):
  sets, _ = synthetic(n_questions=4, steps=(100,))
  data = build_data(sets, layers=(1,))
  with pytest.raises(ValueError, match=r"no prediction for 1 ta question\(s\) at ck100, e.g. \['ta-9'\]"):
    write_lm_eval(str(tmp_path), data, np.zeros(len(data)), {"ta": [Question("ta-9", "x", "y")]}, checkpoint="ck100")
