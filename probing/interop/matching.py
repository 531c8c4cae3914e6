"""Which of our questions an outside document is: the task's own ids, else a hash of its text.

Other tools index documents by their position in whatever copy of a dataset they read
(`doc_id`), so a position is never trusted as an id. A document is matched by an explicit id
field (OLMES `native_id`, a doc's `id` / `task_id`) or by the hash of its question text after
whitespace normalisation, checked against both our full prompts and the question inside them
("Question: ...", "Problem: ..."); text wins where the two disagree.
"""
from __future__ import annotations

import collections
import hashlib
import re
import unicodedata
from typing import Any, Iterable, Mapping

from probing.interop.rows import InteropError
from probing.tasks.base import Question

# Fields of a dataset row that hold the question text (lm-eval docs, OLMES requests).
TEXT_FIELDS = ("question", "problem", "prompt", "query", "text", "input", "Question", "sentence")
ID_FIELDS = ("native_id", "id", "task_id", "question_id")
# The question inside a prompt: after its last "Question:"/"Problem:" marker, up to the choices
# or the answer cue.
_MARKER = re.compile(r"(?:^|\n)(?:Question|Problem|Q):[ \t]*\n?")
_CUE = re.compile(r"\n+[ \t]*(?:Answer|Solution):")
_CHOICE = re.compile(r"\n[ \t]*\(?[A-E][.)][ \t]*([^\n]*)")


def normalize(text: str) -> str:
  """NFKC, whitespace runs collapsed to one space, stripped: what survives a round trip."""
  return " ".join(unicodedata.normalize("NFKC", text).split())


def text_hash(text: str) -> str:
  return hashlib.sha256(normalize(text).encode()).hexdigest()[:16]


def inner_question(text: str) -> tuple[str, list[str]] | None:
  """(question, choice texts) of the last "Question:" / "Problem:" block of a prompt, or None."""
  marks = list(_MARKER.finditer(text))
  if not marks:
    return None
  rest = text[marks[-1].end():]
  cue = _CUE.search(rest)
  block = rest[:cue.start()] if cue else rest
  first = _CHOICE.search(block)
  question = (block[:first.start()] if first else block).strip()
  choices = [m.group(1).strip() for m in _CHOICE.finditer(block)]
  return (question, choices) if question else None


def text_keys(text: str, choices: Iterable[str] = ()) -> list[str]:
  """Hashes under which a text (a prompt, a query, a bare question) is looked up, the most
  specific first: with its answer choices where it has them, the whole text, the question."""
  keys = []
  inner = inner_question(text)
  choices = [c for c in choices if isinstance(c, str) and len(c.strip()) > 1]  # not bare letters
  for q, cs in ([(text, choices)] if choices else []) + ([inner] if inner and inner[1] else []):
    keys.append(text_hash(q + "\n" + "\n".join(cs)))
  keys.append(text_hash(text))
  if inner:
    keys.append(text_hash(inner[0]))
  return keys


def doc_texts(doc: Mapping[str, Any] | None) -> list[tuple[str, list[str]]]:
  """(text, choices) of each text field of a dataset row (choices as a list or ARC's {'text'})."""
  doc = doc if isinstance(doc, Mapping) else {}
  choices = doc.get("choices")
  choices = choices.get("text") if isinstance(choices, Mapping) else choices
  choices = [str(c) for c in choices] if isinstance(choices, list) else []
  out = []
  for f in TEXT_FIELDS:
    v = doc.get(f)
    if isinstance(v, Mapping):
      v = v.get("stem")
    if isinstance(v, str) and v.strip():
      out.append((v, choices))
  return out


def doc_ids(doc: Mapping[str, Any] | None) -> list[Any]:
  return [doc[f] for f in ID_FIELDS if isinstance(doc, Mapping) and doc.get(f) is not None]


class QuestionIndex:
  """Our questions of one task, by id and by text hash; `match` names the one a document is."""

  def __init__(self, task: str, questions: Iterable[Question]):
    self.task = task
    self.questions = {q.id: q for q in questions}
    self._ids = {str(qid): qid for qid in self.questions}
    self._text: dict[str, set[str]] = collections.defaultdict(set)
    for q in self.questions.values():
      for key in text_keys(q.prompt):
        self._text[key].add(q.id)

  def candidates(self, ids: Iterable[Any] = (), texts: Iterable[tuple[str, Iterable[str]]] = (),
                 subtask: str | None = None, position: int | None = None) -> list[str]:
    """Question ids this document may be (empty: none; several: ambiguous). `texts` are
    (text, choices) pairs; the hits of every key that hits anything are intersected, so a
    question stem shared by several questions is told apart by its choices. Only among
    questions of identical text does the document's `position` in its file's dataset decide."""
    by_id = set()
    for i in ids:
      for key in (str(i), f"{subtask}/{i}" if subtask else None):
        if key in self._ids:
          by_id.add(self._ids[key])
    hits = [self._text[k] for t, choices in texts for k in text_keys(t, choices) if k in self._text]
    by_text = set.intersection(*hits) if hits else set()
    if hits and not by_text:
      by_text = set.union(*hits)
    found = (by_id & by_text or by_text) if by_id and by_text else (by_text or by_id)
    if len(found) > 1 and subtask:  # the same text in several subjects: the file names its subject
      found = {q for q in found if str(q).startswith(subtask + "/")} or found
    if len(found) > 1 and by_text and position is not None:
      at = self._ids.get(f"{subtask}/{position}" if subtask else str(position))
      found = {at} if at in found else found
    return sorted(found)


def subtask_of(source_task: str | None, task: str) -> str | None:
  """'mmlu_abstract_algebra' read into our 'mmlu' -> 'abstract_algebra' (ids there are
  '<subject>/<index>'); None when the source task is not a part of ours."""
  if source_task and source_task.startswith(task + "_"):
    return source_task[len(task) + 1:]
  return None


class Matcher:
  """Matches documents one at a time, counting or raising on the ones that cannot be matched."""

  def __init__(self, index: QuestionIndex, path: str, *, allow_unmatched: bool, subtask: str | None):
    self.index, self.path, self.allow, self.subtask = index, path, allow_unmatched, subtask
    self.seen: dict[str, int] = {}
    self.skipped = {"unmatched": 0, "ambiguous": 0}

  def __call__(self, line: int, what: str, ids: Iterable[Any], texts: Iterable[tuple[str, Iterable[str]]],
               position: int | None = None) -> str | None:
    """Our question id for the document at `line` (None: skipped under allow_unmatched)."""
    texts = list(texts)
    found = self.index.candidates(ids, texts, self.subtask, position)
    if len(found) != 1:
      kind = "unmatched" if not found else "ambiguous"
      if self.allow:
        self.skipped[kind] += 1
        return None
      hint = (f"matches no {self.index.task} question by id or question text"
              + (f" (text starts {normalize(texts[0][0])[:60]!r})" if texts else " (it carries no question text)")
              if not found else f"matches {len(found)} {self.index.task} questions {found[:5]}")
      raise InteropError(f"{self.path}:{line}: {what} {hint}; check --task, or pass --allow_unmatched "
                         "to skip such documents")
    qid = found[0]
    if qid in self.seen:
      raise InteropError(f"{self.path}:{line}: {what} is question {qid!r} again (first at line "
                         f"{self.seen[qid]}); one row per document is expected")
    self.seen[qid] = line
    return qid
