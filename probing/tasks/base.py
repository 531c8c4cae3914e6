"""The task interface shared by real downstream tasks and the testbed's synthetic skills.

A task yields `Question`s whose `prompt` is the full model input (few-shot context included),
and scores a completion with `score(question, completion) -> float in [0, 1]`. The `reference`
is what a perfect model would generate under this prompt format, so `score(q, q.reference) == 1`
for every question; gold-answer NLL and the hybrid probe teacher-force it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Iterator, Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class Question:
  id: str
  prompt: str
  reference: str
  difficulty: int | None = None
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class Task:
  """Base class. Subclasses set the class attributes and implement `questions` and `score`."""
  name: str = ""
  stop_sequences: tuple[str, ...] = ()
  max_new_tokens: int = 256
  prompt_format: str = ""  # a short human-readable description; hashed into provenance

  def questions(self, limit: int | None = None) -> Iterator[Question]:
    raise NotImplementedError

  def score(self, question: Question, completion: str) -> float:
    raise NotImplementedError

  def score_many(self, questions: Sequence[Question], completions: Sequence[str]) -> list[float]:
    """Scores pairs; code tasks override this to run executions in parallel."""
    return [self.score(q, c) for q, c in zip(questions, completions)]

  def truncate(self, completion: str) -> str:
    """Applies the stop strings after decoding: cut at the first match of any of them."""
    cut = len(completion)
    for s in self.stop_sequences:
      i = completion.find(s)
      if i != -1:
        cut = min(cut, i)
    return completion[:cut]

  def format_hash(self) -> str:
    """Hash of everything that defines the prompts a model sees (for provenance)."""
    blob = json.dumps({"name": self.name, "format": self.prompt_format,
                       "stop": list(self.stop_sequences), "max_new_tokens": self.max_new_tokens,
                       "extra": self.format_fingerprint()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

  def format_fingerprint(self) -> str:
    """Subclasses return e.g. the few-shot context text, so a changed prompt changes the hash."""
    return ""


def stable_hash(text: str) -> int:
  """A process-independent 64-bit hash (Python's hash() is salted per process)."""
  return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
