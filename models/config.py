"""OLMo3 model configuration: `Olmo3Config` (HF `config.json` in and out), RoPE forms, presets.

`Olmo3Config.from_hf` reads all three stored RoPE forms itself and never relies on HF class
defaults; `to_hf` writes a config.json that transformers loads back to the same model.
Presets are functions (`olmo3_7b()`, `tiny()`), collected in `PRESETS`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

SLIDING = "sliding_attention"
FULL = "full_attention"
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_name(dtype) -> str:
  return jnp.dtype(dtype).name


def as_dtype(dtype):
  if isinstance(dtype, str):
    if dtype not in _DTYPES:
      raise ValueError(f"unsupported dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]
  return jnp.dtype(dtype).type


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class RopeConfig:
  """RoPE of one layer type. `rope_type` is 'default' or 'yarn'."""
  theta: float
  rope_type: str = "default"
  factor: float | None = None
  original_max_position_embeddings: int | None = None
  beta_fast: float = 32.0
  beta_slow: float = 1.0
  attention_factor: float | None = None
  mscale: float | None = None
  mscale_all_dim: float | None = None
  truncate: bool = True

  def __post_init__(self):
    if self.rope_type not in ("default", "yarn"):
      raise ValueError(f"rope_type: unsupported {self.rope_type!r} (expected 'default' or 'yarn')")
    if not self.theta or self.theta <= 0:
      raise ValueError(f"rope_theta must be positive, got {self.theta!r}")
    if self.rope_type == "yarn":
      if self.factor is None or self.factor <= 0:
        raise ValueError(f"rope 'factor' must be positive for yarn, got {self.factor!r}")
      if not self.original_max_position_embeddings:
        raise ValueError("rope 'original_max_position_embeddings' is required for yarn")

  def to_hf(self) -> dict:
    d: dict[str, Any] = {"rope_type": self.rope_type, "rope_theta": self.theta}
    if self.rope_type == "yarn":
      d.update(factor=self.factor, original_max_position_embeddings=self.original_max_position_embeddings,
               beta_fast=self.beta_fast, beta_slow=self.beta_slow)
      for key in ("attention_factor", "mscale", "mscale_all_dim"):
        if getattr(self, key) is not None:
          d[key] = getattr(self, key)
      if not self.truncate:
        d["truncate"] = False
    return d

  def inv_freq_and_scale(self, head_dim: int, max_position_embeddings: int) -> tuple[np.ndarray, float]:
    """Inverse frequencies [head_dim // 2] (fp32, as HF computes them) and the cos/sin scale."""
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    pos_freqs = np.float32(self.theta) ** exponents
    inv_freq = (np.float32(1.0) / pos_freqs).astype(np.float32)
    if self.rope_type == "default":
      return inv_freq, 1.0
    factor = self.factor
    original = self.original_max_position_embeddings

    def get_mscale(scale, mscale=1.0):
      return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0

    scale = self.attention_factor
    if scale is None:
      if self.mscale and self.mscale_all_dim:
        scale = float(get_mscale(factor, self.mscale) / get_mscale(factor, self.mscale_all_dim))
      else:
        scale = get_mscale(factor)

    def correction_dim(rotations):
      return (head_dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(self.theta))

    low, high = correction_dim(self.beta_fast), correction_dim(self.beta_slow)
    if self.truncate:
      low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
      high += 0.001
    ramp = np.clip((np.arange(head_dim // 2, dtype=np.float32) - low) / (high - low), 0, 1).astype(np.float32)
    extrapolation_factor = np.float32(1) - ramp
    interpolation = (np.float32(1.0) / (np.float32(factor) * pos_freqs)).astype(np.float32)
    inv_freq = interpolation * (1 - extrapolation_factor) + inv_freq * extrapolation_factor
    return inv_freq.astype(np.float32), float(scale)


def _rope_from_dict(d: Mapping[str, Any], *, where: str, default_theta: float | None) -> RopeConfig:
  d = dict(d)
  rope_type = d.get("rope_type", d.get("type", "default"))
  theta = d.get("rope_theta", default_theta)
  if theta is None:
    raise ValueError(f"{where} has no 'rope_theta' (and there is no top-level rope_theta)")
  try:
    return RopeConfig(
        theta=float(theta), rope_type=rope_type,
        factor=None if d.get("factor") is None else float(d["factor"]),
        original_max_position_embeddings=d.get("original_max_position_embeddings"),
        beta_fast=float(d.get("beta_fast") or 32.0), beta_slow=float(d.get("beta_slow") or 1.0),
        attention_factor=d.get("attention_factor"), mscale=d.get("mscale"),
        mscale_all_dim=d.get("mscale_all_dim"), truncate=bool(d.get("truncate", True)))
  except ValueError as e:
    raise ValueError(f"{where}: {e}") from None


@dataclasses.dataclass(frozen=True)
class Olmo3Config:
  """Every architectural field of OLMo3, plus param/compute dtypes (not part of the HF config)."""
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_hidden_layers: int
  num_attention_heads: int
  num_key_value_heads: int
  max_position_embeddings: int
  rms_norm_eps: float
  sliding_window: int | None
  layer_types: tuple[str, ...]
  rope_sliding: RopeConfig
  rope_full: RopeConfig
  head_dim: int | None = None
  pad_token_id: int | None = None
  eos_token_id: int | None = None
  bos_token_id: int | None = None
  tie_word_embeddings: bool = False
  attention_bias: bool = False
  hidden_act: str = "silu"
  initializer_range: float = 0.02
  param_dtype: str = "float32"
  dtype: str = "float32"
  # Rows of the embedding / LM head are padded to a multiple of this so the vocab axis divides
  # any mesh; callers never see it (logits keep `vocab_size`).
  vocab_pad_multiple: int = 128

  def __post_init__(self):
    def positive(name):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"Olmo3Config.{name} must be a positive integer, got {value!r}")
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "num_key_value_heads", "max_position_embeddings"):
      positive(name)
    if self.head_dim is None:
      if self.hidden_size % self.num_attention_heads:
        raise ValueError(f"Olmo3Config.hidden_size ({self.hidden_size}) is not divisible by "
                         f"num_attention_heads ({self.num_attention_heads})")
      object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
    positive("head_dim")
    if self.num_attention_heads % self.num_key_value_heads:
      raise ValueError(f"Olmo3Config.num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                       f"num_key_value_heads ({self.num_key_value_heads})")
    if self.head_dim % 2:
      raise ValueError(f"Olmo3Config.head_dim must be even for RoPE, got {self.head_dim}")
    if not (isinstance(self.rms_norm_eps, (float, int)) and self.rms_norm_eps > 0):
      raise ValueError(f"Olmo3Config.rms_norm_eps must be positive, got {self.rms_norm_eps!r}")
    object.__setattr__(self, "layer_types", tuple(self.layer_types))
    if len(self.layer_types) != self.num_hidden_layers:
      raise ValueError(f"Olmo3Config.layer_types has {len(self.layer_types)} entries, "
                       f"num_hidden_layers is {self.num_hidden_layers}")
    for i, t in enumerate(self.layer_types):
      if t not in (SLIDING, FULL):
        raise ValueError(f"Olmo3Config.layer_types[{i}] = {t!r}; expected {SLIDING!r} or {FULL!r}")
    if SLIDING in self.layer_types and (not self.sliding_window or self.sliding_window <= 0):
      raise ValueError(f"Olmo3Config.sliding_window must be positive when sliding layers exist, "
                       f"got {self.sliding_window!r}")
    if self.tie_word_embeddings:
      raise ValueError("Olmo3Config.tie_word_embeddings=True is not supported (OLMo3 is untied)")
    if self.attention_bias:
      raise ValueError("Olmo3Config.attention_bias=True is not supported (OLMo3 has no biases)")
    if self.hidden_act != "silu":
      raise ValueError(f"Olmo3Config.hidden_act must be 'silu', got {self.hidden_act!r}")
    as_dtype(self.param_dtype)
    as_dtype(self.dtype)

  # --- derived
  @property
  def padded_vocab_size(self) -> int:
    m = self.vocab_pad_multiple
    return -(-self.vocab_size // m) * m

  def rope_for(self, layer: int) -> RopeConfig:
    return self.rope_full if self.layer_types[layer] == FULL else self.rope_sliding

  def window_for(self, layer: int) -> int | None:
    return self.sliding_window if self.layer_types[layer] == SLIDING else None

  def num_params(self) -> int:
    """Parameter count in the HF layout (true vocab, no sharding padding)."""
    d, f, h, kv, hd = (self.hidden_size, self.intermediate_size, self.num_attention_heads,
                       self.num_key_value_heads, self.head_dim)
    attn = d * h * hd * 2 + d * kv * hd * 2 + h * hd + kv * hd
    block = attn + 3 * d * f + 2 * d
    return self.num_hidden_layers * block + 2 * self.vocab_size * d + d

  def replace(self, **kw) -> "Olmo3Config":
    return dataclasses.replace(self, **kw)

  # --- HF config.json
  _REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
               "num_attention_heads", "rms_norm_eps")

  @classmethod
  def from_hf(cls, path_or_dict: str | os.PathLike | Mapping[str, Any], **overrides) -> "Olmo3Config":
    """Parses a HF OLMo3 `config.json` (a path to it, to its directory, or its dict).

    Reads the three RoPE encodings found in the wild: legacy `rope_scaling` + `rope_theta`
    (scaling on full-attention layers only), `rope_parameters` nested per layer type, and flat
    `rope_parameters` (written by transformers 5.0-5.12), which we read as the scaling being
    on full-attention layers only, as the model was trained. Never relies on class defaults
    for eps and theta.
    """
    where = "config.json"
    if isinstance(path_or_dict, Mapping):
      d = dict(path_or_dict)
    else:
      p = os.fspath(path_or_dict)
      if os.path.isdir(p):
        p = os.path.join(p, "config.json")
      where = p
      if not os.path.exists(p):
        raise FileNotFoundError(f"{p}: no config.json")
      try:
        with open(p) as f:
          d = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from None
    if d.get("model_type") not in (None, "olmo3"):
      raise ValueError(f"{where}: model_type is {d.get('model_type')!r}, expected 'olmo3'")
    missing = [k for k in cls._REQUIRED if d.get(k) is None]
    if missing:
      raise ValueError(f"{where}: missing required field(s) {missing}")
    n = d["num_hidden_layers"]
    layer_types = d.get("layer_types") or [FULL if (i + 1) % 4 == 0 else SLIDING for i in range(n)]
    top_theta = d.get("rope_theta")
    rp = d.get("rope_parameters")
    if rp and (SLIDING in rp or FULL in rp):  # nested per layer type
      sliding = _rope_from_dict(rp.get(SLIDING) or {}, where=f"{where}: rope_parameters.{SLIDING}",
                                default_theta=top_theta)
      full = _rope_from_dict(rp.get(FULL) or {}, where=f"{where}: rope_parameters.{FULL}",
                             default_theta=top_theta)
    elif rp:  # flat: scaling applies to full-attention layers only, as in training
      full = _rope_from_dict(rp, where=f"{where}: rope_parameters", default_theta=top_theta)
      sliding = RopeConfig(theta=full.theta)
    else:  # legacy
      if top_theta is None:
        raise ValueError(f"{where}: missing required field 'rope_theta' (no rope_parameters either)")
      sliding = RopeConfig(theta=float(top_theta))
      scaling = d.get("rope_scaling")
      full = (_rope_from_dict(scaling, where=f"{where}: rope_scaling", default_theta=top_theta)
              if scaling else RopeConfig(theta=float(top_theta)))
    eos = d.get("eos_token_id")
    if isinstance(eos, (list, tuple)):
      eos = eos[0] if eos else None
    kwargs = dict(
        vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
        intermediate_size=d["intermediate_size"], num_hidden_layers=n,
        num_attention_heads=d["num_attention_heads"],
        num_key_value_heads=d.get("num_key_value_heads") or d["num_attention_heads"],
        head_dim=d.get("head_dim"),
        max_position_embeddings=d.get("max_position_embeddings") or 4096,
        rms_norm_eps=float(d["rms_norm_eps"]), sliding_window=d.get("sliding_window"),
        layer_types=tuple(layer_types), rope_sliding=sliding, rope_full=full,
        pad_token_id=d.get("pad_token_id"), eos_token_id=eos, bos_token_id=d.get("bos_token_id"),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
        attention_bias=bool(d.get("attention_bias", False)), hidden_act=d.get("hidden_act", "silu"),
        initializer_range=float(d.get("initializer_range", 0.02)))
    kwargs.update(overrides)
    try:
      return cls(**kwargs)
    except ValueError as e:
      raise ValueError(f"{where}: {e}") from None

  def to_hf(self) -> dict:
    """A config.json dict (nested `rope_parameters`) that transformers>=5.13 loads to this model."""
    return {
        "architectures": ["Olmo3ForCausalLM"], "model_type": "olmo3",
        "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_hidden_layers,
        "num_attention_heads": self.num_attention_heads,
        "num_key_value_heads": self.num_key_value_heads,
        **({"head_dim": self.head_dim} if self.head_dim != self.hidden_size // self.num_attention_heads else {}),
        "max_position_embeddings": self.max_position_embeddings, "rms_norm_eps": self.rms_norm_eps,
        "sliding_window": self.sliding_window, "layer_types": list(self.layer_types),
        "rope_parameters": {SLIDING: self.rope_sliding.to_hf(), FULL: self.rope_full.to_hf()},
        "pad_token_id": self.pad_token_id, "eos_token_id": self.eos_token_id,
        "bos_token_id": self.bos_token_id, "tie_word_embeddings": False, "attention_bias": False,
        "attention_dropout": 0.0, "hidden_act": "silu", "initializer_range": self.initializer_range,
        "use_cache": True, "torch_dtype": self.param_dtype, "dtype": self.param_dtype,
    }

  def to_dict(self) -> dict:
    """JSON-able dict of every field (used in checkpoint metadata)."""
    d = dataclasses.asdict(self)
    d["layer_types"] = list(self.layer_types)
    return d

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "Olmo3Config":
    d = dict(d)
    d["rope_sliding"] = RopeConfig(**d["rope_sliding"])
    d["rope_full"] = RopeConfig(**d["rope_full"])
    d["layer_types"] = tuple(d["layer_types"])
    return cls(**d)


def default_layer_types(n: int) -> tuple[str, ...]:
  return tuple(FULL if (i + 1) % 4 == 0 else SLIDING for i in range(n))


def olmo3_7b(**overrides) -> Olmo3Config:
  """OLMo3-7B (stage 1-2 form: no YaRN). Pass `yarn=True` for the stage-3 / main form."""
  yarn = overrides.pop("yarn", False)
  full = (RopeConfig(theta=500000.0, rope_type="yarn", factor=8.0, original_max_position_embeddings=8192,
                     beta_fast=32.0, beta_slow=1.0, attention_factor=0.1 * math.log(8) + 1)
          if yarn else RopeConfig(theta=500000.0))
  cfg = dict(vocab_size=100278, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
             num_attention_heads=32, num_key_value_heads=32,
             max_position_embeddings=65536 if yarn else 8192, rms_norm_eps=1e-6,
             sliding_window=4096, layer_types=default_layer_types(32),
             rope_sliding=RopeConfig(theta=500000.0), rope_full=full,
             pad_token_id=100277, eos_token_id=100257, bos_token_id=None)
  cfg.update(overrides)
  return Olmo3Config(**cfg)


def tiny(**overrides) -> Olmo3Config:
  """A 4-layer test size (3 sliding + 1 full, GQA) that runs in milliseconds on CPU."""
  cfg = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
             rms_norm_eps=1e-6, sliding_window=8, layer_types=default_layer_types(4),
             rope_sliding=RopeConfig(theta=500000.0), rope_full=RopeConfig(theta=500000.0),
             pad_token_id=0, eos_token_id=1, bos_token_id=None)
  cfg.update(overrides)
  return Olmo3Config(**cfg)


PRESETS = {"olmo3_7b": olmo3_7b, "olmo3_7b_yarn": lambda **kw: olmo3_7b(yarn=True, **kw), "tiny": tiny}
