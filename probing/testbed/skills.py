"""Synthetic skills of the embedded testbed, registered as `syn_*` tasks.

Each skill is a generator `(rng, size) -> (prompt, answer, metadata)` over a character
alphabet (`ALPHABET`, for `probing.tokenizer.CharTokenizer`). A prompt ends in `=` and the
answer is the text after it; pretraining appends EOS. Single-answer skills are scored by exact
match; the skills of `probing.testbed.reasoning` accept many answers (a verifier, or the final
answer after `|`). A question's `difficulty` is its declared level (coarse, overlapping bands for
the testbed-v2 skills); what makes it hard within the level is in its `metadata`.

Held-out split: a prompt is an evaluation prompt iff `stable_hash(prompt) % HELDOUT_MOD == 0`.
`questions()` draws only from that bucket and `training_example()` never does, so no
evaluation question is ever seen in pretraining, for any seed.
"""
from __future__ import annotations

import dataclasses
import random
import string
from typing import Callable, Iterator, Sequence

from probing.tasks import register
from probing.tasks.base import Question, Task, stable_hash
from probing.testbed import reasoning

# Every character a prompt or answer can hold (ids 3.. of the CharTokenizer).
ALPHABET = string.digits + string.ascii_lowercase + "+-*<>^&#=,;:|"
HELDOUT_MOD = 5
PREFIX = "syn_"
# Share of banded questions whose declared level names the other band: a rater's coarse label is
# sometimes wrong, so the declared level is a weak signal and the content (metadata) a strong one.
MISRATED = 0.25

Generator = Callable[[random.Random, int], tuple[str, str, dict]]


def is_heldout(prompt: str) -> bool:
  """The stable evaluation bucket: about 1 prompt in `HELDOUT_MOD`."""
  return stable_hash(prompt) % HELDOUT_MOD == 0


def _number(rng: random.Random, digits: int) -> int:
  return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10 ** digits - 1)


def _borrows(a: int, b: int) -> int:
  n, borrow = 0, 0
  while a or b:
    borrow = int(a % 10 - b % 10 - borrow < 0)
    n += borrow
    a, b = a // 10, b // 10
  return n


def gen_add(rng: random.Random, level: int):
  """`a+b=`: the longer operand has `level` digits."""
  a, b = _number(rng, level), _number(rng, rng.randint(1, level))
  if rng.random() < 0.5:
    a, b = b, a
  return f"{a}+{b}=", str(a + b), {"carries": reasoning.count_carries(a, b)}


def gen_sub(rng: random.Random, level: int):
  """`a-b=` with a >= b: `a` has `level` digits."""
  a = _number(rng, level)
  b = rng.randint(0, a)
  return f"{a}-{b}=", str(a - b), {"borrows": _borrows(a, b)}


def gen_sort(rng: random.Random, level: int):
  """`^digits=`: sort `level` digits ascending."""
  s = "".join(rng.choice(string.digits) for _ in range(level))
  return f"^{s}=", "".join(sorted(s)), {}


def gen_rev(rng: random.Random, level: int):
  """`<letters=`: reverse `level` letters."""
  s = "".join(rng.choice(string.ascii_lowercase) for _ in range(level))
  return f"<{s}=", s[::-1], {}


def gen_shift(rng: random.Random, level: int):
  """`>letters=`: each of `level` letters moved one on in the alphabet (z wraps to a)."""
  s = "".join(rng.choice(string.ascii_lowercase) for _ in range(level))
  lower = string.ascii_lowercase
  return f">{s}=", "".join(lower[(lower.index(c) + 1) % 26] for c in s), {}


def gen_dup(rng: random.Random, level: int):
  """`&letters=`: every one of `level` letters written twice."""
  s = "".join(rng.choice(string.ascii_lowercase) for _ in range(level))
  return f"&{s}=", "".join(c + c for c in s), {}


def gen_inc(rng: random.Random, level: int):
  """`n#=`: n + 1 for a `level`-digit n; the carry runs through n's trailing 9s."""
  nines = rng.randint(0, level - 1)
  head = _number(rng, level - nines) if level - nines > 1 else rng.randint(1 if level > 1 else 0, 8)
  if head % 10 == 9:
    head -= 1
  n = int(str(head) + "9" * nines)
  return f"{n}#=", str(n + 1), {"carries": nines}


@dataclasses.dataclass(frozen=True)
class Skill:
  """One synthetic skill: a generator over content sizes, and its declared difficulty levels.

  With `banded`, the declared level is coarse and noisy, as human difficulty ratings are: level 1
  draws the size from the lower two thirds of `sizes`, level 2 from the upper two thirds, so the
  bands overlap, and a share `MISRATED` of questions draw from the other level's band. The size
  itself (length, operand count, ...) goes to the question's metadata with the other content
  features, where the metadata baseline can read it.
  """
  name: str
  generate: Generator
  sizes: tuple[int, ...]
  description: str
  max_answer_chars: int
  # (prompt, reference, completion) -> correct? for skills with many valid answers; None = exact match.
  verify: Callable[[str, str, str], bool] | None = None
  banded: bool = False

  @property
  def task_name(self) -> str:
    return PREFIX + self.name

  @property
  def levels(self) -> tuple[int, ...]:
    return (1, 2) if self.banded else self.sizes

  def band(self, level: int) -> tuple[int, ...]:
    if not self.banded:
      return (level,)
    n = len(self.sizes)
    return self.sizes[:-(-2 * n // 3)] if level == 1 else self.sizes[n // 3:]

  def draw(self, rng: random.Random, level: int) -> tuple[str, str, dict]:
    """(prompt, answer, metadata) at a declared level."""
    band = level
    if self.banded and rng.random() < MISRATED:
      band = 3 - level  # misrated: the content is the other level's
    size = rng.choice(self.band(band))
    prompt, answer, meta = self.generate(rng, size)
    return prompt, answer, ({"size": size, **meta} if self.banded else meta)


SKILLS: dict[str, Skill] = {s.name: s for s in (
    Skill("add", gen_add, (1, 2, 3), "a+b= with up to `level` digits", 4),
    Skill("sub", gen_sub, (1, 2, 3), "a-b= (a >= b), a has `level` digits", 3),
    Skill("sum", reasoning.gen_sum, (2, 3, 4), "s:a,b,..= add 2-4 numbers with a trace|total", 36,
          reasoning.verify_final, banded=True),
    Skill("mul", reasoning.gen_mul, (2, 3), "a*b=, partial products then |product", 32, reasoning.verify_final,
          banded=True),
    Skill("path", reasoning.gen_path, (6, 7, 8, 9), "g:edges;s>t= any simple path, 6-9 edges", 6,
          reasoning.verify_path, banded=True),
    Skill("change", reasoning.gen_change, (3, 4, 5), "c:digits>t= any subset summing to t", 9,
          reasoning.verify_change, banded=True),
    Skill("nodup", reasoning.gen_nodup, (4, 5, 6, 7, 8), "n:letters= rearranged, no equal neighbours", 8,
          reasoning.verify_nodup, banded=True),
    Skill("sort", gen_sort, (3, 4, 5, 6, 7, 8, 9), "^digits= sorted ascending, `level` digits", 9),
    Skill("rev", gen_rev, tuple(range(2, 11)), "<letters= reversed, 2-10 letters", 10, banded=True),
    Skill("shift", gen_shift, (2, 3, 4, 5, 6, 7, 8), ">letters= each letter +1, `level` letters", 8),
    Skill("dup", gen_dup, (2, 3, 4, 5, 6), "&letters= each letter doubled, `level` letters", 12),
    Skill("inc", gen_inc, (2, 3, 4, 5, 6, 7), "n#= n + 1, n has 2-7 digits", 7, banded=True),
)}


def get_skill(name: str) -> Skill:
  key = name[len(PREFIX):] if name.startswith(PREFIX) else name
  if key not in SKILLS:
    raise KeyError(f"unknown synthetic skill {name!r}; known: {sorted(SKILLS)}")
  return SKILLS[key]


def training_example(skill: Skill, rng: random.Random, max_tries: int = 1000) -> tuple[str, str]:
  """One (prompt, answer) from the training bucket, at a uniformly drawn difficulty level."""
  for _ in range(max_tries):
    prompt, answer, _ = skill.draw(rng, rng.choice(skill.levels))
    if not is_heldout(prompt):
      return prompt, answer
  raise RuntimeError(f"skill {skill.name}: no training prompt in {max_tries} draws")


def training_examples(skills: Sequence[str], rng: random.Random,
                      weights: Sequence[float] | None = None) -> Iterator[tuple[str, str]]:
  """An endless stream of training (prompt, answer) pairs over `skills` (a weighted mixture)."""
  objs = [get_skill(s) for s in skills]
  while True:
    skill = rng.choices(objs, weights)[0] if weights else rng.choice(objs)
    yield training_example(skill, rng)


class SyntheticTask(Task):
  """A skill as a Task: held-out questions, deterministic from `seed`, level-balanced."""
  stop_sequences = ()

  def __init__(self, skill: Skill, num_questions: int = 200, seed: int = 0):
    self.skill = skill
    self.name = skill.task_name
    self.num_questions = num_questions
    self.seed = seed
    self.max_new_tokens = skill.max_answer_chars + 1  # + EOS
    self.prompt_format = f"{skill.description}; answer then EOS; zero-shot"

  def format_fingerprint(self) -> str:
    return f"levels={self.skill.levels};alphabet={ALPHABET};heldout_mod={HELDOUT_MOD}"

  def questions(self, limit: int | None = None) -> Iterator[Question]:
    """Up to `limit` (default `num_questions`) distinct held-out questions, levels round-robin.

    Small levels (e.g. 1-digit sums) run out of distinct held-out prompts; they then give
    fewer questions and the other levels fill in.
    """
    n = self.num_questions if limit is None else limit
    rng = random.Random(f"{self.name}/eval/{self.seed}")
    seen: set[str] = set()
    live = list(self.skill.levels)
    count = 0
    while count < n and live:
      for level in list(live):
        if count >= n:
          break
        for _ in range(400):
          prompt, answer, meta = self.skill.draw(rng, level)
          if prompt not in seen and is_heldout(prompt):
            break
        else:
          live.remove(level)  # exhausted: no new held-out prompt at this level
          continue
        seen.add(prompt)
        count += 1
        yield Question(id=f"{self.name}-{stable_hash(prompt) % 16 ** 10:010x}", prompt=prompt,
                       reference=answer, difficulty=level, metadata={"level": level, **meta})

  def score(self, question: Question, completion: str) -> float:
    text = self.truncate(completion).strip()
    if self.skill.verify is None:
      return float(text == question.reference)
    return float(self.skill.verify(question.prompt, question.reference, text))


def make_task(name: str, num_questions: int = 200, seed: int = 0) -> SyntheticTask:
  """A task with a non-default question count or seed (the registry holds the defaults)."""
  return SyntheticTask(get_skill(name), num_questions=num_questions, seed=seed)


def task_names() -> list[str]:
  return [s.task_name for s in SKILLS.values()]


def _factory(skill: Skill) -> Callable[[], Task]:
  return lambda: SyntheticTask(skill)


for _skill in SKILLS.values():
  register(_skill.task_name, _factory(_skill))


__all__: Sequence[str] = ("ALPHABET", "HELDOUT_MOD", "MISRATED", "SKILLS", "Skill", "SyntheticTask", "get_skill",
                          "is_heldout", "make_task", "task_names", "training_example",
                          "training_examples")
