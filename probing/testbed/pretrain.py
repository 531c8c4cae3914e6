"""Pretraining of the testbed's small OLMo3 on synthetic skills, with in-training checkpoints.

Rows of `seq_len` tokens are packed with whole examples (`prompt answer EOS`, no BOS: the
prompt is encoded exactly as a sampler encodes it); `segment_ids` keep examples from seeing
each other, and the loss covers only answer and EOS tokens. Batch `s` is a pure function of
`(seed, s)`, so a run killed and restarted from its latest train state sees the same data in
the same order. Model checkpoints (`models.checkpoint.save`) land in
`workdir/checkpoints/step_NNNNNN` on a schedule; the optimizer state for resuming lives in
`workdir/train_state` (orbax, only the newest few kept).
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from models import checkpoint as model_checkpoint
from models import sharding as sharding_lib
from models.olmo3 import Olmo3, Olmo3Config, RopeConfig, SLIDING, FULL
from probing.testbed import skills
from probing.tokenizer import CharTokenizer, tokenizer_hash

CHECKPOINTS_DIR = "checkpoints"
TRAIN_STATE_DIR = "train_state"


def step_dirname(step: int) -> str:
  return f"step_{step:06d}"


# ----------------------------------------------------------------------------- data


def pack_rows(examples: Iterator[tuple[str, str]], tokenizer, rows: int, seq_len: int) -> dict[str, np.ndarray]:
  """Packs whole examples into `rows` x `seq_len` arrays; the example that overflows a row opens the next.

  Returns `inputs`, `targets` (inputs shifted left), `weights` (1 where the target is an answer
  or EOS token of the same example) and `segment_ids` (1, 2, ... per example; 0 = padding).
  """
  inputs = np.full((rows, seq_len), tokenizer.pad_id, np.int32)
  targets = np.full((rows, seq_len), tokenizer.pad_id, np.int32)
  weights = np.zeros((rows, seq_len), np.float32)
  segments = np.zeros((rows, seq_len), np.int32)
  row, pos, seg = 0, 0, 0
  pending = None
  while row < rows:
    if pending is None:
      prompt, answer = next(examples)
      n_prompt = len(tokenizer.encode(prompt))
      ids = tokenizer.encode(prompt + answer) + [tokenizer.eos_id]
      if len(ids) > seq_len:
        raise ValueError(f"example {prompt + answer!r} ({len(ids)} tokens) exceeds seq_len={seq_len}")
      pending = (ids, n_prompt)
    ids, n_prompt = pending
    if pos + len(ids) > seq_len:
      row, pos, seg = row + 1, 0, 0
      continue
    n, seg = len(ids), seg + 1
    inputs[row, pos:pos + n] = ids
    targets[row, pos:pos + n - 1] = ids[1:]
    weights[row, pos + n_prompt - 1:pos + n - 1] = 1.0
    segments[row, pos:pos + n] = seg
    pos += n
    pending = None
  return {"inputs": inputs, "targets": targets, "weights": weights, "segment_ids": segments}


@dataclasses.dataclass(frozen=True)
class PackedStream:
  """Deterministic packed batches: `batch(step)` depends only on `(seed, step)`.

  `windows` stagger the mixture: skill i's data is in the stream only while
  `start_i <= step / total_steps < stop_i` (skills learned late, and one that is dropped and
  regresses), so skills rise before and after a probe cutoff.
  """
  skills: tuple[str, ...]
  tokenizer: Any
  batch_size: int
  seq_len: int
  seed: int = 0
  weights: tuple[float, ...] | None = None
  windows: tuple[tuple[float, float], ...] | None = None
  total_steps: int = 1

  def mixture(self, step: int) -> tuple[float, ...]:
    """Each skill's weight at `step` (0 outside its window)."""
    weights = self.weights or (1.0,) * len(self.skills)
    if not self.windows:
      return tuple(weights)
    frac = step / max(1, self.total_steps)
    return tuple(w if lo <= frac < hi else 0.0 for w, (lo, hi) in zip(weights, self.windows))

  def batch(self, step: int) -> dict[str, np.ndarray]:
    rng = random.Random(f"pretrain/{self.seed}/{step}")
    examples = skills.training_examples(self.skills, rng, self.mixture(step))
    return pack_rows(examples, self.tokenizer, self.batch_size, self.seq_len)


# ----------------------------------------------------------------------------- model and optimizer


def model_config(cfg, tokenizer) -> Olmo3Config:
  """An Olmo3Config from the experiment's `model` section (sliding layers except every `full_every`-th)."""
  n = cfg.num_layers
  types = tuple(FULL if (i + 1) % cfg.full_every == 0 else SLIDING for i in range(n))
  rope = RopeConfig(theta=float(cfg.rope_theta))
  return Olmo3Config(
      vocab_size=tokenizer.vocab_size, hidden_size=cfg.hidden_size,
      intermediate_size=cfg.intermediate_size, num_hidden_layers=n,
      num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
      max_position_embeddings=cfg.max_position_embeddings, rms_norm_eps=1e-6,
      sliding_window=cfg.sliding_window, layer_types=types, rope_sliding=rope, rope_full=rope,
      pad_token_id=tokenizer.pad_id, eos_token_id=tokenizer.eos_id,
      bos_token_id=None, initializer_range=cfg.init_std,  # prompts carry no BOS
      vocab_pad_multiple=cfg.vocab_pad_multiple)


def make_optimizer(cfg) -> optax.GradientTransformation:
  """AdamW with linear warmup then cosine decay to `final_lr_fraction`, global-norm clipping.

  Weight decay skips vectors (norm scales), as usual.
  """
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.lr, warmup_steps=cfg.warmup_steps,
      decay_steps=max(cfg.steps, cfg.warmup_steps + 1), end_value=cfg.lr * cfg.final_lr_fraction)
  decay_mask = lambda params: jax.tree.map(lambda x: x.ndim > 1, params)
  return optax.chain(
      optax.clip_by_global_norm(cfg.clip_norm),
      optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=decay_mask))


def loss_fn(model: Olmo3, batch: dict[str, jax.Array]) -> jax.Array:
  """Mean next-token cross-entropy over the weighted (answer + EOS) positions."""
  logits = model(batch["inputs"], segment_ids=batch["segment_ids"]).logits
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["targets"])
  w = batch["weights"]
  return jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0)


class Trainer:
  """Holds params and optimizer state on a mesh and runs the jitted train step.

  The step donates its input buffers, so `self.model` is only current right after
  `synced_model()` (use it before the next `step`).
  """

  def __init__(self, model: Olmo3, tx: optax.GradientTransformation, mesh: jax.sharding.Mesh):
    self.mesh, self.tx = mesh, tx
    sharding_lib.shard_model(model, mesh)
    self.graphdef, params = nnx.split(model, nnx.Param)
    self.model = model
    self.params = params
    self.param_shardings = sharding_lib.param_shardings(params, mesh)
    replicated = NamedSharding(mesh, P())
    opt_state = jax.jit(tx.init)(params)
    # Moments follow their params' shardings; scalars (step counts) are replicated on the mesh.
    self.opt_shardings = jax.tree.map(
        lambda x: x.sharding if isinstance(x.sharding, NamedSharding) else replicated, opt_state)
    self.opt_state = jax.device_put(opt_state, self.opt_shardings)
    self.batch_sharding = sharding_lib.batch_sharding(mesh, 2)
    graphdef = self.graphdef

    def step(params, opt_state, batch):
      def f(p):
        return loss_fn(nnx.merge(graphdef, p), batch)
      loss, grads = jax.value_and_grad(f)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      return params, opt_state, {"loss": loss, "grad_norm": optax.global_norm(grads)}

    self._step = jax.jit(step, in_shardings=(self.param_shardings, self.opt_shardings, self.batch_sharding),
                         out_shardings=(self.param_shardings, self.opt_shardings, replicated),
                         donate_argnums=(0, 1))

  def put_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return {k: jax.device_put(v, self.batch_sharding) for k, v in batch.items()}

  def step(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    self.params, self.opt_state, metrics = self._step(self.params, self.opt_state, self.put_batch(batch))
    return metrics

  def synced_model(self) -> Olmo3:
    nnx.update(self.model, self.params)
    return self.model

  def state(self) -> dict:
    return {"params": self.params, "opt_state": self.opt_state}

  def restore(self, state: dict) -> None:
    self.params, self.opt_state = state["params"], state["opt_state"]

  def abstract_state(self) -> dict:
    as_struct = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return jax.tree.map(as_struct, self.state())


# ----------------------------------------------------------------------------- schedule and loop


def checkpoint_steps(total_steps: int, num: int, spacing: str = "linear", first: int | None = None) -> list[int]:
  """`num` distinct steps ending at `total_steps`: even ('linear') or geometric ('log') from `first`."""
  if num < 1 or total_steps < num:
    raise ValueError(f"cannot place {num} checkpoints in {total_steps} steps")
  if spacing == "linear":
    steps = np.linspace(total_steps / num, total_steps, num)
  elif spacing == "log":
    start = first or max(1, total_steps // (4 * num))
    steps = np.geomspace(start, total_steps, num)
  else:
    raise ValueError(f"checkpoint spacing {spacing!r}: expected 'linear' or 'log'")
  out = sorted({int(round(s)) for s in steps})
  if len(out) != num:
    raise ValueError(f"{num} {spacing} checkpoints in {total_steps} steps collide; use more steps")
  return out


def _state_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), TRAIN_STATE_DIR), options=options)


def _restore_state(manager: ocp.CheckpointManager, trainer: Trainer) -> int:
  step = manager.latest_step()
  if step is None:
    return 0
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(trainer.abstract_state())))
  trainer.restore(restored["state"])
  return int(step)


def build_run(config) -> tuple[CharTokenizer, Olmo3Config, Trainer, PackedStream]:
  """Tokenizer, model config, trainer (model initialised from `config.seed`) and data stream."""
  tokenizer = CharTokenizer(skills.ALPHABET)
  mcfg = model_config(config.model, tokenizer)
  mesh = sharding_lib.make_mesh(config.mesh)
  model = Olmo3(mcfg, rngs=nnx.Rngs(config.seed))
  trainer = Trainer(model, make_optimizer(config.train), mesh)
  weights = tuple(config.data.skill_weights) if config.data.skill_weights else None
  if weights is not None and len(weights) != len(config.data.skills):
    raise ValueError(f"data.skill_weights has {len(weights)} entries for {len(config.data.skills)} skills")
  windows = tuple(tuple(w) for w in config.data.get("skill_windows", ())) or None
  if windows is not None and (len(windows) != len(config.data.skills)
                              or any(len(w) != 2 or not 0 <= w[0] < w[1] for w in windows)):
    raise ValueError(f"data.skill_windows must hold one (start, stop) fraction pair per skill with "
                     f"0 <= start < stop; got {windows} for {len(config.data.skills)} skills")
  stream = PackedStream(tuple(config.data.skills), tokenizer, config.train.batch_size,
                        config.data.seq_len, seed=config.seed, weights=weights, windows=windows,
                        total_steps=config.train.steps)
  return tokenizer, mcfg, trainer, stream


def _identity(config: dict) -> dict:
  """The config sections a resumed run must share with the original (not logging, not mesh)."""
  return {k: config.get(k) for k in ("seed", "model", "data", "train", "checkpoint")}


def train(config, workdir: str, *, stop_at: int | None = None, callback=None) -> dict:
  """Runs (or resumes) pretraining into `workdir`; returns a summary with the checkpoint paths.

  `callback(step, trainer)` runs after every step (e.g. `probing.monitor.ProbeMonitor`).

  `stop_at` ends the run early after that step, as a kill would (tests and preemption drills).
  """
  os.makedirs(workdir, exist_ok=True)
  total = config.train.steps
  ck = config.checkpoint
  schedule = checkpoint_steps(total, ck.num, ck.spacing, ck.first or None)
  manager = _state_manager(workdir, ck.keep_train_states)
  config_path = os.path.join(workdir, "config.json")
  if manager.latest_step() is not None and os.path.exists(config_path):
    with open(config_path) as f:
      if _identity(json.load(f)) != _identity(json.loads(config.to_json())):
        raise ValueError(f"{workdir} holds a run of another config ({config_path}); "
                         "resuming it with this one would change its model, data or schedule")
  tokenizer, mcfg, trainer, stream = build_run(config)
  start = _restore_state(manager, trainer)
  ckpt_root = os.path.join(workdir, CHECKPOINTS_DIR)
  with open(config_path, "w") as f:
    f.write(config.to_json(indent=2))
  logging.info("pretrain: %d params, %d steps from step %d, checkpoints at %s, mesh %s",
               mcfg.num_params(), total, start, schedule, sharding_lib.describe(trainer.mesh))
  meta_base = {
      "skills": [skills.get_skill(s).task_name for s in config.data.skills],
      "tokenizer": {"kind": "char", "alphabet": skills.ALPHABET, "hash": tokenizer_hash(tokenizer)},
      "seed": config.seed, "tokens_per_step": config.train.batch_size * config.data.seq_len,
      "total_steps": total, "experiment": json.loads(config.to_json()),
  }
  t0 = time.perf_counter()
  window, window_start, done_since = [], time.perf_counter(), 0
  last = total if stop_at is None else min(total, stop_at)
  for step in range(start + 1, last + 1):
    window.append(trainer.step(stream.batch(step - 1)))
    done_since += 1
    if callback is not None:
      callback(step, trainer)
    if step % config.log_every == 0 or step == last:
      losses = jax.device_get(window)
      now = time.perf_counter()
      rate = len(window) / max(now - window_start, 1e-9)
      overall = done_since / max(now - t0, 1e-9)
      logging.info("step %d/%d loss %.4f grad_norm %.3f | %.2f steps/s, %.0f tok/s | elapsed %.0fs ETA %.0fs",
                   step, total, float(np.mean([m["loss"] for m in losses])), float(losses[-1]["grad_norm"]),
                   rate, rate * meta_base["tokens_per_step"], now - t0, (total - step) / overall)
      window, window_start = [], now
    if step in schedule:
      path = os.path.join(ckpt_root, step_dirname(step))
      if not model_checkpoint.is_checkpoint(path):  # a resumed run may have written it already
        model_checkpoint.save(path, trainer.synced_model(), {
            **meta_base, "checkpoint": step_dirname(step), "checkpoint_step": step,
            "tokens_seen": step * meta_base["tokens_per_step"]})
      manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(trainer.state())))
      logging.info("checkpoint %s", path)
  manager.wait_until_finished()
  manager.close()
  done = [s for s in schedule if s <= last]
  paths = [os.path.join(ckpt_root, step_dirname(s)) for s in done]
  return {"checkpoints": paths, "steps": done, "seconds": time.perf_counter() - t0, "start_step": start,
          "end_step": max(start, last)}


def list_checkpoints(workdir: str) -> list[tuple[int, str]]:
  """(step, path) of the finished model checkpoints in `workdir`, by step."""
  root = os.path.join(workdir, CHECKPOINTS_DIR)
  if not os.path.isdir(root):
    return []
  out = []
  for name in os.listdir(root):
    path = os.path.join(root, name)
    if name.startswith("step_") and model_checkpoint.is_checkpoint(path):
      out.append((int(name[len("step_"):]), path))
  return sorted(out)


__all__: Sequence[str] = ("PackedStream", "Trainer", "build_run", "checkpoint_steps", "list_checkpoints",
                          "loss_fn", "make_optimizer", "model_config", "pack_rows", "step_dirname", "train")
