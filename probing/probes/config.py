"""Typed probe settings: what a probe is (`ProbeConfig`) and how it is fitted (`TrainConfig`).

Config files (`configs/probes/*.py`) fill them from their `head` and `train` sections through
`configs_from`; both are frozen dataclasses, so an unknown or misspelt field raises.
"""
from __future__ import annotations

import dataclasses

from probing.probes import heads as heads_lib
from probing.probes.data import CENTERINGS


@dataclasses.dataclass(frozen=True)
class ProbeConfig(heads_lib.FamilyInputs):
  """What a probe is: its family, the features it reads and its architecture (`config.head`).

  Unknown fields raise (a dataclass), so a misspelt field in a config file is an error.
  """
  family: str = "linear"  # linear | mlp | attention | submodel | hybrid
  layers: tuple[int, ...] = ()  # pooled hidden states read by linear/mlp (0 = embeddings)
  pooling: str = "mean"  # 'last', 'mean' or 'last+mean'
  token_layer: int | None = None  # attention/submodel: must equal the store's token layer
  hidden: int = 128  # mlp/attention width
  n_queries: int = 4  # attention: learned queries
  base: str = "linear"  # hybrid: the family whose head also gets the NLL
  submodel_blocks: int = 2  # submodel: checkpoint blocks copied after token_layer
  per_task_heads: bool = False  # one head per task instead of a shared head
  task_embed_dim: int = 8  # shared head: learned task embedding width (0 = bias only)
  nll_anchor: bool = False  # hybrid: the logit starts from logit(p_ref) (probing.probes.heads)
  center: str = "none"  # 'none' | 'checkpoint_task': pooled features centered per cell (center_cells)

  def __post_init__(self):
    object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
    if self.family not in heads_lib.FAMILIES:
      raise ValueError(f"family {self.family!r} unknown; expected one of {heads_lib.FAMILIES}")
    if self.center not in CENTERINGS:
      raise ValueError(f"center {self.center!r}: expected one of {CENTERINGS}")
    if self.center != "none" and not self.uses_x:
      raise ValueError(f"center={self.center!r} centers pooled features; the {self.encoder} "
                       "encoder reads token states")

  def data_kwargs(self, *, nll: bool | None = None) -> dict:
    """`build_data` arguments that load what this probe reads (`nll=True` also loads the NLL
    for baselines)."""
    return dict(layers=self.layers, pooling=self.pooling, tokens=self.uses_tokens,
                nll=self.uses_nll if nll is None else (nll or self.uses_nll))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How a probe is fitted (`config.train`); unknown fields raise."""
  lr: float = 3e-3  # peak learning rate of the head
  wd: float = 1e-3  # decoupled weight decay on head kernels
  epochs: int = 100  # upper bound; early stopping usually ends sooner
  batch: int = 512  # rows per minibatch (0: full batch)
  eval_every: int = 1  # epochs per validation round
  patience: int = 5  # validation rounds without improvement before stopping
  loss: str = "bce"  # 'bce' | 'mse' against the soft pass@1 c/k
  # + rank_weight x a within-cell pairwise (RankNet) term: the metric ranks questions inside each
  # (checkpoint, task) cell, and the pointwise loss spends capacity on cell-level accuracy.
  rank_weight: float = 0.0
  schedule: str = "cosine"  # 'cosine' | 'constant'
  submodel_train: str = "all"  # submodel blocks: 'all' | 'norms' | 'none' (frozen)
  block_lr_scale: float = 0.1  # submodel blocks' lr relative to the head's
  seed: int = 0  # head initialization and minibatch order
  validity_factor: float = 4.0  # card: predictions vouched for up to this x the last trained step

  def __post_init__(self):
    if self.validity_factor < 1:
      raise ValueError(f"validity_factor {self.validity_factor}: must be >= 1 (the window ends at or after "
                       "the last trained step)")
    if not self.rank_weight >= 0:
      raise ValueError(f"rank_weight {self.rank_weight}: must be >= 0")
    if self.loss not in ("bce", "mse"):
      raise ValueError(f"loss {self.loss!r}: expected 'bce' or 'mse'")
    if self.schedule not in ("cosine", "constant"):
      raise ValueError(f"schedule {self.schedule!r}: expected 'cosine' or 'constant'")
    if self.submodel_train not in ("all", "norms", "none"):
      raise ValueError(f"submodel_train {self.submodel_train!r}: expected 'all', 'norms' or 'none'")
    object.__setattr__(self, "eval_every", max(1, int(self.eval_every)))


def configs_from(c) -> tuple[ProbeConfig, TrainConfig]:
  """(ProbeConfig, TrainConfig) from a probe config file's `head` and `train` sections."""
  def typed(cls, section, name):
    try:
      return cls(**dict(section))
    except TypeError as e:
      known = ", ".join(f.name for f in dataclasses.fields(cls))
      raise ValueError(f"config.{name}: {e} (known fields: {known})") from None
  return typed(ProbeConfig, c.head, "head"), typed(TrainConfig, c.train, "train")
