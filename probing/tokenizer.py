"""One tokenizer interface for real checkpoints (HF tokenizer.json) and character alphabets.

Everything downstream (labels, features, sampling) needs only `encode`, `decode`,
`encode_batch`, `eos_id`, `pad_id` and `vocab_size`, so tiny character models and real OLMo
checkpoints run through the same code. `tokenizer_hash` goes into provenance. `from_spec`
resolves the one tokenizer setting every job takes ('' = the checkpoint's own, 'char[:abc]',
'shipped:<name>', or a tokenizer.json path); named alphabets are registered by whoever defines
them (`register_alphabet`; the embedded testbed registers 'char').
"""
from __future__ import annotations

import hashlib
import os
from typing import Iterable, Sequence

from etils import epath

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
    if not epath.Path(self.path).is_file():
      raise FileNotFoundError(f"tokenizer file not found: {self.path}")
    try:
      self._tok = tokenizers.Tokenizer.from_str(epath.Path(self.path).read_text())
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


class TokenizerError(ValueError):
  """A tokenizer setting that cannot be resolved; the message names the setting and the cause."""


_ALPHABETS: dict[str, str] = {}


def register_alphabet(name: str, alphabet: str) -> None:
  """Makes `from_spec(name)` a CharTokenizer over `alphabet` (e.g. the testbed's 'char')."""
  if _ALPHABETS.get(name, alphabet) != alphabet:
    raise ValueError(f"alphabet {name!r} registered twice with different characters")
  _ALPHABETS[name] = alphabet


def from_spec(spec: str | None, checkpoint_path: str = "", metadata: dict | None = None) -> Tokenizer:
  """'' = from the checkpoint (its metadata's alphabet, or tokenizer.json beside its weights);
  a registered alphabet name ('char'); 'char:<alphabet>'; 'shipped:<name>' (a tokenizer shipped
  with the task data); or a tokenizer.json path."""
  spec = spec or ""
  try:
    if not spec:
      meta = (metadata or {}).get("tokenizer") or {}
      if meta.get("kind") == "char":
        return CharTokenizer(meta["alphabet"])
      path = os.path.join(checkpoint_path, "tokenizer.json")
      if checkpoint_path and epath.Path(path).exists():
        return HFTokenizer(path)
      raise TokenizerError(f"{checkpoint_path or 'the checkpoint'} has no tokenizer.json and its metadata "
                           "names none; pass the tokenizer setting (a tokenizer.json path)")
    if spec in _ALPHABETS:
      return CharTokenizer(_ALPHABETS[spec])
    if spec.startswith("char:"):
      return CharTokenizer(spec[len("char:"):])
    if spec.startswith("shipped:"):
      from probing.tasks.olmo_eval import shipped_tokenizer_path  # pylint: disable=import-outside-toplevel
      return HFTokenizer(shipped_tokenizer_path(spec[len("shipped:"):]))
    if spec == "char":
      raise TokenizerError("tokenizer 'char' is the embedded testbed's alphabet, registered when "
                           "probing.testbed is loaded; or give 'char:<alphabet>'")
    return HFTokenizer(spec)
  except TokenizerError:
    raise
  except (OSError, ValueError, KeyError) as e:
    raise TokenizerError(f"tokenizer {spec or '(from checkpoint)'!r}: {e}") from e
