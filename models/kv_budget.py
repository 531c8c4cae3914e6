"""KV-cache memory of the samplers, and how many decode slots fit a budget.

Why a function: the continuous sampler (`models.continuous`) allocates every cache once for the
run, so its slot count is a memory decision. OLMo3-7B has no GQA (32 KV heads x 128, 32 layers):
512 KiB of bf16 K/V per token, so a 7B run must be sized before it starts (e.g. `slots_for_budget(
olmo3_7b(dtype="bfloat16"), 60, prompt_tokens=128, max_new_tokens=512, prefix_tokens=640)`).
"""
from __future__ import annotations

import numpy as np

from models.config import Olmo3Config, as_dtype
from models.sampling import prompt_bucket


def layer_widths(config: Olmo3Config, layer: int, prompt_width: int, max_new_tokens: int) -> tuple[int, int]:
  """(prompt columns, generated ring columns) one layer keeps: sliding layers keep `window` of each."""
  w = config.window_for(layer)
  fed = max(max_new_tokens - 1, 1)  # tokens ever fed back (the last one never is)
  return (prompt_width, fed) if w is None else (min(prompt_width, w), min(fed, w))


def _column_bytes(config: Olmo3Config, dtype) -> int:
  """K and V of one token in one layer."""
  return 2 * config.num_key_value_heads * config.head_dim * np.dtype(as_dtype(dtype or config.dtype)).itemsize


def cache_bytes(config: Olmo3Config, *, rows: int, group: int, prompt_tokens: int, max_new_tokens: int,
                prefix_tokens: int = 0, dtype=None) -> int:
  """Device bytes of a continuous run: prompt slots (one per `group` rows) of `prompt_tokens`
  (rounded to its prompt bucket), a generated ring per row, one shared prefix, and row state."""
  col = _column_bytes(config, dtype)
  width = prompt_bucket(prompt_tokens) if prompt_tokens else 0
  total = 0
  for layer in range(config.num_hidden_layers):
    p, g = layer_widths(config, layer, width, max_new_tokens)
    w = config.window_for(layer)
    total += col * ((rows // group) * p + rows * g + (prefix_tokens if w is None else min(prefix_tokens, w)))
  return total + rows * (4 * max_new_tokens + 64) + (rows // group) * width


def static_cache_bytes(config: Olmo3Config, *, batch: int, num_samples: int, prompt_tokens: int,
                       max_new_tokens: int, dtype=None) -> int:
  """Device bytes of the static sampler's caches for one batch (prompt K/V shared by k samples)."""
  col, width = _column_bytes(config, dtype), prompt_bucket(prompt_tokens)
  total = 0
  for layer in range(config.num_hidden_layers):
    p, g = layer_widths(config, layer, width, max_new_tokens)
    total += col * (batch * p + batch * num_samples * g)
  return total + batch * num_samples * 4 * max_new_tokens


def slots_for_budget(config: Olmo3Config, kv_cache_gib: float, *, prompt_tokens: int, max_new_tokens: int,
                     group: int = 1, prefix_tokens: int = 0, multiple: int = 1, dtype=None) -> int:
  """Most decode rows whose caches (`cache_bytes`) fit in `kv_cache_gib`, a multiple of
  `group * multiple` (multiple: the mesh's batch devices); 0 if not even one group fits."""
  budget = float(kv_cache_gib) * 2**30
  kw = dict(group=group, prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens, dtype=dtype)
  fixed = cache_bytes(config, rows=0, prefix_tokens=prefix_tokens, **kw)
  step = group * multiple
  per_step = cache_bytes(config, rows=step, **kw)
  return max(0, int((budget - fixed) // per_step)) * step
