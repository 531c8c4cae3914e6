"""probing.probes.heads and submodel: blocks copied from checkpoints, the NLL anchor, configs."""
import dataclasses

import numpy as np
import pytest

from probe_fixtures import D, LAYERS, family_config, synthetic, tiny_source
from probing.eval import evaluate
from probing.features import FeatureError, spec_from_config
from probing.probes import ProbeError, ProbeSpec, build_data, build_probe, configs_from, make_split, train_probe
from probing.probes.heads import flat_params
from probing.probes.submodel import load_submodel_blocks


def test_submodel_blocks_start_from_checkpoint(tmp_path):
  """Blocks come from the checkpoint, in memory or read block by block from HF safetensors."""
  from models import convert
  src = tiny_source()
  spec = ProbeSpec("submodel", token_dim=D, submodel_layer=1, submodel_blocks=2,
                     olmo_config=src.config.to_dict())
  want = np.asarray(src.blocks[2].attn.o_kernel[...])
  probe = build_probe(spec)
  load_submodel_blocks(probe, spec, src)
  np.testing.assert_array_equal(flat_params(probe)["encoder/blocks/1/attn/o_kernel"], want)
  convert.save_hf(src, str(tmp_path / "hf"))
  probe = build_probe(spec)
  load_submodel_blocks(probe, spec, str(tmp_path / "hf"))
  np.testing.assert_array_equal(flat_params(probe)["encoder/blocks/1/attn/o_kernel"], want)
  with pytest.raises(ProbeError, match="only blocks 0..3 exist"):
    build_probe(dataclasses.replace(spec, submodel_layer=4))


def test_configs_build():
  from configs.probes import attention, hybrid, linear, mlp, submodel
  for mod in (linear, mlp, attention, submodel, hybrid):
    for arg in (None, "7b", "testbed"):
      c = mod.get_config(arg)
      cfg, _ = configs_from(c)
      assert cfg.family == mod.__name__.rsplit(".", 1)[1]
      spec = spec_from_config(c.extract)
      assert spec.hybrid and spec.token_layer is not None
      if cfg.token_layer is not None:
        assert cfg.token_layer == spec.token_layer
      assert set(cfg.layers) <= set(spec.layers)
  with pytest.raises(FeatureError, match="unknown field"):
    spec_from_config({"layers": (1,), "typo": 3})
  c = linear.get_config("testbed")
  c.head.hiden = 64  # a misspelt field in a config file is an error, not silently dropped
  with pytest.raises(ValueError, match=r"config.head: .*hiden.*known fields"):
    configs_from(c)


def test_nll_anchor():
  """Untrained (zero head), an anchored hybrid predicts exactly p_ref = exp(-sum NLL); trained
  where p_ref is pass@1, it predicts later checkpoints' task accuracy from earlier ones."""
  from probing.probes.data import nll_features
  sum_nll = np.array([0.01, 0.3, 1.0, 2.5, 7.0], np.float32)
  feats = nll_features(sum_nll / 3, sum_nll)
  probe = build_probe(ProbeSpec("hybrid", n_layers=1, feature_dim=4, nll_anchor=True))
  batch = {"x": np.zeros((5, 1, 4), np.float32), "nll": feats, "task": np.zeros(5, np.int32),
           "nll_logit": -feats[:, 1] - feats[:, 2]}
  np.testing.assert_allclose(1 / (1 + np.exp(-np.asarray(probe(batch), np.float64))), np.exp(-sum_nll),
                             rtol=1e-4)
  sets, labels = synthetic(exact_nll=True)
  data = build_data(sets, labels, layers=LAYERS, pooling="mean", nll=True)
  split = make_split(data)
  trained = train_probe(data, split, *family_config("hybrid", nll_anchor=True, center="checkpoint_task"))
  ev = evaluate(data, trained.predict(data), split.test)
  assert ev["task_accuracy_mae"] < 0.03 and ev["auroc"]["primary"]["mean"] > 0.7, ev["task_accuracy_mae"]
  with pytest.raises(ProbeError, match="only the hybrid"):
    ProbeSpec("linear", nll_anchor=True)
