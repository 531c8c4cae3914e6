"""Training probe heads with optax: the jitted loop, trained probes, saving and loading.

`train_probe(data, split, config)` fits one family (`probing.probes`) on `split.train` rows of
`ProbeData` (`probing.probe_data`: joined features + labels, hash-stable question split and
earlier-predicts-later checkpoint split). Standardization statistics come from training rows
only; early stopping (model selection) uses validation rows only; test rows are never passed
to the trainer (`tests/test_probes.py` poisons them to prove it). The whole loop runs in one
jit: a `lax.while_loop` over validation rounds (stopping after `patience` rounds without
improvement), each a `lax.scan` over epochs and minibatches, with adamw (decoupled weight
decay on kernels) on BCE against the soft pass@1 c/k, or MSE. Heads are one shared head with a
task embedding, or one per task. Baselines on the same splits: `probing.baselines`.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from probing import probes as probes_lib
from probing.baselines import baselines, evaluate, sklearn_logreg, task_accuracy, to_records  # noqa: F401
from probing.feature_store import FeatureError, code_version
from probing.probe_data import (CENTERINGS, ProbeData, Split, build_data, center_cells,  # noqa: F401
                                default_train_upto, fit_standardizer, make_split, read_labels,
                                split_unit, standardize)


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
  """A probe family and its training hyper-parameters (configs/probes/*.py fill these)."""
  family: str = "linear"
  layers: tuple[int, ...] = ()
  pooling: str = "mean"  # 'last', 'mean' or 'last+mean'
  token_layer: int | None = None  # attention/submodel: must equal the store's token layer
  hidden: int = 128
  n_queries: int = 4
  base: str = "linear"  # hybrid
  submodel_blocks: int = 2
  submodel_train: str = "all"  # 'all' | 'norms' | 'none'
  block_lr_scale: float = 0.1
  per_task_heads: bool = False
  task_embed_dim: int = 8
  nll_anchor: bool = False  # hybrid: start from logit(p_ref) (probing.probes)
  lr: float = 3e-3
  wd: float = 1e-3
  epochs: int = 100
  batch: int = 512  # 0: full batch
  eval_every: int = 1  # epochs per validation round
  patience: int = 5  # validation rounds without improvement before stopping
  loss: str = "bce"  # 'bce' | 'mse'
  schedule: str = "cosine"  # 'cosine' | 'constant'
  center: str = "none"  # 'none' | 'checkpoint_task': pooled features centered per cell (center_cells)
  seed: int = 0

  def __post_init__(self):
    object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
    if self.family not in probes_lib.FAMILIES:
      raise ValueError(f"family {self.family!r} unknown; expected one of {probes_lib.FAMILIES}")
    if self.loss not in ("bce", "mse"):
      raise ValueError(f"loss {self.loss!r}: expected 'bce' or 'mse'")
    if self.submodel_train not in ("all", "norms", "none"):
      raise ValueError(f"submodel_train {self.submodel_train!r}: expected 'all', 'norms' or 'none'")
    if self.center not in CENTERINGS:
      raise ValueError(f"center {self.center!r}: expected one of {CENTERINGS}")
    if self.center != "none" and self.encoder not in ("linear", "mlp"):
      raise ValueError(f"center={self.center!r} centers pooled features; the {self.encoder} "
                       "encoder reads token states")

  @property
  def encoder(self) -> str:
    return self.base if self.family == "hybrid" else self.family

  @classmethod
  def from_mapping(cls, m: Mapping[str, Any]) -> "ProbeConfig":
    """Known fields of a (flattened) ConfigDict; others (data paths, extraction) are ignored."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: (tuple(v) if k == "layers" else v) for k, v in dict(m).items() if k in names})


# ----------------------------------------------------------------------------- the jitted loop


@dataclasses.dataclass(frozen=True)
class _Hyper:
  lr: float
  wd: float
  epochs: int
  batch: int
  eval_every: int
  patience: int
  loss: str
  schedule: str
  submodel_train: str
  block_lr_scale: float


def _optimizer(hp: _Hyper, params, steps: int) -> optax.GradientTransformation:
  sched = (optax.cosine_decay_schedule(hp.lr, max(steps, 1), alpha=0.1) if hp.schedule == "cosine"
           else optax.constant_schedule(hp.lr))
  labels = probes_lib.param_labels(params)
  decay = jax.tree.map(lambda a, lab: a.ndim >= 2 and lab == "head", params, labels)
  block = optax.scale_by_learning_rate(lambda t: hp.block_lr_scale * sched(t))
  frozen = optax.set_to_zero()
  return optax.chain(
      optax.scale_by_adam(), optax.add_decayed_weights(hp.wd, mask=decay),
      optax.multi_transform({"head": optax.scale_by_learning_rate(sched),
                             "block": block if hp.submodel_train == "all" else frozen,
                             "block_norm": frozen if hp.submodel_train == "none" else block}, labels))


def _loss(z, y, w, kind: str):
  """Mean over real rows (w = 0 marks padding rows)."""
  per_row = (optax.sigmoid_binary_cross_entropy(z, y) if kind == "bce"
             else jnp.square(jax.nn.sigmoid(z) - y))
  return (per_row * w).sum() / jnp.maximum(w.sum(), 1.0)


def _bucket(n: int) -> int:
  """Row counts padded to few sizes (powers of two, then multiples of 1024): fewer compiles."""
  return max(64, 1 << (n - 1).bit_length()) if n <= 1024 else -(-n // 1024) * 1024


def _pad_rows(d: Mapping[str, np.ndarray], size: int) -> dict[str, jax.Array]:
  n = len(d["y"])
  out = {k: jnp.asarray(np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)]))
         for k, v in d.items()}
  out["w"] = jnp.asarray(np.arange(size) < n, jnp.float32)
  return out


@functools.lru_cache(maxsize=64)
def _trainer(graphdef, hp: _Hyper, has_val: bool):
  """The whole training run as one jitted function (cached, so warm calls skip compiling)."""

  def loss_fn(params, rest, batch):
    return _loss(nnx.merge(graphdef, params, rest)(batch), batch["y"], batch["w"], hp.loss)

  def run(params, rest, train, val, key):
    n = train["y"].shape[0]
    bsz = n if hp.batch <= 0 or hp.batch >= n else hp.batch
    nb = -(-n // bsz)
    tx = _optimizer(hp, params, hp.epochs * nb)

    def one_epoch(carry, _):
      p, s, key = carry
      key, sub = jax.random.split(key)
      if nb == 1 and bsz == n:
        idx = jnp.arange(n)[None]
      else:
        idx = jax.random.permutation(sub, n)[jnp.arange(nb * bsz) % n].reshape(nb, bsz)

      def step(c, ix):
        p, s = c
        batch = train if bsz == n else jax.tree.map(lambda a: a[ix], train)
        l, g = jax.value_and_grad(loss_fn)(p, rest, batch)
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), l
      (p, s), losses = jax.lax.scan(step, (p, s), idx)
      return (p, s, key), losses.mean()

    def round_(c):
      p, s, best, best_loss, bad, ep, key, _ = c
      (p, s, key), losses = jax.lax.scan(one_epoch, (p, s, key), None, length=hp.eval_every)
      vl = loss_fn(p, rest, val) if has_val else losses[-1]
      better = vl < best_loss
      best = jax.tree.map(lambda b, q: jnp.where(better, q, b), best, p)
      return (p, s, best, jnp.where(better, vl, best_loss), jnp.where(better, 0, bad + 1),
              ep + hp.eval_every, key, losses[-1])

    init = (params, tx.init(params), params, jnp.inf, 0, 0, key, jnp.nan)
    out = jax.lax.while_loop(lambda c: (c[5] < hp.epochs) & (c[4] < hp.patience), round_, init)
    val_p = jax.nn.sigmoid(nnx.merge(graphdef, out[2], rest)(val)) if has_val else jnp.zeros((0,))
    return out[2], out[3], out[5], out[7], val_p

  return jax.jit(run)


def fit(probe: probes_lib.Probe, train: Mapping[str, np.ndarray], val: Mapping[str, np.ndarray] | None,
        cfg: ProbeConfig) -> tuple[probes_lib.Probe, dict, np.ndarray]:
  """Trains `probe` in place on standardized inputs with targets 'y'.

  Returns the probe (best validation loss), a log, and its predictions on the validation rows.
  """
  hp = _Hyper(cfg.lr, cfg.wd, cfg.epochs, cfg.batch, max(1, cfg.eval_every), cfg.patience, cfg.loss,
              cfg.schedule, cfg.submodel_train, cfg.block_lr_scale)
  graphdef, params, rest = nnx.split(probe, nnx.Param, ...)
  has_val = val is not None and len(val["y"]) > 0
  t0 = time.perf_counter()
  best, best_loss, epochs, last, val_p = _trainer(graphdef, hp, has_val)(
      params, rest, _pad_rows(train, _bucket(len(train["y"]))),
      _pad_rows(val, _bucket(len(val["y"]))) if has_val else {}, jax.random.key(cfg.seed))
  nnx.update(probe, best)
  log = {"best_val_loss" if has_val else "final_train_loss": float(best_loss),
         "epochs_run": int(epochs), "last_train_loss": float(last), "seconds": time.perf_counter() - t0}
  return probe, log, np.asarray(val_p)[:len(val["y"]) if has_val else 0]


@functools.lru_cache(maxsize=64)
def _applier(graphdef):
  return jax.jit(lambda state, batch: jax.nn.sigmoid(nnx.merge(graphdef, state)(batch)))


def apply(probe: probes_lib.Probe, inputs: Mapping[str, np.ndarray], chunk: int | None = None) -> np.ndarray:
  """Predicted p for standardized inputs, in padded row chunks (bounded memory, few compiles).

  The default chunk keeps one chunk's inputs near 256 MiB (token states of a 7B are ~1 MiB a row).
  """
  graphdef, state = nnx.split(probe)
  n = len(inputs["task"])
  if chunk is None:
    row_bytes = sum(v[:1].nbytes for v in inputs.values()) or 1
    chunk = int(min(4096, max(16, 1 << ((2 ** 28 // row_bytes).bit_length() - 1))))
  out = []
  for a in range(0, n, chunk):
    part = {k: v[a:a + chunk] for k, v in inputs.items()}
    m = len(part["task"])
    size = min(_bucket(m), chunk)
    padded = {k: jnp.asarray(np.concatenate([v, np.zeros((size - m,) + v.shape[1:], v.dtype)]))
              for k, v in part.items()}
    out.append(np.asarray(_applier(graphdef)(state, padded))[:m])
  return np.concatenate(out) if out else np.zeros((0,), np.float32)


# ----------------------------------------------------------------------------- trained probes


def _select(inputs: Mapping[str, np.ndarray], spec: probes_lib.ProbeSpec) -> dict[str, np.ndarray]:
  keys = ["task", "y"] + (["x"] if spec.encoder in ("linear", "mlp") else [])
  keys += ["tokens", "tokens_mask"] if spec.uses_tokens else []
  keys += ["nll"] if spec.uses_nll else []
  keys += ["nll_logit"] if spec.nll_anchor else []
  return {k: inputs[k] for k in keys if k in inputs}


@dataclasses.dataclass
class TrainedProbe:
  """Heads ('shared', or one per task), the training-row standardization and the probe card."""
  config: ProbeConfig
  spec: probes_lib.ProbeSpec
  heads: dict[str, probes_lib.Probe]
  stats: dict[str, np.ndarray]
  tasks: list[str]
  card: dict

  def inputs(self, data: ProbeData, rows=None, center_rows=None) -> dict[str, np.ndarray]:
    """Standardized, width-checked inputs (+ task index) of `rows` of data.

    With `center='checkpoint_task'` the pooled features are first centered per cell, on the mean
    of the `center_rows` among them (default: all; see `probe_data.center_cells`).
    """
    if center_rows is not None and rows is not None:
      center_rows = np.asarray(center_rows, bool)[np.asarray(rows)]
    data = data if rows is None else data.subset(rows)
    where = f"features of {sorted(set(data.checkpoint))}"
    probes_lib.check_inputs(self.spec, data.inputs, where=where)
    trained_tok = {f.get("tokenizer_hash") for f in self.card.get("features") or []}
    got_tok = {f.get("tokenizer_hash") for f in data.meta.get("features") or []}
    if trained_tok and got_tok and got_tok != trained_tok:
      raise probes_lib.ProbeError(f"{where}: tokenizer {sorted(map(str, got_tok))} differs from the "
                                  f"one the probe was trained with {sorted(map(str, trained_tok))}")
    unknown = sorted(set(data.task) - set(self.tasks))
    if unknown:
      raise probes_lib.ProbeError(f"tasks {unknown} were not trained on (probe knows {self.tasks})")
    if self.config.center == "checkpoint_task":
      data = center_cells(data, center_rows)
    out = standardize(data.inputs, self.stats)
    if self.spec.nll_anchor:  # raw columns: sum and log(1 - exp(-sum)) (probe_data.nll_features)
      out["nll_logit"] = (-data.inputs["nll"][:, 1] - data.inputs["nll"][:, 2]).astype(np.float32)
    out["task"] = np.asarray([self.tasks.index(t) for t in data.task], np.int32)
    return _select(out, self.spec)

  def predict(self, data: ProbeData, center_rows=None) -> np.ndarray:
    """Predicted pass@1 for every row of data (`center_rows`: see `inputs`)."""
    inputs = self.inputs(data, center_rows=center_rows)
    inputs.pop("y", None)
    if "shared" in self.heads:
      return apply(self.heads["shared"], inputs)
    p = np.full(len(data), np.nan, np.float32)
    for t, head in self.heads.items():
      rows = data.task == t
      if rows.any():
        sub = {k: v[rows] for k, v in inputs.items()}
        sub["task"] = np.zeros(rows.sum(), np.int32)
        p[rows] = apply(head, sub)
    return p

  def save(self, path: str) -> None:
    probes_lib.save(path, self.heads, self.stats, self.card)


def load_probe(path: str) -> TrainedProbe:
  heads, stats, card = probes_lib.load(path)
  return TrainedProbe(ProbeConfig.from_mapping(card["config"]), probes_lib.ProbeSpec(**card["spec"]),
                      heads, stats, list(card["tasks"]), card)


def train_probe(data: ProbeData, split: Split, cfg: ProbeConfig, *, olmo_source=None) -> TrainedProbe:
  """Trains cfg.family on split.train (early stopping on split.val); test rows are never read.

  `olmo_source` (an Olmo3 model or HF checkpoint dir) supplies the submodel probe's blocks.
  """
  tr, va = np.asarray(split.train, bool), np.asarray(split.val, bool)
  if not tr.any():
    raise ValueError("the training split is empty (check train_upto_step and test_frac)")
  for name, rows in (("train", tr), ("validation", va)):
    if np.isnan(data.y[rows]).any():
      raise FeatureError(f"{name} rows without labels, e.g. question "
                         f"{data.question_id[rows][np.isnan(data.y[rows])][0]!r}")
  enc = cfg.encoder
  need = {"x": enc in ("linear", "mlp"), "tokens": enc in probes_lib.TOKEN_FAMILIES,
          "nll": cfg.family == "hybrid"}
  for key, needed in need.items():
    if needed and key not in data.inputs:
      raise probes_lib.ProbeError(f"the {cfg.family} probe needs '{key}' inputs; build_data did not "
                                  "load them (layers / tokens=True / nll=True)")
  if need["tokens"] and cfg.token_layer is not None and data.meta["token_layer"] != cfg.token_layer:
    raise FeatureError(f"config token_layer {cfg.token_layer} but the features hold token states "
                       f"of layer {data.meta['token_layer']}")
  train = data.subset(tr)
  stats = fit_standardizer((center_cells(train) if cfg.center == "checkpoint_task" else train).inputs, enc)
  tasks = sorted(set(train.task))
  shared = not cfg.per_task_heads
  olmo_config = None
  if enc == "submodel":
    if olmo_source is None:
      raise probes_lib.ProbeError("the submodel probe needs olmo_source (the checkpoint's model "
                                  "or HF directory) to copy its blocks from")
    olmo_config = probes_lib.source_config(olmo_source).to_dict()
  x, tok = data.inputs.get("x"), data.inputs.get("tokens")
  spec = probes_lib.ProbeSpec(
      family=cfg.family, n_layers=0 if x is None else x.shape[1], feature_dim=0 if x is None else x.shape[2],
      token_dim=0 if tok is None else tok.shape[-1], hidden=cfg.hidden,
      n_tasks=len(tasks) if shared else 1,
      task_embed_dim=cfg.task_embed_dim if shared and len(tasks) > 1 else 0, n_queries=cfg.n_queries,
      nll_anchor=cfg.nll_anchor,
      base=cfg.base, submodel_layer=data.meta.get("token_layer") or 0,
      submodel_blocks=cfg.submodel_blocks, olmo_config=olmo_config)
  trained = TrainedProbe(cfg, spec, {}, stats, tasks, {})
  logs, p_val = {}, np.full(len(data), np.nan, np.float32)
  for name in (["shared"] if shared else tasks):
    rows_tr = tr & (True if shared else data.task == name)
    rows_va = va & (True if shared else data.task == name)
    head = probes_lib.build(spec, cfg.seed)
    if enc == "submodel":
      probes_lib.load_submodel_blocks(head, spec, olmo_source)
    prep = lambda rows: _with_y(trained.inputs(data, rows), data.y[rows], shared)  # noqa: E731
    head, logs[name], p_val[rows_va] = fit(head, prep(rows_tr), prep(rows_va) if rows_va.any() else None,
                                           cfg)
    trained.heads[name] = head
  trained.card = _card(data, split, cfg, spec, stats, tasks, logs, p_val[va] if va.any() else None)
  return trained


def _with_y(inputs: dict, y: np.ndarray, shared: bool) -> dict:
  inputs = dict(inputs, y=y.astype(np.float32))
  if not shared:
    inputs["task"] = np.zeros(len(y), np.int32)
  return inputs


def _card(data, split, cfg, spec, stats, tasks, logs, p_val) -> dict:
  tr, va = np.asarray(split.train, bool), np.asarray(split.val, bool)
  size = sum(v.size for v in stats.values())
  qs = lambda rows: {t: sorted(set(data.question_id[rows & (data.task == t)])) for t in tasks}  # noqa: E731
  val = {"heads": logs}
  if p_val is not None:
    val.update(evaluate(data.subset(va), p_val))
  return {
      "family": cfg.family, "config": dataclasses.asdict(cfg), "spec": spec.to_dict(),
      "layers": list(cfg.layers), "pooling": cfg.pooling, "token_layer": data.meta.get("token_layer"),
      "tasks": tasks, "heads": sorted(logs),
      "standardization": {"fitted_on": "training rows only", "n_rows": int(tr.sum()),
                          "shapes": {k: list(v.shape) for k, v in stats.items()},
                          "values": ({k: v.tolist() for k, v in stats.items()} if size <= 20000
                                     else "in params/ (orbax), too large to inline")},
      "trained_on": {"checkpoints": {c: int(s) for c, s in sorted(set(zip(data.checkpoint[tr], data.step[tr])))},
                     "train_upto_step": split.train_upto_step, "n_train_rows": int(tr.sum()),
                     "n_val_rows": int(va.sum()), "train_questions": qs(tr), "val_questions": qs(va)},
      "validation": val, "features": data.meta.get("features"),
      "code_version": code_version(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}




def train_and_evaluate(data: ProbeData, split: Split, cfg: ProbeConfig, *, olmo_source=None,
                       with_baselines: bool = True, sklearn_c: float = 0.1) -> dict:
  """Trains cfg.family, predicts every row, and evaluates it and the baselines on split.test.

  Returns {'probe': TrainedProbe, 'p': [N] predictions, 'metrics': {...}, 'records': test-row
  prediction records}.
  """
  t0 = time.perf_counter()
  probe = train_probe(data, split, cfg, olmo_source=olmo_source)
  t1 = time.perf_counter()
  p = probe.predict(data)
  metrics = {"family": cfg.family, "train_upto_step": split.train_upto_step,
             "rows": {"train": int(np.sum(split.train)), "val": int(np.sum(split.val)),
                      "test": int(np.sum(split.test))},
             "seconds": {"train": t1 - t0, "predict": time.perf_counter() - t1},
             "probe": evaluate(data, p, split.test), "validation": probe.card["validation"]}
  if with_baselines:
    metrics["baselines"] = {name: evaluate(data, bp, split.test)
                            for name, bp in baselines(data, split, sklearn_c=sklearn_c).items()}
  return {"probe": probe, "p": p, "metrics": metrics, "records": to_records(data, p, split.test)}
