"""The submodel probe's borrowed blocks: copied from the checkpoint it was trained on.

The blocks belong to the probe: applied to a later checkpoint it reads that checkpoint's token
states but keeps its own (earlier) blocks. File formats are `models/`' business: an orbax
checkpoint is loaded through `models.checkpoint`, a HF directory is read block by block through
`models.convert.read_blocks`.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from flax import nnx

from models import checkpoint as model_checkpoint
from models import convert
from models.config import Olmo3Config
from probing.probes.heads import Probe, ProbeError, ProbeSpec, SubmodelEncoder, submodel_config, submodel_layers


def source_config(source) -> Olmo3Config:
  """The Olmo3Config of a model, an orbax checkpoint (models.checkpoint) or a HF directory."""
  if not isinstance(source, (str, os.PathLike)):
    return source.config
  return model_checkpoint.config_of(source)


def load_submodel_blocks(probe: Probe, spec: ProbeSpec, source) -> None:
  """Copies the checkpoint's blocks into a submodel probe (in place, cast to float32).

  `source` is an `Olmo3` model, an orbax checkpoint dir (loaded whole: small models), or a HF
  checkpoint dir from which only those blocks' tensors are read.
  """
  enc = probe.encoder
  if not isinstance(enc, SubmodelEncoder):
    raise ProbeError(f"{spec.family} probe has no submodel blocks to load")
  layers = submodel_layers(spec)
  width = source_config(source).hidden_size
  if width != spec.token_dim:
    raise ProbeError(f"{source if isinstance(source, (str, os.PathLike)) else 'source model'} has width "
                     f"{width}; the probe expects {spec.token_dim}")
  if isinstance(source, (str, os.PathLike)) and not model_checkpoint.is_checkpoint(source):
    states = convert.read_blocks(source, submodel_config(spec), layers)
  else:
    model = model_checkpoint.load(source) if isinstance(source, (str, os.PathLike)) else source
    states = {i: nnx.state(model.blocks[i], nnx.Param) for i in layers}
  for j, i in enumerate(layers):
    cast = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), states[i])
    nnx.update(enc.blocks[j], cast)
