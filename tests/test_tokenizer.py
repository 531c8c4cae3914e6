"""Tokenizers: the shipped OLMo tokenizer files round-trip text; CharTokenizer's contract."""
import json
import os

import pytest

from probing.tasks.olmo_eval import shipped_tokenizer_path
from probing.tokenizer import CharTokenizer, HFTokenizer, tokenizer_hash

TEXTS = [
    "Question: Janet’s ducks lay 16 eggs per day.\nAnswer: So the answer is 18.",
    "Solution: $\\frac{a}{b}=\\boxed{-\\frac{2}{3}}$\n\n  indented\tand tabbed",
    "naïve café – 東京 🙂",
    "",
]


@pytest.fixture(scope="module")
def dolma():
  return HFTokenizer(shipped_tokenizer_path("gpt-neox-olmo-dolma-v1_5"))


@pytest.fixture(scope="module")
def neox():
  return HFTokenizer(shipped_tokenizer_path("allenai/eleuther-ai-gpt-neox-20b-pii-special"))


def test_shipped_paths_resolve_by_several_names():
  p = shipped_tokenizer_path("gpt-neox-olmo-dolma-v1_5")
  assert os.path.isfile(p) and p.endswith("allenai_gpt-neox-olmo-dolma-v1_5.json")
  assert shipped_tokenizer_path("allenai_gpt-neox-olmo-dolma-v1_5.json") == p
  assert shipped_tokenizer_path("allenai/gpt-neox-olmo-dolma-v1_5") == p
  with pytest.raises(FileNotFoundError, match="available"):
    shipped_tokenizer_path("llama-3")


def test_special_ids_inferred(dolma, neox):
  assert (dolma.eos_id, dolma.pad_id, dolma.vocab_size) == (50279, 1, 50280)
  assert (neox.eos_id, neox.pad_id, neox.vocab_size) == (0, 1, 50280)
  assert dolma.token_to_id("<|endoftext|>") == dolma.eos_id


@pytest.mark.parametrize("text", TEXTS)
def test_hf_round_trip(dolma, neox, text):
  for tok in (dolma, neox):
    ids = tok.encode(text)
    assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_hf_encode_batch_matches_encode(dolma):
  assert dolma.encode_batch(TEXTS) == [dolma.encode(t) for t in TEXTS]
  assert dolma.encode(" B") != dolma.encode("B")  # leading spaces are part of tokens


def test_hf_decode_skips_eos_by_default(dolma):
  ids = dolma.encode("So the answer is 18.") + [dolma.eos_id]
  assert dolma.decode(ids) == "So the answer is 18."
  assert dolma.decode(ids, skip_special_tokens=False).endswith("<|endoftext|>")


def test_hf_explicit_tokens_and_errors(tmp_path):
  path = shipped_tokenizer_path("gpt-neox-olmo-dolma-v1_5")
  tok = HFTokenizer(path, eos_token="<|padding|>", pad_token="<|endoftext|>")
  assert (tok.eos_id, tok.pad_id) == (1, 50279)
  with pytest.raises(ValueError, match="not in the vocabulary"):
    HFTokenizer(path, eos_token="<no-such-token>")
  bad = tmp_path / "broken.json"
  bad.write_text(json.dumps({"model": {"type": "nonsense"}}))
  with pytest.raises(ValueError, match="broken.json"):
    HFTokenizer(bad)
  with pytest.raises(FileNotFoundError, match="missing.json"):
    HFTokenizer(tmp_path / "missing.json")


def test_tokenizer_hash_is_stable_and_distinguishes(dolma, neox):
  again = HFTokenizer(shipped_tokenizer_path("gpt-neox-olmo-dolma-v1_5"))
  assert tokenizer_hash(dolma) == tokenizer_hash(again)
  assert len({tokenizer_hash(dolma), tokenizer_hash(neox), tokenizer_hash(CharTokenizer("ab")),
              tokenizer_hash(CharTokenizer("ba"))}) == 4


def test_char_tokenizer_ids_and_round_trip():
  tok = CharTokenizer("0123456789+= ")
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 1, 2, 16)
  assert tok.encode("10+2") == [4, 3, 13, 5]
  assert tok.decode(tok.encode("12 + 30 = 42")) == "12 + 30 = 42"
  # pad/bos are skipped, eos renders as nothing and does not stop decoding
  assert tok.decode([1, 4, 2, 5, 0, 0]) == "12"
  assert tok.encode_batch(["1", "2"]) == [[4], [5]]


def test_char_tokenizer_errors():
  tok = CharTokenizer("ab")
  with pytest.raises(ValueError, match=r"'c' at position 2"):
    tok.encode("abc")
  with pytest.raises(ValueError, match="outside"):
    tok.decode([7])
  with pytest.raises(ValueError, match="repeats"):
    CharTokenizer("aba")
  with pytest.raises(ValueError, match="non-empty"):
    CharTokenizer("")
