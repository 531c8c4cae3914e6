"""Probe families, training, splits, leakage, baselines and bad input (synthetic data, CPU)."""
import dataclasses
import json

import numpy as np
import pytest

from models import olmo3
from probing import features as F
from probing import probes as P
from probing import train as T

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
      sets.append(F.FeatureSet(meta, arrays))
      c = rng.binomial(k, 1 / (1 + np.exp(-z)))
      labels += [{"checkpoint": f"ck{s}", "checkpoint_step": s, "task": task, "question_id": q,
                  "c": int(ci), "k": k, "difficulty": int(zi > 0)} for q, ci, zi in zip(qids, c, z0)]
  return sets, labels


def tiny_source():
  return olmo3.init_model(olmo3.tiny(hidden_size=D), seed=0)


FAST = dict(epochs=60, patience=10, lr=1e-2, hidden=32, batch=128)


def family_config(family, **kw):
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
  return T.ProbeConfig(**base)


@pytest.fixture(scope="module")
def data():
  sets, labels = synthetic()
  return T.build_data(sets, labels, layers=LAYERS, pooling="mean", tokens=True, nll=True)


@pytest.mark.parametrize("family", P.FAMILIES)
def test_every_family_beats_chance(data, family):
  split = T.make_split(data)
  probe = T.train_probe(data, split, family_config(family), olmo_source=tiny_source())
  p = probe.predict(data)
  assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
  ev = T.evaluate(data, p, split.test)
  assert ev["auroc"]["primary"]["mean"] > 0.7, (family, ev["auroc"]["primary"])
  assert probe.card["trained_on"]["train_upto_step"] == 300
  assert set(probe.card["trained_on"]["checkpoints"]) == {"ck100", "ck200", "ck300"}


def test_cell_centering(data, tmp_path):
  """center='checkpoint_task': zero-mean pooled features per (checkpoint, task), a hybrid that
  still ranks, a saved probe that centers again, and a clear error where there is nothing pooled."""
  centered = T.center_cells(data)
  for cell in set(zip(data.checkpoint, data.task)):
    rows = (data.checkpoint == cell[0]) & (data.task == cell[1])
    np.testing.assert_allclose(centered.inputs["x"][rows].mean(axis=0), 0.0, atol=1e-5)
  assert not np.allclose(data.inputs["x"], centered.inputs["x"])  # the input itself is untouched
  split = T.make_split(data)
  probe = T.train_probe(data, split, family_config("hybrid", center="checkpoint_task"))
  p = probe.predict(data)
  assert T.evaluate(data, p, split.test)["auroc"]["primary"]["mean"] > 0.7
  # Shifting every feature of one cell by a constant changes none of its predictions.
  cell = (data.checkpoint == "ck400") & (data.task == "ta")
  shifted = dataclasses.replace(data, inputs=dict(data.inputs, x=data.inputs["x"] + 5.0 * cell[:, None, None]))
  np.testing.assert_allclose(probe.predict(shifted), p, rtol=1e-5, atol=1e-6)
  probe.save(str(tmp_path / "probe"))
  np.testing.assert_allclose(T.load_probe(str(tmp_path / "probe")).predict(data), p, rtol=1e-6)
  # Means from reference rows only: poisoning the other rows' features moves nothing else.
  ref = ~split.test
  p_ref = probe.predict(data, center_rows=ref)
  poisoned = dataclasses.replace(data, inputs=dict(data.inputs, x=np.where(ref[:, None, None], data.inputs["x"], 1e3)))
  np.testing.assert_allclose(probe.predict(poisoned, center_rows=ref)[ref], p_ref[ref], rtol=1e-5, atol=1e-6)
  with pytest.raises(F.FeatureError, match="no reference rows"):
    probe.predict(data, center_rows=np.zeros(len(data), bool))
  with pytest.raises(ValueError, match="reads token states"):
    family_config("attention", center="checkpoint_task")
  with pytest.raises(ValueError, match="center 'task'"):
    family_config("linear", center="task")


def test_per_task_heads_and_save_load_roundtrip(data, tmp_path):
  split = T.make_split(data)
  cfg = family_config("linear", per_task_heads=True)
  probe = T.train_probe(data, split, cfg)
  assert sorted(probe.heads) == ["ta", "tb"]
  probe.save(str(tmp_path / "probe"))
  again = T.load_probe(str(tmp_path / "probe"))
  np.testing.assert_allclose(again.predict(data), probe.predict(data), rtol=1e-6)
  card = json.loads((tmp_path / "probe" / "probe_card.json").read_text())
  assert card["family"] == "linear" and card["standardization"]["fitted_on"] == "training rows only"
  assert set(card["trained_on"]["train_questions"]) == {"ta", "tb"}


def test_submodel_blocks_start_from_checkpoint(tmp_path):
  """Blocks come from the checkpoint, in memory or read block by block from HF safetensors."""
  from models import convert
  src = tiny_source()
  spec = P.ProbeSpec("submodel", token_dim=D, submodel_layer=1, submodel_blocks=2,
                     olmo_config=src.config.to_dict())
  want = np.asarray(src.blocks[2].attn.o_kernel[...])
  probe = P.build(spec)
  P.load_submodel_blocks(probe, spec, src)
  np.testing.assert_array_equal(P.flat_params(probe)["encoder/blocks/1/attn/o_kernel"], want)
  convert.save_hf(src, str(tmp_path / "hf"))
  probe = P.build(spec)
  P.load_submodel_blocks(probe, spec, str(tmp_path / "hf"))
  np.testing.assert_array_equal(P.flat_params(probe)["encoder/blocks/1/attn/o_kernel"], want)
  with pytest.raises(P.ProbeError, match="only blocks 0..3 exist"):
    P.build(dataclasses.replace(spec, submodel_layer=4))


def test_splits_are_hash_stable_and_disjoint(data):
  a, b = T.make_split(data), T.make_split(data.subset(np.arange(len(data))[::-1]))
  test_q = {(t, q) for t, q in zip(data.task[a.test], data.question_id[a.test])}
  train_q = {(t, q) for t, q in zip(data.task[a.train | a.val], data.question_id[a.train | a.val])}
  assert not test_q & train_q
  assert (data.step[a.train | a.val] <= a.train_upto_step).all() and (data.step[a.test] > 300).all()
  assert T.split_unit("ta", "ta-3") == T.split_unit("ta", "ta-3")
  assert sorted(zip(data.task[a.test], data.question_id[a.test])) == sorted(
      zip(data.task[::-1][b.test], data.question_id[::-1][b.test]))
  assert T.default_train_upto([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) == 4
  assert T.default_train_upto([5, 6, 7]) == 6


def test_no_test_row_reaches_training(data):
  """Poisoning every test row (huge features, flipped labels) changes nothing the probe learned."""
  split = T.make_split(data)
  poisoned = dataclasses.replace(data, inputs={k: v.copy() for k, v in data.inputs.items()},
                                 c=data.c.copy())
  held_out = ~(split.train | split.val)
  for key in ("x", "tokens", "nll"):
    poisoned.inputs[key][held_out] = 1e6
  poisoned.c[held_out] = data.k[held_out] - data.c[held_out]
  for family, kw in (("mlp", {}), ("attention", {}), ("hybrid", {}),
                     ("hybrid", {"center": "checkpoint_task", "nll_anchor": True})):
    cfg = family_config(family, **kw)
    a, b = T.train_probe(data, split, cfg), T.train_probe(poisoned, split, cfg)
    for k in a.stats:
      np.testing.assert_array_equal(a.stats[k], b.stats[k])
    for name in a.heads:
      pa, pb = P.flat_params(a.heads[name]), P.flat_params(b.heads[name])
      for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=f"{family}: {k}")
    for card in (a.card, b.card):
      card["validation"]["heads"]["shared"].pop("seconds")
    assert a.card["validation"] == b.card["validation"]
  base_a, base_b = T.baselines(data, split), T.baselines(poisoned, split)
  for name in base_a:
    if name.startswith("gold_nll"):
      continue  # no training: a per-row transform of that row's own NLL
    rows = slice(None) if "prior" in name else ~held_out  # priors are constants per group
    np.testing.assert_allclose(base_a[name][rows], base_b[name][rows], err_msg=name)


def test_baselines(data):
  split = T.make_split(data)
  base = T.baselines(data, split)
  assert set(base) == {"task_prior", "task_difficulty_prior", "gold_nll_mean", "gold_nll_sum", "sklearn_logreg"}
  ev = {k: T.evaluate(data, v, split.test)["auroc"]["primary"]["mean"] for k, v in base.items()}
  assert ev["task_prior"] == pytest.approx(0.5)
  assert ev["sklearn_logreg"] > 0.7 and ev["gold_nll_mean"] > 0.7 and ev["task_difficulty_prior"] > 0.55


def test_bad_inputs_name_the_culprit(tmp_path):
  sets, labels = synthetic(n_questions=20, steps=(1, 2, 3))
  with pytest.raises(F.FeatureError, match=r"ta-0.*without labels|1 without labels"):
    T.build_data(sets, [r for r in labels if r["question_id"] != "ta-0"], layers=(1,))
  with pytest.raises(F.FeatureError, match=r"'ck1'.*no records for this checkpoint"):
    T.build_data(sets, [r for r in labels if r["checkpoint"] != "ck1"], layers=(1,))
  with pytest.raises(F.FeatureError, match=r"layers \[7\] were not extracted"):
    T.build_data(sets, labels, layers=(1, 7))
  moved = [dict(r, checkpoint_step=99) if r["checkpoint"] == "ck2" else r for r in labels]
  with pytest.raises(F.FeatureError, match="checkpoint_step 2 but labels say 99"):
    T.build_data(sets, moved, layers=(1,))
  sets[1].arrays["mean"][3, 0, 5] = np.nan
  with pytest.raises(F.FeatureError, match=r"checkpoint 'ck2' task 'ta'.*NaN.*'ta-3'"):
    T.build_data(sets, labels, layers=(0,))
  sets[1].arrays["mean"][3, 0, 5] = 0.0
  retok = [dataclasses.replace(s, meta=dict(s.meta, tokenizer_hash="u")) if s.meta["checkpoint"] == "ck3"
           else s for s in sets]
  with pytest.raises(F.FeatureError, match="different tokenizers"):
    T.build_data(retok, labels, layers=(1,))
  data = T.build_data(sets, labels, layers=(1,))
  spec = P.ProbeSpec("linear", n_layers=1, feature_dim=D)
  probe = T.TrainedProbe(family_config("linear"), spec, {"shared": P.build(spec)},
                         T.fit_standardizer(data.inputs, "linear"), ["ta", "tb"],
                         {"features": [{"tokenizer_hash": "t"}]})
  assert probe.predict(data).shape == (len(data),)
  wide = dataclasses.replace(data, inputs={"x": np.zeros((len(data), 1, 2 * D), np.float32)})
  with pytest.raises(P.ProbeError, match=f"width.*\\[N, 1, {D}\\]"):
    probe.predict(wide)
  with pytest.raises(P.ProbeError, match="tokenizer.*differs"):
    probe.predict(T.build_data([s for s in retok if s.meta["tokenizer_hash"] == "u"], layers=(1,)))
  out = tmp_path / "probe"
  with pytest.raises(P.ProbeError, match="needs 'tokens'"):
    T.train_probe(data, T.make_split(data), family_config("attention"))
  assert not out.exists()


def test_configs_build():
  from configs.probes import attention, hybrid, linear, mlp, submodel
  for mod in (linear, mlp, attention, submodel, hybrid):
    for arg in (None, "7b", "testbed"):
      c = mod.get_config(arg)
      cfg = T.ProbeConfig.from_mapping(c.to_dict())
      assert cfg.family == mod.__name__.rsplit(".", 1)[1]
      spec = F.spec_from_config(c.extract)
      assert spec.hybrid and spec.token_layer is not None
      if cfg.token_layer is not None:
        assert cfg.token_layer == spec.token_layer
      assert set(cfg.layers) <= set(spec.layers)
  with pytest.raises(F.FeatureError, match="unknown field"):
    F.spec_from_config({"layers": (1,), "typo": 3})


def test_nll_anchor():
  """Untrained (zero head), an anchored hybrid predicts exactly p_ref = exp(-sum NLL); trained
  where p_ref is pass@1, it predicts later checkpoints' task accuracy from earlier ones."""
  from probing.probe_data import nll_features
  sum_nll = np.array([0.01, 0.3, 1.0, 2.5, 7.0], np.float32)
  feats = nll_features(sum_nll / 3, sum_nll)
  probe = P.build(P.ProbeSpec("hybrid", n_layers=1, feature_dim=4, nll_anchor=True))
  batch = {"x": np.zeros((5, 1, 4), np.float32), "nll": feats, "task": np.zeros(5, np.int32),
           "nll_logit": -feats[:, 1] - feats[:, 2]}
  np.testing.assert_allclose(1 / (1 + np.exp(-np.asarray(probe(batch), np.float64))), np.exp(-sum_nll),
                             rtol=1e-4)
  sets, labels = synthetic(exact_nll=True)
  data = T.build_data(sets, labels, layers=LAYERS, pooling="mean", nll=True)
  split = T.make_split(data)
  trained = T.train_probe(data, split, family_config("hybrid", nll_anchor=True, center="checkpoint_task"))
  ev = T.evaluate(data, trained.predict(data), split.test)
  assert ev["task_accuracy_mae"] < 0.03 and ev["auroc"]["primary"]["mean"] > 0.7, ev["task_accuracy_mae"]
  with pytest.raises(P.ProbeError, match="only the hybrid"):
    P.ProbeSpec("linear", nll_anchor=True)
