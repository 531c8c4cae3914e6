"""Synthetic feature sets and labels with a known linear signal, and fast probe settings."""
import dataclasses

import numpy as np

from models import olmo3
from probing.features import FeatureSet
from probing.probes import ProbeConfig, TrainConfig

D, C, LAYERS, STEPS = 64, 8, (0, 1, 2), (100, 200, 300, 400, 500)


def synthetic(n_questions=240, steps=STEPS, tasks=("ta", "tb"), seed=0, k=8, exact_nll=False):
  """Feature sets + labels where pass@1 = sigmoid(latent), and the latent is linearly readable.

  A question's latent z shifts with the checkpoint (later ones are better). Pooled states of
  every layer carry z along a fixed direction; token states carry it on every valid token;
  the NLL carries it with noise, or with `exact_nll` exactly as a unique answer sampled at T = 1
  would (exp(-nll_sum) = pass@1).
  """
  rng = np.random.default_rng(seed)
  u = rng.normal(size=D) / np.sqrt(D) * 4
  sets, labels = [], []
  for task in tasks:
    z0 = rng.normal(size=n_questions)
    noise_q = rng.normal(size=(n_questions, D))
    qids = [f"{task}-{i}" for i in range(n_questions)]
    for j, s in enumerate(steps):
      z = z0 + 0.5 * (j - 2)
      mask = np.zeros((n_questions, C), bool)
      lens = rng.integers(2, C + 1, n_questions)
      for i, n in enumerate(lens):
        mask[i, C - n:] = True
      tok = (rng.normal(size=(n_questions, C, D)) + z[:, None, None] * u + 0.3 * noise_q[:, None]) * mask[..., None]
      pooled = z[:, None, None] * u + 0.5 * noise_q[:, None] + 0.5 * rng.normal(size=(n_questions, len(LAYERS), D))
      nll = np.maximum(0.05, 1.5 - 0.5 * z + 0.3 * rng.normal(size=n_questions))
      if exact_nll:
        nll = np.logaddexp(0.0, -z) / 3  # 3 * nll = -log sigmoid(z)
      arrays = {"last": pooled.astype(np.float32), "mean": (pooled + 0.1).astype(np.float32),
                "tokens": tok.astype(np.float32), "tokens_mask": mask,
                "nll_mean": nll.astype(np.float32), "nll_sum": (3 * nll).astype(np.float32)}
      meta = {"checkpoint": f"ck{s}", "checkpoint_step": s, "task": task, "question_ids": qids,
              "layers": list(LAYERS), "token_layer": 1, "hidden_size": D, "tokenizer_hash": "t"}
      sets.append(FeatureSet(meta, arrays))
      c = rng.binomial(k, 1 / (1 + np.exp(-z)))
      labels += [{"checkpoint": f"ck{s}", "checkpoint_step": s, "task": task, "question_id": q,
                  "c": int(ci), "k": k, "difficulty": int(zi > 0)} for q, ci, zi in zip(qids, c, z0)]
  return sets, labels


def tiny_source():
  return olmo3.init_model(olmo3.tiny(hidden_size=D), seed=0)


FAST = dict(epochs=60, patience=10, lr=1e-2, hidden=32, batch=128)


def family_config(family, **kw):
  """(ProbeConfig, TrainConfig) of a family, fast settings, `kw` overriding either."""
  base = dict(family=family, layers=LAYERS, pooling="mean", **FAST)
  if family == "linear":
    base.update(layers=(1,), batch=0, epochs=150, lr=3e-2)
  if family == "hybrid":
    base.update(base="linear", layers=(1,), batch=0, epochs=150, lr=3e-2)
  if family in ("attention", "submodel"):
    base.update(token_layer=1)
  if family == "submodel":
    base.update(lr=3e-3, epochs=30, submodel_blocks=1)
  base.update(kw)
  train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
  return (ProbeConfig(**{k: v for k, v in base.items() if k not in train_fields}),
          TrainConfig(**{k: v for k, v in base.items() if k in train_fields}))
