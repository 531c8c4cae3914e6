"""Synthetic skills: scoring, difficulty, determinism and the held-out split."""
import random

import pytest

from probing import tasks
from probing.testbed import skills as synthetic
from probing.tokenizer import CharTokenizer

NAMES = synthetic.task_names()


def test_at_least_six_registered_skills():
  registered = [n for n in tasks.names() if n.startswith("syn_")]
  assert len(registered) >= 6
  assert set(NAMES) == set(registered)


@pytest.mark.parametrize("name", NAMES)
def test_references_score_one_and_wrong_answers_zero(name):
  task = tasks.get(name)
  qs = list(task.questions(limit=60))
  assert len(qs) == 60
  for q in qs:
    assert task.score(q, q.reference) == 1.0
    assert task.score(q, q.reference + " ") == 1.0  # surrounding whitespace is stripped
    assert task.score(q, "") == 0.0
    assert task.score(q, q.reference + q.reference[-1]) == 0.0
    wrong = ("1" if q.reference[0] != "1" else "2") + q.reference[1:]
    assert task.score(q, wrong) == 0.0
    assert len(q.reference) + 1 <= task.max_new_tokens  # answer + EOS fits


@pytest.mark.parametrize("name", NAMES)
def test_difficulty_ids_and_determinism(name):
  task = tasks.get(name)
  qs = list(task.questions())
  assert len(qs) == task.num_questions
  assert all(q.difficulty in task.skill.levels for q in qs)
  assert {q.difficulty for q in qs} == set(task.skill.levels)  # every level is represented
  assert len({q.id for q in qs}) == len(qs) and len({q.prompt for q in qs}) == len(qs)
  assert [q.prompt for q in synthetic.make_task(name).questions()] == [q.prompt for q in qs]
  other = [q.prompt for q in synthetic.make_task(name, seed=1).questions(limit=50)]
  assert other != [q.prompt for q in qs[:50]]
  tok = CharTokenizer(synthetic.ALPHABET)
  for q in qs:
    assert tok.decode(tok.encode(q.prompt + q.reference)) == q.prompt + q.reference


def test_heldout_split_is_disjoint_from_training_stream():
  heldout = {q.prompt for name in NAMES for q in tasks.get(name).questions()}
  assert all(synthetic.is_heldout(p) for p in heldout)
  stream = synthetic.training_examples([n[len("syn_"):] for n in NAMES], random.Random(0))
  seen = set()
  for _ in range(20000):
    prompt, answer = next(stream)
    assert not synthetic.is_heldout(prompt)
    seen.add(prompt)
  assert not seen & heldout
  # Small levels are fully covered by the stream, so the split is what keeps them apart.
  assert any(len(p) <= 4 for p in seen)


def test_training_examples_answer_their_prompts():
  rng = random.Random(1)
  for name in NAMES:
    skill = synthetic.get_skill(name)
    for _ in range(50):
      prompt, answer = synthetic.training_example(skill, rng)
      assert prompt.endswith("=") and answer
      assert set(prompt + answer) <= set(synthetic.ALPHABET)
  assert synthetic.training_example(synthetic.get_skill("add"), random.Random(3)) == \
      synthetic.training_example(synthetic.get_skill("add"), random.Random(3))
