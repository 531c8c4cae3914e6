"""Training probe heads with optax: typed settings, the jitted loop, `train_probe`.

`train_probe(data, split, config, train)` fits one family (`probing.probes.heads`) on
`split.train` rows of `ProbeData` (`probing.probes.data`: joined features + labels, hash-stable
question split and earlier-predicts-later checkpoint split). Standardization statistics come
from training rows only; early stopping (model selection) uses validation rows only; test rows
are never passed to the trainer (the tests poison them to prove it). The whole loop runs in one
jit: a `lax.while_loop` over validation rounds (stopping after `patience` rounds without
improvement), each a `lax.scan` over epochs and minibatches, with adamw (decoupled weight
decay on kernels) on BCE against the soft pass@1 c/k, or MSE. Heads are one shared head with a
task embedding, or one per task. Baselines on the same splits: `probing.eval.baselines`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from probing import cards
from probing.eval import metrics as metrics_lib
from probing.eval.baselines import baselines, evaluate, references, to_records
from probing.features import FeatureError, extraction_code_version
from probing.probes import heads as heads_lib
from probing.probes.config import ProbeConfig, TrainConfig
from probing.probes.data import LabelJoinError, ProbeData, Split, center_cells, fit_standardizer
from probing.probes.submodel import load_submodel_blocks, source_config
from probing.probes.trained import TrainedProbe, bucket


# ----------------------------------------------------------------------------- the jitted loop


def _optimizer(hp: TrainConfig, params, steps: int) -> optax.GradientTransformation:
  sched = (optax.cosine_decay_schedule(hp.lr, max(steps, 1), alpha=0.1) if hp.schedule == "cosine"
           else optax.constant_schedule(hp.lr))
  labels = heads_lib.param_labels(params)
  decay = jax.tree.map(lambda a, lab: a.ndim >= 2 and lab == "head", params, labels)
  block = optax.scale_by_learning_rate(lambda t: hp.block_lr_scale * sched(t))
  frozen = optax.set_to_zero()
  return optax.chain(
      optax.scale_by_adam(), optax.add_decayed_weights(hp.wd, mask=decay),
      optax.multi_transform({"head": optax.scale_by_learning_rate(sched),
                             "block": block if hp.submodel_train == "all" else frozen,
                             "block_norm": frozen if hp.submodel_train == "none" else block}, labels))


def _loss(z, y, w, kind: str, cell=None, rank_weight: float = 0.0):
  """Mean over real rows (w = 0 marks padding rows); with rank_weight, plus the pairwise logistic
  loss softplus(z_j - z_i) over pairs of one cell with y_i > y_j, weighted by y_i - y_j."""
  per_row = (optax.sigmoid_binary_cross_entropy(z, y) if kind == "bce"
             else jnp.square(jax.nn.sigmoid(z) - y))
  loss = (per_row * w).sum() / jnp.maximum(w.sum(), 1.0)
  if rank_weight and cell is not None:
    gap = (y[:, None] - y[None, :]) * (cell[:, None] == cell[None, :]) * (w[:, None] * w[None, :])
    gap = jnp.maximum(gap, 0.0)
    pair = jax.nn.softplus(z[None, :] - z[:, None])
    loss = loss + rank_weight * (gap * pair).sum() / jnp.maximum(gap.sum(), 1e-6)
  return loss


def _pad_rows(d: Mapping[str, np.ndarray], size: int) -> dict[str, jax.Array]:
  n = len(d["y"])
  out = {k: jnp.asarray(np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)]))
         for k, v in d.items()}
  out["w"] = jnp.asarray(np.arange(size) < n, jnp.float32)
  return out


_ON_ROUND: list[Callable[[int, int], None]] = []  # progress hooks of `on_epochs`


def _round_done(epoch, epochs) -> None:
  for fn in list(_ON_ROUND):
    fn(int(epoch), int(epochs))


@contextlib.contextmanager
def on_epochs(fn: Callable[[int, int], None]):
  """Calls fn(epochs done, epoch budget) after every validation round of the training runs in
  this block (a host callback from inside the one jitted loop: progress lines without leaving it)."""
  _ON_ROUND.append(fn)
  try:
    yield
  finally:
    _ON_ROUND.remove(fn)


@functools.lru_cache(maxsize=64)
def _trainer(graphdef, hp: TrainConfig, has_val: bool):
  """The whole training run as one jitted function (cached, so warm calls skip compiling)."""

  def loss_fn(params, rest, batch):
    return _loss(nnx.merge(graphdef, params, rest)(batch), batch["y"], batch["w"], hp.loss,
                 batch.get("cell"), hp.rank_weight)

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
      jax.debug.callback(_round_done, ep + hp.eval_every, hp.epochs)
      return (p, s, best, jnp.where(better, vl, best_loss), jnp.where(better, 0, bad + 1),
              ep + hp.eval_every, key, losses[-1])

    init = (params, tx.init(params), params, jnp.inf, 0, 0, key, jnp.nan)
    out = jax.lax.while_loop(lambda c: (c[5] < hp.epochs) & (c[4] < hp.patience), round_, init)
    val_p = jax.nn.sigmoid(nnx.merge(graphdef, out[2], rest)(val)) if has_val else jnp.zeros((0,))
    return out[2], out[3], out[5], out[7], val_p

  return jax.jit(run)


def fit(probe: heads_lib.Probe, train: Mapping[str, np.ndarray], val: Mapping[str, np.ndarray] | None,
        hp: TrainConfig) -> tuple[heads_lib.Probe, dict, np.ndarray]:
  """Trains `probe` in place on standardized inputs with targets 'y'.

  Returns the probe (best validation loss), a log, and its predictions on the validation rows.
  """
  graphdef, params, rest = nnx.split(probe, nnx.Param, ...)
  has_val = val is not None and len(val["y"]) > 0
  t0 = time.perf_counter()
  # The seed is an argument of the compiled loop, not part of its cache key.
  best, best_loss, epochs, last, val_p = _trainer(graphdef, dataclasses.replace(hp, seed=0), has_val)(
      params, rest, _pad_rows(train, bucket(len(train["y"]))),
      _pad_rows(val, bucket(len(val["y"]))) if has_val else {}, jax.random.key(hp.seed))
  nnx.update(probe, best)
  log = {"best_val_loss" if has_val else "final_train_loss": float(best_loss),
         "epochs_run": int(epochs), "last_train_loss": float(last), "seconds": time.perf_counter() - t0}
  return probe, log, np.asarray(val_p)[:len(val["y"]) if has_val else 0]


# ----------------------------------------------------------------------------- training


def train_probe(data: ProbeData, split: Split, cfg: ProbeConfig, train_cfg: TrainConfig | None = None, *,
                olmo_source=None) -> TrainedProbe:
  """Trains cfg.family on split.train (early stopping on split.val); test rows are never read.

  `olmo_source` (an Olmo3 model, or an orbax or HF checkpoint dir) supplies the submodel
  probe's blocks.
  """
  train_cfg = train_cfg or TrainConfig()
  tr, va = np.asarray(split.train, bool), np.asarray(split.val, bool)
  if not tr.any():
    raise ValueError("the training split is empty (check train_upto_step and test_frac)")
  for name, rows in (("train", tr), ("validation", va)):
    if np.isnan(data.y[rows]).any():
      raise LabelJoinError(f"{name} rows without labels, e.g. question "
                           f"{data.question_id[rows][np.isnan(data.y[rows])][0]!r}")
  enc = cfg.encoder
  need = {"x": cfg.uses_x, "tokens": cfg.uses_tokens, "nll": cfg.uses_nll}
  for key, needed in need.items():
    if needed and key not in data.inputs:
      raise heads_lib.ProbeError(f"the {cfg.family} probe needs '{key}' inputs; build_data did not "
                                 "load them (build_data(..., **config.data_kwargs()))")
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
      raise heads_lib.ProbeError("the submodel probe needs olmo_source (the checkpoint's model "
                                 "or directory) to copy its blocks from")
    olmo_config = source_config(olmo_source).to_dict()
  x, tok = data.inputs.get("x"), data.inputs.get("tokens")
  spec = heads_lib.ProbeSpec(
      family=cfg.family, n_layers=0 if x is None else x.shape[1], feature_dim=0 if x is None else x.shape[2],
      token_dim=0 if tok is None else tok.shape[-1], hidden=cfg.hidden,
      n_tasks=len(tasks) if shared else 1,
      task_embed_dim=cfg.task_embed_dim if shared and len(tasks) > 1 else 0, n_queries=cfg.n_queries,
      nll_anchor=cfg.nll_anchor,
      base=cfg.base, submodel_layer=data.meta.get("token_layer") or 0,
      submodel_blocks=cfg.submodel_blocks, olmo_config=olmo_config)
  trained = TrainedProbe(cfg, spec, {}, stats, tasks, {})
  cells = np.unique(np.stack([data.step.astype(str), data.task.astype(str)], 1), axis=0,
                    return_inverse=True)[1].reshape(-1).astype(np.int32)
  logs, p_val = {}, np.full(len(data), np.nan, np.float32)
  for name in (["shared"] if shared else tasks):
    rows_tr = tr & (True if shared else data.task == name)
    rows_va = va & (True if shared else data.task == name)
    head = heads_lib.build_probe(spec, train_cfg.seed)
    if enc == "submodel":
      load_submodel_blocks(head, spec, olmo_source)
    prep = lambda rows: _with_y(trained.inputs(data, rows), data.y[rows], shared,  # noqa: E731
                                cells[rows] if train_cfg.rank_weight else None)
    head, logs[name], p_val[rows_va] = fit(head, prep(rows_tr), prep(rows_va) if rows_va.any() else None,
                                           train_cfg)
    trained.heads[name] = head
  trained.card = _card(data, split, cfg, train_cfg, spec, stats, tasks, logs, p_val[va] if va.any() else None)
  return trained


def _with_y(inputs: dict, y: np.ndarray, shared: bool, cell: np.ndarray | None = None) -> dict:
  inputs = dict(inputs, y=y.astype(np.float32))
  if cell is not None:
    inputs["cell"] = cell
  if not shared:
    inputs["task"] = np.zeros(len(y), np.int32)
  return inputs


def _card(data, split, cfg, train_cfg, spec, stats, tasks, logs, p_val) -> dict:
  tr, va = np.asarray(split.train, bool), np.asarray(split.val, bool)
  size = sum(v.size for v in stats.values())
  qs = lambda rows: {t: sorted(set(data.question_id[rows & (data.task == t)])) for t in tasks}  # noqa: E731
  val, ece = {"heads": logs}, {}
  if p_val is not None:
    val.update(evaluate(data.subset(va), p_val))
    sub = data.subset(va)
    ece = {t: metrics_lib.ece(p_val[sub.task == t], sub.c[sub.task == t], sub.k[sub.task == t]) for t in tasks
           if (sub.task == t).any()}
  return {
      "family": cfg.family, "config": dataclasses.asdict(cfg), "train": dataclasses.asdict(train_cfg),
      "spec": spec.to_dict(), "extract": data.meta.get("extract"),
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
      **cards.training_fields(data, tr, va, val, ece, tasks, train_cfg.validity_factor),
      "code_version": extraction_code_version(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def train_and_evaluate(data: ProbeData, split: Split, cfg: ProbeConfig, train_cfg: TrainConfig | None = None, *,
                       olmo_source=None, with_baselines: bool = True, sklearn_c: float = 0.1) -> dict:
  """Trains cfg.family, predicts every row, and evaluates it and the baselines on split.test.

  Returns {'probe': TrainedProbe, 'p': [N] predictions, 'metrics': {...}, 'records': test-row
  prediction records}.
  """
  t0 = time.perf_counter()
  probe = train_probe(data, split, cfg, train_cfg, olmo_source=olmo_source)
  t1 = time.perf_counter()
  p = probe.predict(data)
  metrics = {"family": cfg.family, "train_upto_step": split.train_upto_step,
             "rows": {"train": int(np.sum(split.train)), "val": int(np.sum(split.val)),
                      "test": int(np.sum(split.test))},
             "seconds": {"train": t1 - t0, "predict": time.perf_counter() - t1},
             "probe": evaluate(data, p, split.test), "validation": probe.card["validation"]}
  if with_baselines:
    metrics["baselines"] = {name: evaluate(data, bp, split.test) for name, bp in baselines(data, split).items()}
    metrics["references"] = {name: evaluate(data, bp, split.test)
                             for name, bp in references(data, split, sklearn_c=sklearn_c).items()}
  return {"probe": probe, "p": p, "metrics": metrics, "records": to_records(data, p, split.test)}
