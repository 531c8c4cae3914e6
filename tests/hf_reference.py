"""Builds tiny random HF OLMo3 checkpoints with transformers (the reference implementation)."""
from __future__ import annotations

import json
import os

import numpy as np
import torch
import transformers


def hf_config(**kw) -> transformers.Olmo3Config:
  base = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              rms_norm_eps=1e-6, sliding_window=8, pad_token_id=0, eos_token_id=1, bos_token_id=None,
              tie_word_embeddings=False)
  base.update(kw)
  return transformers.Olmo3Config(**base)


def random_hf_model(config: transformers.Olmo3Config, seed: int = 0) -> transformers.Olmo3ForCausalLM:
  """Random weights, with norm weights randomized too (unit norms would hide norm bugs)."""
  torch.manual_seed(seed)
  model = transformers.Olmo3ForCausalLM(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight") or "layernorm" in name:
        p.copy_(1.0 + 0.3 * torch.randn_like(p))
  return model


def save_hf_checkpoint(model, path: str, *, max_shard_size=None) -> str:
  kw = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
  model.save_pretrained(path, **kw)
  return path


def rewrite_config(path: str, fn) -> None:
  p = os.path.join(path, "config.json")
  with open(p) as f:
    d = json.load(f)
  d = fn(d) or d
  with open(p, "w") as f:
    json.dump(d, f, indent=2)


def hf_forward(model, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
               position_ids: np.ndarray | None = None):
  """(logits, hidden_states) as numpy; HF's last hidden state is post-final-norm."""
  with torch.inference_mode():
    out = model(input_ids=torch.as_tensor(input_ids),
                attention_mask=None if attention_mask is None else torch.as_tensor(attention_mask),
                position_ids=None if position_ids is None else torch.as_tensor(position_ids),
                output_hidden_states=True)
  return out.logits.float().numpy(), [h.float().numpy() for h in out.hidden_states]
