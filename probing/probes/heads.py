"""Probe heads (Flax NNX) that map a checkpoint's activations of a question to a pass@1 logit.

Every probe takes a batch dict and returns logits [B]:
  x [B, L, F]          pooled states of L layers (standardized; F = D, or 2D for 'last+mean');
  tokens [B, C, D]     one layer's states of the last C prompt tokens, right-aligned, and
  tokens_mask [B, C]   which of them are real tokens;
  nll [B, 3]           gold-answer NLL features (mean, sum, log(1 - exp(-sum)); standardized);
  nll_logit [B]        logit(p_ref) = -sum - log(1 - exp(-sum)), raw (hybrid with `nll_anchor`);
  task [B] int32       task index, for the optional shared head with a task embedding.

Families:
  linear     logistic regression on the flattened pooled states (one layer, or several
             concatenated).
  mlp        softmax-weighted mix of the L layers' pooled states (learned layer weights),
             one hidden layer (GELU), linear output.
  attention  `n_queries` learned queries attend (masked softmax) over one layer's token
             states through learned key/value projections; the attended values feed the head.
  submodel   our reading of the paper's "submodel probe": a copy of the checkpoint's own next
             `submodel_blocks` OLMo3 blocks after the probed layer (hidden state l feeds
             `blocks[l]`, so blocks l .. l+n-1), initialized from the checkpoint's weights
             (`load_submodel_blocks`) and run on the probed layer's *raw* (unstandardized)
             token states, which is the input they were trained on. Choices: the blocks see
             only the last C prompt tokens (positions renumbered from 0; RoPE is relative, so
             only the lost earlier context differs); their output is RMS-normalized (learned
             scale) and pooled as [last token, masked mean] into the head; the blocks are
             fine-tuned at `block_lr_scale` x the head's lr without weight decay, or only their
             norms are ('norms'), or they stay frozen ('none'); compute is float32. The copy
             belongs to the probe: applied to a later checkpoint it reads that checkpoint's
             token states but keeps its own (earlier) blocks, which is what "earlier predicts
             later despite weight drift" tests.
  hybrid     any base family above (`base`) plus the NLL features concatenated into its head.
             With `nll_anchor`, the logit also gets alpha * logit(p_ref), alpha a learned scalar
             starting at 1: p_ref = exp(-sum) is the chance that sampling at T = 1 reproduces the
             reference, which is pass@1 when the answer is unique, so the head starts from that
             map and learns a correction (and alpha < 1 where many answers are right).
A shared head across tasks adds a per-task bias and, with `task_embed_dim > 0`, a learned task
embedding concatenated to the representation.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.olmo3 import Block, Olmo3Config, rms_norm
from probing.probes.data import NLL_FEATURES

FAMILIES = ("linear", "mlp", "attention", "submodel", "hybrid")
TOKEN_FAMILIES = ("attention", "submodel")


class ProbeError(ValueError):
  """A probe that cannot be built or applied to the given inputs; the message says why."""


class FamilyInputs:
  """What a family reads, from its `family` and `base` fields (ProbeSpec and ProbeConfig): the
  one answer to "which inputs does this probe need"."""

  @property
  def encoder(self) -> str:
    return self.base if self.family == "hybrid" else self.family

  @property
  def uses_x(self) -> bool:
    return self.encoder in ("linear", "mlp")

  @property
  def uses_tokens(self) -> bool:
    return self.encoder in TOKEN_FAMILIES

  @property
  def uses_nll(self) -> bool:
    return self.family == "hybrid"


@dataclasses.dataclass(frozen=True)
class ProbeSpec(FamilyInputs):
  """Shapes and architecture choices; everything needed to rebuild a probe from its card."""
  family: str
  n_layers: int = 1  # L of x
  feature_dim: int = 0  # F of x
  token_dim: int = 0  # D of tokens
  hidden: int = 128
  n_tasks: int = 1
  task_embed_dim: int = 0
  n_queries: int = 4
  nll_anchor: bool = False  # hybrid: + alpha * logit(p_ref), alpha learned from 1
  base: str = "linear"  # hybrid only
  submodel_layer: int = 0  # hidden-state index the submodel reads
  submodel_blocks: int = 2
  olmo_config: Mapping[str, Any] | None = None  # submodel only (Olmo3Config.to_dict())

  def __post_init__(self):
    if self.family not in FAMILIES:
      raise ProbeError(f"family {self.family!r} unknown; expected one of {FAMILIES}")
    if self.family == "hybrid" and self.base not in FAMILIES[:4]:
      raise ProbeError(f"hybrid base {self.base!r} must be one of {FAMILIES[:4]}")
    if self.nll_anchor and self.family != "hybrid":
      raise ProbeError(f"nll_anchor needs the gold-answer NLL: only the hybrid has it, not {self.family!r}")

  def to_dict(self) -> dict:
    return dataclasses.asdict(self) | {"olmo_config": None if self.olmo_config is None
                                       else dict(self.olmo_config)}


class LinearEncoder(nnx.Module):
  def __init__(self, spec: ProbeSpec, *, rngs: nnx.Rngs):
    self.dim = spec.n_layers * spec.feature_dim

  def __call__(self, batch):
    x = batch["x"]
    return x.reshape(x.shape[0], -1)


class MLPEncoder(nnx.Module):
  def __init__(self, spec: ProbeSpec, *, rngs: nnx.Rngs):
    self.layer_logits = nnx.Param(jnp.zeros((spec.n_layers,)))
    self.hidden = nnx.Linear(spec.feature_dim, spec.hidden, rngs=rngs)
    self.dim = spec.hidden

  def __call__(self, batch):
    w = jax.nn.softmax(self.layer_logits[...])
    mixed = jnp.einsum("blf,l->bf", batch["x"], w)
    return jax.nn.gelu(self.hidden(mixed))


class AttentionEncoder(nnx.Module):
  def __init__(self, spec: ProbeSpec, *, rngs: nnx.Rngs):
    d, h = spec.token_dim, spec.hidden
    self.key = nnx.Linear(d, h, use_bias=False, rngs=rngs)
    self.value = nnx.Linear(d, h, rngs=rngs)
    self.queries = nnx.Param(jax.random.normal(rngs.params(), (spec.n_queries, h)) / np.sqrt(h))
    self.dim = spec.n_queries * h

  def __call__(self, batch):
    tok, mask = batch["tokens"], batch["tokens_mask"]
    k, v = self.key(tok), self.value(tok)
    scores = jnp.einsum("qh,bch->bqc", self.queries[...], k) / np.sqrt(k.shape[-1])
    scores = jnp.where(mask[:, None, :], scores, jnp.finfo(jnp.float32).min)
    attn = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("bqc,bch->bqh", attn, v).reshape(tok.shape[0], -1)


def submodel_config(spec: ProbeSpec) -> Olmo3Config:
  if spec.olmo_config is None:
    raise ProbeError("submodel probe needs the checkpoint's Olmo3Config (spec.olmo_config)")
  return Olmo3Config.from_dict(spec.olmo_config).replace(param_dtype="float32", dtype="float32")


def submodel_layers(spec: ProbeSpec) -> list[int]:
  """Indices of the checkpoint blocks the submodel copies."""
  n = submodel_config(spec).num_hidden_layers
  l = spec.submodel_layer
  if not 0 <= l < n:
    raise ProbeError(f"submodel probe reads hidden state {l}, but only blocks 0..{n - 1} exist "
                     f"after it (hidden state {n} is the last one)")
  return list(range(l, min(l + spec.submodel_blocks, n)))


class SubmodelEncoder(nnx.Module):
  def __init__(self, spec: ProbeSpec, *, rngs: nnx.Rngs):
    cfg = submodel_config(spec)
    self.blocks = nnx.List([Block(cfg, i, rngs=rngs) for i in submodel_layers(spec)])
    self.norm = nnx.Param(jnp.ones((cfg.hidden_size,)))
    self.eps = cfg.rms_norm_eps
    self.dim = 2 * cfg.hidden_size

  def __call__(self, batch):
    tok, mask = batch["tokens"].astype(jnp.float32), batch["tokens_mask"]
    positions = jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1, 0)
    h = tok
    for block in self.blocks:
      h = block(h, positions, mask, None)
    h = rms_norm(h, self.norm[...], self.eps)
    m = mask.astype(jnp.float32)[:, :, None]
    mean = (h * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1.0)
    return jnp.concatenate([h[:, -1], mean], axis=-1)


_ENCODERS = {"linear": LinearEncoder, "mlp": MLPEncoder, "attention": AttentionEncoder,
             "submodel": SubmodelEncoder}


class Probe(nnx.Module):
  """Encoder (per family) -> [representation, nll?, task embedding?] -> logit (+ task bias)."""

  def __init__(self, spec: ProbeSpec, *, rngs: nnx.Rngs):
    self.uses_nll = spec.uses_nll  # not the spec itself: module attributes must hash
    self.encoder = _ENCODERS[spec.encoder](spec, rngs=rngs)
    dim = self.encoder.dim + (NLL_FEATURES if spec.uses_nll else 0) + spec.task_embed_dim
    self.task_embed = (nnx.Embed(spec.n_tasks, spec.task_embed_dim, rngs=rngs)
                       if spec.task_embed_dim else None)
    self.task_bias = nnx.Param(jnp.zeros((spec.n_tasks,)))
    self.nll_alpha = nnx.Param(jnp.ones(())) if spec.nll_anchor else None
    self.out = nnx.Linear(dim, 1, kernel_init=nnx.initializers.zeros, rngs=rngs)

  def __call__(self, batch: Mapping[str, jax.Array]) -> jax.Array:
    parts = [self.encoder(batch)]
    if self.uses_nll:
      parts.append(batch["nll"])
    if self.task_embed is not None:
      parts.append(self.task_embed(batch["task"]))
    rep = jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
    logit = self.out(rep)[:, 0]
    if self.nll_alpha is not None:
      logit = logit + self.nll_alpha[...] * batch["nll_logit"]
    return logit + self.task_bias[...][batch["task"]]


def build_probe(spec: ProbeSpec, seed: int = 0) -> Probe:
  return Probe(spec, rngs=nnx.Rngs(seed))


def check_inputs(spec: ProbeSpec, inputs: Mapping[str, np.ndarray], where: str = "inputs") -> None:
  """Raises ProbeError when inputs do not fit the probe's widths (e.g. another model's features)."""
  if spec.uses_x:
    x = inputs.get("x")
    if x is None:
      raise ProbeError(f"{where}: the {spec.family} probe needs pooled features 'x'")
    if tuple(x.shape[1:]) != (spec.n_layers, spec.feature_dim):
      raise ProbeError(f"{where}: pooled features have shape [N, {x.shape[1]}, {x.shape[2]}] "
                       f"(layers, width); the probe was trained on [N, {spec.n_layers}, "
                       f"{spec.feature_dim}]")
  if spec.uses_tokens:
    t = inputs.get("tokens")
    if t is None:
      raise ProbeError(f"{where}: the {spec.family} probe needs token states ('tokens'); "
                       "extract with token_layer set")
    if t.shape[-1] != spec.token_dim:
      raise ProbeError(f"{where}: token states have width {t.shape[-1]}; the probe was trained "
                       f"on width {spec.token_dim}")
  if spec.uses_nll and inputs.get("nll") is None:
    raise ProbeError(f"{where}: the hybrid probe needs gold-answer NLL; extract with hybrid=True")


def param_labels(params) -> Any:
  """'block_norm' / 'block' for the submodel's copied blocks, 'head' for the rest."""
  def label(path, _):
    s = jax.tree_util.keystr(path)
    if "['blocks']" not in s:
      return "head"
    return "block_norm" if "norm" in s else "block"
  return jax.tree_util.tree_map_with_path(label, params)


def flat_params(probe: Probe) -> dict[str, np.ndarray]:
  """'a/b/0/c' -> array, for saving (string keys survive any checkpoint format)."""
  return {"/".join(map(str, p)): np.asarray(v.get_value())
          for p, v in nnx.to_flat_state(nnx.state(probe, nnx.Param))}


def set_flat_params(probe: Probe, flat: Mapping[str, Any]) -> Probe:
  state = nnx.state(probe, nnx.Param)
  items = []
  for p, v in nnx.to_flat_state(state):
    key = "/".join(map(str, p))
    if key not in flat:
      raise ProbeError(f"saved probe lacks param {key}")
    value = np.asarray(flat[key])
    if value.shape != v.get_value().shape:
      raise ProbeError(f"saved param {key} has shape {value.shape}, expected {v.get_value().shape}")
    items.append((p, v.replace(jnp.asarray(value))))
  nnx.update(probe, nnx.State.from_flat_path(items))
  return probe
