"""HumanEval and MBPP: every reference passes its tests in the sandbox, wrong code scores 0."""
import gzip
import json
import os

import pytest

from probing import tasks
from probing.tasks import sandbox
from probing.tasks.code import HumanEval, _data_dir, _stop_safe

COUNTS = {"humaneval": 164, "mbpp": 500}


@pytest.fixture(scope="module", params=sorted(COUNTS))
def loaded(request):
  task = tasks.get(request.param)
  return task, list(task.questions())


def _config(task):
  with open(os.path.join(_data_dir(task._task_dir), "config.json"), encoding="utf-8") as f:
    return json.load(f)["task_config"]


def test_registered():
  assert set(COUNTS) <= set(tasks.names())


def test_counts_and_ids(loaded):
  task, qs = loaded
  assert len(qs) == COUNTS[task.name] and len({q.id for q in qs}) == len(qs)
  if task.name == "humaneval":
    assert [q.id for q in qs] == [f"HumanEval/{i}" for i in range(164)]
  else:
    assert [q.id for q in qs] == [str(i) for i in range(11, 511)]
  assert [q.id for q in task.questions(limit=3)] == [q.id for q in qs[:3]]


def test_generation_settings_come_from_the_shipped_config(loaded):
  task, _ = loaded
  gen = _config(task)["generation_kwargs"]
  assert task.stop_sequences == tuple(gen["stop_sequences"]) and "\nclass" in task.stop_sequences
  assert task.max_new_tokens == gen["max_gen_toks"] == 512


def test_prompts_are_the_shipped_generative_contexts(loaded):
  task, qs = loaded
  path = os.path.join(_data_dir(task._task_dir), "requests.jsonl.gz")
  with gzip.open(path, "rt", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  assert all(r["request_type"] == "generate_until_and_loglikelihood" for r in rows)
  assert [q.prompt for q in qs] == [r["request"]["context"] for r in rows]
  for q, r in zip(qs, rows):
    if task.name == "humaneval":
      assert q.prompt == r["doc"]["prompt"] + "Here is the completed function:\n\n```python\n"
    else:
      assert r["doc"]["text"] in q.prompt and q.prompt.endswith("```python\n")
      assert any(t in q.prompt for t in r["doc"]["test_list"])


def test_references_survive_the_stop_sequences(loaded):
  task, qs = loaded
  assert [q.id for q in qs if task.truncate(q.reference) != q.reference] == []
  assert all("\r" not in q.reference for q in qs)


def test_every_reference_scores_one(loaded):
  task, qs = loaded
  scores = task.score_many(qs, [q.reference for q in qs])
  assert [q.id for q, s in zip(qs, scores) if s != 1.0] == []


WRONG = {
    "humaneval": ["    return None\n", "    return (\n", "", "    pass\n",
                  "    raise NotImplementedError\n"],
    "mbpp": ["def f(:\n    pass", "", "print('hello')", "def solution(*args):\n    return None"],
}


def test_wrong_completions_score_zero(loaded):
  task, qs = loaded
  sample = qs[::25]
  pairs = [(q, c) for q in sample for c in WRONG[task.name]]
  scores = task.score_many([q for q, _ in pairs], [c for _, c in pairs])
  assert scores == [0.0] * len(pairs)


def test_score_and_score_many_agree(loaded):
  task, qs = loaded
  q = qs[0]
  assert task.score(q, q.reference) == 1.0
  assert task.score(q, WRONG[task.name][0]) == 0.0
  # Text after a stop sequence is cut off before running, as generation would.
  assert task.score(q, q.reference + "\nprint(undefined_name)\n") == 1.0
  with pytest.raises(ValueError):
    task.score_many(qs[:2], [q.reference])


def test_humaneval_program_follows_human_eval():
  task = tasks.get("humaneval")
  q = next(task.questions())
  program = task.program(q, q.reference)
  entry = q.metadata["entry_point"]
  assert program.startswith(q.prompt[:q.prompt.index("Here is the completed")] + q.reference)
  assert program.rstrip().endswith(f"check({entry})")
  # A completion that restates the whole function passes too.
  whole = q.metadata["prefix"] + q.reference
  assert task.score(q, whole) == 1.0


def test_mbpp_setup_code_goes_after_the_solution():
  task = tasks.get("mbpp")
  q = next(q for q in task.questions() if q.id == "367")
  program = task.program(q, q.reference)
  assert program.index("class Node") < program.index("root = Node(1)")
  assert task.score(q, q.reference) == 1.0


def test_attacks_in_completions_score_zero_and_evaluation_goes_on(tmp_path):
  prot = sandbox.active_protections()
  if not (prot["signals_contained"] and prot["readonly_filesystem"]):
    pytest.skip(f"this machine's sandbox cannot contain these attacks ({prot['mode']})")
  task = HumanEval()
  task.timeout = 2.0
  victim = tmp_path / "victim.txt"
  victim.write_text("original")
  attacks = ["    while True:\n        pass\n",
             "    import os\n    os.kill(os.getppid(), 9)\n    return None\n",
             "    import os\n    os.kill(-1, 9)\n    return None\n",
             f"    open({str(victim)!r}, 'w').write('x')\n"]
  qs = list(task.questions(limit=len(attacks)))
  assert task.score_many(qs, attacks) == [0.0] * len(attacks)
  assert task.score_many(qs, [q.reference for q in qs]) == [1.0] * len(attacks)
  assert victim.read_text() == "original"


def test_stop_safe_rewrites_keep_programs_and_avoid_stops():
  stops = ("\nclass", "\n#")
  assert _stop_safe("def f():\n# note\n  return 1", stops) == "def f():\n  return 1"
  code = "import heapq\nclass A:\n  x = 1\ndef g():\n  return A.x"
  assert _stop_safe(code, stops) == "class A:\n  x = 1\nimport heapq\ndef g():\n  return A.x"
  assert _stop_safe("# header\nx = 1", stops) == "# header\nx = 1"


def test_format_fingerprint(loaded):
  task, _ = loaded
  fp = json.loads(task.format_fingerprint())
  assert fp["variant"].endswith("gold_bpb_0shot") and len(fp["prompts_sha256"]) == 64
  assert task.format_hash() == tasks.get(task.name).format_hash()
  assert tasks.get("humaneval").format_hash() != tasks.get("mbpp").format_hash()
