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
    if task.skill.verify is None:
      wrong = ("1" if q.reference[0] != "1" else "2") + q.reference[1:]
      assert task.score(q, wrong) == 0.0
    assert len(q.reference) + 1 <= task.max_new_tokens  # answer + EOS fits


MULTI_PATH = ["sum", "mul", "path", "change", "nodup"]


def _other_answers(name, q, rng):
  """Valid answers other than the reference, built independently of the generators."""
  from probing.testbed import reasoning as r
  if name == "sum":
    ops = [int(x) for x in q.prompt[2:-1].split(",")]
    out = []
    for _ in range(5):
      order, steps, total = rng.sample(ops, len(ops)), [], None
      total = order[0]
      for x in order[1:]:
        steps.append(f"{total}+{x}={total + x}")
        total += x
      out.append(";".join(steps) + f"|{total}")
    return out
  if name == "mul":
    a, b = (int(x) for x in q.prompt[:-1].split("*"))
    parts = [int(d) * 10 ** i for i, d in enumerate(reversed(str(a))) if d != "0"]
    factors = lambda p: f"{p}*{b}" if rng.random() < 0.5 else f"{b}*{p}"  # either factor first
    return [";".join(f"{factors(p)}={p * b}" for p in rng.sample(parts, len(parts))) + f"|{a * b}" for _ in range(5)]
  if name == "path":
    edges, src, dst = r._parse_graph(q.prompt)
    return r._simple_paths(edges, src, dst)
  if name == "change":
    items, target = q.prompt[2:-1].split(">")
    subsets = r._subsets_summing([int(x) for x in items.split(",")], int(target))
    return ["+".join(map(str, rng.sample(s, len(s)))) for s in subsets]
  letters = list(q.prompt[2:-1])
  return [r._arrangement(letters, rng) for _ in range(10)]


@pytest.mark.parametrize("name", MULTI_PATH)
def test_multi_path_skills_accept_every_valid_answer(name):
  """Many different completions are correct: independently built valid answers score 1."""
  task = tasks.get("syn_" + name)
  rng = random.Random(0)
  distinct = []
  for q in task.questions(limit=40):
    answers = set(_other_answers(name, q, rng))
    for a in answers:
      assert task.score(q, a) == 1.0, (q.prompt, a)
    distinct.append(len(answers | {q.reference}))
  assert max(distinct) >= 3  # several valid answers exist


def test_verifiers_reject_invalid_answers():
  from probing.testbed import reasoning as r
  assert r.verify_path("g:ab,bc,cd,ae,ed;a>d=", "", "aed") and r.verify_path("g:ab,bc,cd,ae,ed;a>d=", "", "abcd")
  assert not r.verify_path("g:ab,bc,cd,ae,ed;a>d=", "", "ad")  # no such edge
  assert not r.verify_path("g:ab,bc,cd,ae,ed;a>d=", "", "aedcb")  # does not end at d
  assert not r.verify_path("g:ab,bc,cd,ae,ed;a>d=", "", "abaed")  # revisits a
  assert r.verify_change("c:3,5,8,9>17=", "", "9+8") and r.verify_change("c:3,5,8,9>17=", "", "8+9")
  assert not r.verify_change("c:3,5,8,9>17=", "", "9+8+0") and not r.verify_change("c:3,5,8,9>17=", "", "9+4+4")
  assert not r.verify_change("c:3,5,8,9>17=", "", "8+9+")
  assert r.verify_nodup("n:aabbc=", "", "ababc") and r.verify_nodup("n:aabbc=", "", "abcab")
  assert not r.verify_nodup("n:aabbc=", "", "aabbc") and not r.verify_nodup("n:aabbc=", "", "ababa")
  assert r.verify_final("s:1,2=", "1+2=3|3", "2+1=3|3") and r.verify_final("s:1,2=", "1+2=3|3", "1+2=4|3")
  assert not r.verify_final("s:1,2=", "1+2=3|3", "1+2=3|4") and not r.verify_final("s:1,2=", "1+2=3|3", "3")


def test_content_difficulty_is_metadata_not_level():
  for name in MULTI_PATH:
    task = tasks.get("syn_" + name)
    qs = list(task.questions(limit=40))
    extra = [set(q.metadata) - {"level"} for q in qs]
    assert all(extra), name  # content features beside the declared level
    assert all(q.metadata["level"] == q.difficulty for q in qs)


def test_declared_levels_are_sometimes_wrong():
  """A share MISRATED of banded questions draws its content from the other level's band: on rev
  (sizes 2-10; level 1: 2-7, level 2: 5-10) a level-1 question is 8-10 letters long only then."""
  skill, rng = synthetic.get_skill("rev"), random.Random(0)
  sizes = [skill.draw(rng, 1)[2]["size"] for _ in range(4000)]
  assert set(sizes) == set(skill.sizes)
  share = sum(s >= 8 for s in sizes) / len(sizes)
  assert abs(share - synthetic.MISRATED * 3 / 6) < 0.02, share


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
  assert synthetic.training_example(synthetic.get_skill("sum"), random.Random(3)) == \
      synthetic.training_example(synthetic.get_skill("sum"), random.Random(3))
