"""probing.interop importers on files of lm-eval's and OLMES's documented schemas, built from
real questions of our tasks: matching, repeats rescored, idempotence, and one-line errors that
write nothing."""
import json
import os
import subprocess
import sys

import pytest

from probing import tasks
from probing.interop import InteropError, import_labels, label_stem
from probing.interop.matching import inner_question
from probing.labels import read_labels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEN = {"until": ["Question:", "</s>", "<|im_end|>"], "do_sample": False, "temperature": 0.0}


def _gsm8k_docs(n=3):
  """The HF gsm8k row shape ({question, answer}), whitespace shuffled (matching normalises it)."""
  out = []
  for q in tasks.get("gsm8k").questions(n):
    text, _ = inner_question(q.prompt)
    out.append((q, {"question": "  " + text.replace(" ", "  ", 1) + "\n",
                    "answer": f"... #### {q.metadata['answer']}"}))
  return out


def _lm_row(doc_id, doc, repeats, filt, first, metric=None, gen=GEN):
  prompt = f"Question: {doc.get('question', '')}\nAnswer:"
  row = {"doc_id": doc_id, "doc": doc, "target": doc.get("answer", ""),
         "arguments": {"gen_args_0": {"arg_0": prompt, "arg_1": gen}}, "resps": [repeats],
         "filtered_resps": [first], "filter": filt, "metrics": ["exact_match"], "doc_hash": "x",
         "prompt_hash": "y", "target_hash": "z"}
  row["exact_match"] = metric if metric is not None else 0.0
  return row


def _write(path, rows, tail=""):
  with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
    f.write(tail)
  return str(path)


@pytest.fixture
def gsm8k_samples(tmp_path):
  """Two filters x three documents, three repeats each; lm-eval scored only the first."""
  (a, da), (b, db), (c, dc) = _gsm8k_docs()
  ra = [f"So {a.metadata['answer']}. #### {a.metadata['answer']}", "The answer is 17", f"#### {a.metadata['answer']}."]
  rb = ["I think 5", f"#### {b.metadata['answer']}", f"Done, {b.metadata['answer']}"]
  rc = ["#### 1", "#### 2", "no idea"]
  rows = []
  for filt in ("strict-match", "flexible-extract"):
    rows += [_lm_row(0, da, ra, filt, a.metadata["answer"], 1.0), _lm_row(1, db, rb, filt, "[invalid]"),
             _lm_row(2, dc, rc, filt, "1")]
  return _write(tmp_path / "samples_gsm8k_2026-01-02T03-04-05.678901.jsonl", rows)


def test_lm_eval_repeats_rescored_with_the_chosen_filter(gsm8k_samples, tmp_path):
  out = str(tmp_path / "labels")
  s = import_labels("lm_eval", gsm8k_samples, "gsm8k", "ck-step7", 7, out)
  assert s["status"] == "written" and s["filter"] == "strict-match" and s["records"] == 3
  recs = {r["question_id"]: r for r in read_labels(out)}
  assert [(recs[q]["k"], recs[q]["c"]) for q in ("0", "1", "2")] == [(3, 2), (3, 1), (3, 0)]
  assert recs["0"]["extracted"] == ["18", "[invalid]", "18."] and recs["0"]["greedy"] == 1  # do_sample False
  assert recs["0"]["checkpoint"] == "ck-step7" and recs["0"]["checkpoint_step"] == 7 and recs["0"]["pass1"] == 2 / 3
  assert recs["1"]["source"] == {"line": 2, "doc_id": 1, "filter": "strict-match", "format": "lm_eval",
                                 "metric": "exact_match", "first_repeat_value": 0.0}
  flex = import_labels("lm_eval", gsm8k_samples, "gsm8k", "ck-step7", 7, str(tmp_path / "flex"),
                       filter="flexible-extract")
  recs = {r["question_id"]: r for r in read_labels(flex["out"])}
  assert [recs[q]["c"] for q in ("0", "1", "2")] == [2, 2, 0]  # the last number: "Done, 3" counts now
  with open(label_stem(str(tmp_path / "flex"), "ck-step7", "gsm8k") + ".provenance.json") as f:
    prov = json.load(f)
  assert prov["imported"]["filter"] == "flexible-extract" and prov["imported"]["filter_from"] == "lm-eval's gsm8k.yaml"
  assert prov["imported"]["source_file"] == gsm8k_samples and len(prov["imported"]["source_sha256"]) == 64
  assert prov["tasks"] == {"gsm8k": tasks.get("gsm8k").format_hash()}
  with pytest.raises(InteropError, match=r"no rows with filter 'maj@8'.*\['strict-match', 'flexible-extract'\]"):
    import_labels("lm_eval", gsm8k_samples, "gsm8k", "ck", 7, str(tmp_path / "x"), filter="maj@8")


def test_reimport_is_idempotent_and_conflicts_need_replace(gsm8k_samples, tmp_path):
  out = str(tmp_path / "labels")
  first = import_labels("lm_eval", gsm8k_samples, "gsm8k", "ck", 1, out)
  mtime = os.stat(first["out"]).st_mtime_ns
  again = import_labels("lm_eval", gsm8k_samples, "gsm8k", "ck", 1, out)
  assert again["status"] == "unchanged" and os.stat(first["out"]).st_mtime_ns == mtime
  with pytest.raises(InteropError, match=r"already holds other labels.*now comes from.*flexible-extract.*--replace"):
    import_labels("lm_eval", gsm8k_samples, "gsm8k", "ck", 1, out, filter="flexible-extract")
  assert import_labels("lm_eval", gsm8k_samples, "gsm8k", "ck", 1, out, filter="flexible-extract",
                       replace=True)["status"] == "written"
  with open(os.path.join(out, "ck.jsonl"), "w") as f:  # generated labels of the same (checkpoint, task)
    f.write(json.dumps({"checkpoint": "ck", "checkpoint_step": 1, "task": "gsm8k", "question_id": "5",
                        "k": 4, "c": 1}) + "\n")
  with pytest.raises(InteropError, match=r"ck.jsonl already holds labels of checkpoint 'ck' task 'gsm8k'"):
    import_labels("lm_eval", gsm8k_samples, "gsm8k", "ck", 1, out, replace=True)


def test_bad_inputs_name_the_culprit_and_write_nothing(gsm8k_samples, tmp_path):
  out = tmp_path / "labels"
  with open(gsm8k_samples) as f:
    lines = f.readlines()
  torn = _write(tmp_path / "samples_gsm8k_torn.jsonl", [], tail="".join(lines[:4]) + lines[4][:40])
  with pytest.raises(InteropError, match=r"samples_gsm8k_torn.jsonl:5: invalid JSON"):
    import_labels("lm_eval", torn, "gsm8k", "ck", 1, str(out))
  stranger = dict(json.loads(lines[1]), doc={"question": "What is the airspeed of an unladen swallow?"},
                  arguments={})
  odd = _write(tmp_path / "samples_gsm8k_odd.jsonl", [json.loads(lines[0]), stranger])
  with pytest.raises(InteropError, match=r"samples_gsm8k_odd.jsonl:2: doc_id 1 matches no gsm8k question.*"
                                         r"airspeed.*--allow_unmatched"):
    import_labels("lm_eval", odd, "gsm8k", "ck", 1, str(out))
  twice = _write(tmp_path / "samples_gsm8k_twice.jsonl", [json.loads(lines[0]), dict(json.loads(lines[0]), doc_id=5)])
  with pytest.raises(InteropError, match=r"twice.jsonl:2: doc_id 5 is question '0' again \(first at line 1\)"):
    import_labels("lm_eval", twice, "gsm8k", "ck", 1, str(out))
  with pytest.raises(InteropError, match=r":1: not an lm-eval samples row.*use --format=olmes"):
    import_labels("lm_eval", _write(tmp_path / "p.jsonl", [{"doc_id": 0, "metrics": {}, "model_output": []}]),
                  "gsm8k", "ck", 1, str(out))
  with pytest.raises(InteropError, match=r":1: not an OLMES predictions row.*use --format=lm_eval"):
    import_labels("olmes", gsm8k_samples, "gsm8k", "ck", 1, str(out))
  with pytest.raises(InteropError, match="unknown task 'gsm9k'"):
    import_labels("lm_eval", gsm8k_samples, "gsm9k", "ck", 1, str(out))
  assert not out.exists()
  s = import_labels("lm_eval", odd, "gsm8k", "ck", 1, str(out), allow_unmatched=True)
  assert s["records"] == 1 and s["skipped"] == {"unmatched": 1, "ambiguous": 0}


def test_lm_eval_multiple_choice_rows_take_the_row_metric(tmp_path):
  q = next(tasks.get("arc_challenge").questions(1))
  text, choices = inner_question(q.prompt)
  doc = {"id": q.id, "question": text, "choices": {"text": choices, "label": list("ABCD")}, "answerKey": "C"}
  row = {"doc_id": 0, "doc": doc, "target": "2", "filter": "none", "metrics": ["acc", "acc_norm"],
         "arguments": {f"gen_args_{i}": {"arg_0": f"Question: {text}\nAnswer:", "arg_1": f" {c}"}
                       for i, c in enumerate(choices)},
         "resps": [[[str(-1.0 - i), "False"]] for i in range(4)], "filtered_resps": [[str(-1.0 - i), "False"]
                                                                                       for i in range(4)],
         "acc": 0.0, "acc_norm": 1.0}
  path = _write(tmp_path / "samples_arc_challenge_2026-01-01T00-00-00.0.jsonl", [row])
  s = import_labels("lm_eval", path, "arc_challenge", "ck", 3, str(tmp_path / "a"))
  rec, = read_labels(s["out"])
  assert (rec["question_id"], rec["k"], rec["c"], rec["greedy"]) == (q.id, 1, 0, None)
  assert rec["source"]["metric"] == "acc"
  s = import_labels("lm_eval", path, "arc_challenge", "ck", 3, str(tmp_path / "b"), metric="acc_norm")
  assert read_labels(s["out"])[0]["c"] == 1


def _olmes_files(tmp_path, rows, *, requests=None, greedy=True):
  stem = tmp_path / "task-000-gsm8k"
  path = _write(f"{stem}-predictions.jsonl", rows)
  with open(f"{stem}-metrics.json", "w") as f:
    json.dump({"task_name": "gsm8k", "task_config": {"primary_metric": "exact_match", "generation_kwargs": {
        "do_sample": not greedy, "temperature": 0.0 if greedy else 0.6}}, "metrics": {}}, f)
  if requests is not None:
    _write(f"{stem}-requests.jsonl", requests)
  return path


def test_olmes_predictions(tmp_path):
  (a, _), (b, _), (c, _) = _gsm8k_docs()
  gen = lambda text: {"continuation": text, "model_answer": text[-2:], "num_tokens": 9}  # noqa: E731
  rows = [{"doc_id": 0, "native_id": 0, "label": "18", "metrics": {"exact_match": 1.0, "exact_match_flex": 1.0},
           "model_output": [gen("So the answer is 18.")]},
          {"doc_id": 1, "native_id": 1, "label": "3",
           "metrics": {"exact_match": 0.0, "pass_at_1": 0.5},
           "model_output": [gen("So the answer is 3."), gen("So the answer is 4."), gen("3"), gen("no")]},
          {"doc_id": 2, "native_id": 2, "label": "70000", "metrics": {"exact_match": 0.0},
           "model_output": [gen("So the answer is 70000."), gen("So the answer is 7."), gen("70,000")]}]
  path = _olmes_files(tmp_path, rows)
  s = import_labels("olmes", path, "gsm8k", "ck", 2, str(tmp_path / "labels"))
  recs = {r["question_id"]: r for r in read_labels(s["out"])}
  # One output: its 0/1 metric; several under exact_match: each scored by our scorer ("70,000" too).
  assert [(recs[q]["k"], recs[q]["c"], recs[q]["greedy"]) for q in ("0", "1", "2")] == [(1, 1, 1), (4, 2, 0), (3, 2, 0)]
  assert recs["2"]["scores"] == [1.0, 0.0, 1.0] and recs["0"]["source"]["native_id"] == 0
  with pytest.raises(InteropError, match=r"predictions.jsonl:1: no metric 'pass_at_1' in the row"):
    import_labels("olmes", path, "gsm8k", "ck", 2, str(tmp_path / "pass"), metric="pass_at_1")
  s = import_labels("olmes", _olmes_files(tmp_path, rows[1:2]), "gsm8k", "ck", 2, str(tmp_path / "pass"),
                    metric="pass_at_1")
  assert [(r["k"], r["c"]) for r in read_labels(s["out"])] == [(4, 2)]  # pass_at_1 over n is c/n
  # Renumbered ids: the requests file beside the predictions gives the text to match by.
  renum = [dict(r, native_id=f"x{i}", doc_id=10 + i) for i, r in enumerate(rows)]
  requests = [{"doc_id": 10 + i, "native_id": f"x{i}", "doc": {"question": d["question"]},
               "request": {"context": "Question: ...\nAnswer:"}} for i, (_, d) in enumerate(_gsm8k_docs())]
  s = import_labels("olmes", _olmes_files(tmp_path, renum, requests=requests, greedy=False), "gsm8k", "ck", 2,
                    str(tmp_path / "renum"))
  recs = {r["question_id"]: r for r in read_labels(s["out"])}
  assert sorted(recs) == ["0", "1", "2"] and recs["0"]["greedy"] is None and recs["1"]["c"] == 2


def test_launcher_one_line_and_exit_status(gsm8k_samples, tmp_path):
  def run(*args):
    return subprocess.run([sys.executable, "-m", "launch.import_labels", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
  base = ["--format=lm_eval", f"--input={gsm8k_samples}", "--task=gsm8k", "--checkpoint=ck", "--checkpoint_step=3",
          f"--out={tmp_path / 'labels'}"]
  ok = run(*base)
  assert ok.returncode == 0, ok.stderr
  assert ok.stdout.startswith("written: 3 gsm8k labels of ck") and "filter strict-match" in ok.stdout
  bad = run(*base[:-1], "--filter=nope", f"--out={tmp_path / 'other'}")
  assert bad.returncode == 1 and not (tmp_path / "other").exists()
  assert bad.stderr.strip().splitlines() == [f"error: {gsm8k_samples}: no rows with filter 'nope'; the file has "
                                             "['strict-match', 'flexible-extract']"]
