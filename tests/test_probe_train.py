"""probing.probes.train: every family learns, no test row reaches training, baselines, centering."""
import dataclasses

import numpy as np
import pytest

from probe_fixtures import LAYERS, family_config, synthetic, tiny_source

from probing.eval import baselines, evaluate
from probing.eval.baselines import references
from probing.features import FeatureError
from probing.probes import FAMILIES, ProbeConfig, build_data, load_probe, make_split, train_probe
from probing.probes.data import center_cells
from probing.probes.heads import flat_params


@pytest.fixture(scope="module")
def data():
  sets, labels = synthetic()
  return build_data(sets, labels, layers=LAYERS, pooling="mean", tokens=True, nll=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_beats_chance(data, family):
  split = make_split(data)
  probe = train_probe(data, split, *family_config(family), olmo_source=tiny_source())
  p = probe.predict(data)
  assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
  ev = evaluate(data, p, split.test)
  assert ev["auroc"]["primary"]["mean"] > 0.7, (family, ev["auroc"]["primary"])
  assert probe.card["trained_on"]["train_upto_step"] == 300
  assert set(probe.card["trained_on"]["checkpoints"]) == {"ck100", "ck200", "ck300"}


def test_cell_centering(data, tmp_path):
  """center='checkpoint_task': zero-mean pooled features per (checkpoint, task), a hybrid that
  still ranks, a saved probe that centers again, and a clear error where there is nothing pooled."""
  centered = center_cells(data)
  for cell in set(zip(data.checkpoint, data.task)):
    rows = (data.checkpoint == cell[0]) & (data.task == cell[1])
    np.testing.assert_allclose(centered.inputs["x"][rows].mean(axis=0), 0.0, atol=1e-5)
  assert not np.allclose(data.inputs["x"], centered.inputs["x"])  # the input itself is untouched
  split = make_split(data)
  probe = train_probe(data, split, *family_config("hybrid", center="checkpoint_task"))
  p = probe.predict(data)
  assert evaluate(data, p, split.test)["auroc"]["primary"]["mean"] > 0.7
  # Shifting every feature of one cell by a constant changes none of its predictions.
  cell = (data.checkpoint == "ck400") & (data.task == "ta")
  shifted = dataclasses.replace(data, inputs=dict(data.inputs, x=data.inputs["x"] + 5.0 * cell[:, None, None]))
  np.testing.assert_allclose(probe.predict(shifted), p, rtol=1e-5, atol=1e-6)
  probe.save(str(tmp_path / "probe"))
  np.testing.assert_allclose(load_probe(str(tmp_path / "probe")).predict(data), p, rtol=1e-6)
  # Means from reference rows only: poisoning the other rows' features moves nothing else.
  ref = ~split.test
  p_ref = probe.predict(data, center_rows=ref)
  poisoned = dataclasses.replace(data, inputs=dict(data.inputs, x=np.where(ref[:, None, None], data.inputs["x"], 1e3)))
  np.testing.assert_allclose(probe.predict(poisoned, center_rows=ref)[ref], p_ref[ref], rtol=1e-5, atol=1e-6)
  with pytest.raises(FeatureError, match="no reference rows"):
    probe.predict(data, center_rows=np.zeros(len(data), bool))
  with pytest.raises(ValueError, match="reads token states"):
    family_config("attention", center="checkpoint_task")
  with pytest.raises(TypeError, match="unexpected keyword"):
    ProbeConfig(family="linear", hiden=64)  # a misspelt field is an error, not ignored
  with pytest.raises(ValueError, match="center 'task'"):
    family_config("linear", center="task")


def test_no_test_row_reaches_training(data):
  """Poisoning every test row (huge features, flipped labels) changes nothing the probe learned."""
  split = make_split(data)
  poisoned = dataclasses.replace(data, inputs={k: v.copy() for k, v in data.inputs.items()},
                                 c=data.c.copy())
  held_out = ~(split.train | split.val)
  for key in ("x", "tokens", "nll"):
    poisoned.inputs[key][held_out] = 1e6
  poisoned.c[held_out] = data.k[held_out] - data.c[held_out]
  for family, kw in (("mlp", {}), ("attention", {}), ("hybrid", {}),
                     ("hybrid", {"center": "checkpoint_task", "nll_anchor": True})):
    cfg = family_config(family, **kw)
    a, b = train_probe(data, split, *cfg), train_probe(poisoned, split, *cfg)
    for k in a.stats:
      np.testing.assert_array_equal(a.stats[k], b.stats[k])
    for name in a.heads:
      pa, pb = flat_params(a.heads[name]), flat_params(b.heads[name])
      for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=f"{family}: {k}")
    for card in (a.card, b.card):
      card["validation"]["heads"]["shared"].pop("seconds")
    assert a.card["validation"] == b.card["validation"]
  base_a, base_b = baselines(data, split), baselines(poisoned, split)
  for name in base_a:
    if name.startswith("gold_nll"):
      continue  # no training: a per-row transform of that row's own NLL
    rows = slice(None) if "prior" in name else ~held_out  # priors are constants per group
    np.testing.assert_allclose(base_a[name][rows], base_b[name][rows], err_msg=name)


def test_baselines(data):
  split = make_split(data)
  base = {**baselines(data, split), **references(data, split)}
  assert set(base) == {"task_prior", "task_difficulty_prior", "gold_nll_mean", "gold_nll_sum", "sklearn_logreg"}
  ev = {k: evaluate(data, v, split.test)["auroc"]["primary"]["mean"] for k, v in base.items()}
  assert ev["task_prior"] == pytest.approx(0.5)
  assert ev["sklearn_logreg"] > 0.7 and ev["gold_nll_mean"] > 0.7 and ev["task_difficulty_prior"] > 0.55


def test_content_baselines_read_metadata_and_prompts(data):
  """metadata_lr learns from a content feature that tracks the label; surface_lr from the prompt."""
  from probing.tasks.base import Question
  split = make_split(data)
  y = {}
  for t, q, v in zip(data.task, data.question_id, data.y):
    y.setdefault((t, q), []).append(v)
  questions = {key: Question(id=key[1], prompt=("x" * int(1 + 9 * np.mean(v))) + "=", reference="",
                             difficulty=1, metadata={"hint": float(np.mean(v))}) for key, v in y.items()}
  base = baselines(data, split, questions=questions)
  ev = {k: evaluate(data, base[k], split.test)["auroc"]["primary"]["mean"] for k in ("metadata_lr", "surface_lr")}
  assert ev["metadata_lr"] > 0.7 and ev["surface_lr"] > 0.65, ev  # the task prior scores 0.5 here
  assert set(baselines(data, split)) == {"task_prior", "task_difficulty_prior", "gold_nll_mean", "gold_nll_sum"}


def test_ranking_term_is_the_within_cell_pairwise_loss(data):
  """rank_weight adds softplus(z_j - z_i) (y_i - y_j) over pairs of one cell with y_i > y_j, padding
  rows and cross-cell pairs excluded; a linear probe trained with it still ranks within cells."""
  import jax.numpy as jnp
  from probing.probes import train as train_lib
  rng = np.random.default_rng(0)
  z, y = rng.normal(size=7), rng.uniform(size=7)
  cell, w = np.array([0, 0, 0, 1, 1, 1, 0]), np.array([1, 1, 1, 1, 1, 1, 0.0])
  pair, gap = 0.0, 0.0
  for i in range(6):
    for j in range(6):
      if cell[i] == cell[j] and y[i] > y[j]:
        pair += np.logaddexp(0, z[j] - z[i]) * (y[i] - y[j])
        gap += y[i] - y[j]
  base = float(train_lib._loss(jnp.asarray(z), jnp.asarray(y), jnp.asarray(w), "bce"))
  got = float(train_lib._loss(jnp.asarray(z), jnp.asarray(y), jnp.asarray(w), "bce", jnp.asarray(cell), 2.0))
  assert got == pytest.approx(base + 2.0 * pair / gap, rel=1e-5)
  head, train_cfg = family_config("linear", rank_weight=1.0)
  split = make_split(data)
  probe = train_probe(data, split, head, train_cfg)
  assert evaluate(data, probe.predict(data), split.test)["auroc"]["primary"]["mean"] > 0.7
