"""probing.probes.trained: save/load, input checks, and the one card -> extract -> predict door."""
import dataclasses
import json

import numpy as np
import pytest

from probe_fixtures import D, LAYERS, family_config, synthetic

from probing.probes import (ProbeError, ProbeSpec, TrainedProbe, build_data, build_probe, load_probe, make_split,
                            train_probe)
from probing.probes.data import fit_standardizer


@pytest.fixture(scope="module")
def data():
  sets, labels = synthetic()
  return build_data(sets, labels, layers=LAYERS, pooling="mean", tokens=True, nll=True)


def test_per_task_heads_and_save_load_roundtrip(data, tmp_path):
  split = make_split(data)
  cfg = family_config("linear", per_task_heads=True)
  probe = train_probe(data, split, *cfg)
  assert sorted(probe.heads) == ["ta", "tb"]
  probe.save(str(tmp_path / "probe"))
  again = load_probe(str(tmp_path / "probe"))
  np.testing.assert_allclose(again.predict(data), probe.predict(data), rtol=1e-6)
  card = json.loads((tmp_path / "probe" / "probe_card.json").read_text())
  assert card["family"] == "linear" and card["standardization"]["fitted_on"] == "training rows only"
  assert set(card["trained_on"]["train_questions"]) == {"ta", "tb"}


def test_predict_refuses_inputs_it_was_not_trained_on():
  sets, labels = synthetic(n_questions=20, steps=(1, 2, 3))
  retok = [dataclasses.replace(s, meta=dict(s.meta, tokenizer_hash="u")) if s.meta["checkpoint"] == "ck3"
           else s for s in sets]
  data = build_data(sets, labels, layers=(1,))
  spec = ProbeSpec("linear", n_layers=1, feature_dim=D)
  probe = TrainedProbe(family_config("linear")[0], spec, {"shared": build_probe(spec)},
                         fit_standardizer(data.inputs, "linear"), ["ta", "tb"],
                         {"features": [{"tokenizer_hash": "t"}]})
  assert probe.predict(data).shape == (len(data),)
  wide = dataclasses.replace(data, inputs={"x": np.zeros((len(data), 1, 2 * D), np.float32)})
  with pytest.raises(ProbeError, match=f"width.*\\[N, 1, {D}\\]"):
    probe.predict(wide)
  with pytest.raises(ProbeError, match="tokenizer.*differs"):
    probe.predict(build_data([s for s in retok if s.meta["tokenizer_hash"] == "u"], layers=(1,)))


def test_predict_model_is_extract_then_predict():
  """The one door: `extract_spec()` asks for exactly what the probe reads, and
  `predict_model(model, tokenizer, questions)` equals extracting with it and predicting."""
  from models import olmo3
  from probing import features
  from probing import tasks
  from probing.testbed import ALPHABET, skills
  from probing.tokenizer import CharTokenizer

  tok = CharTokenizer(ALPHABET)
  model = olmo3.init_model(olmo3.tiny(vocab_size=tok.vocab_size, pad_token_id=tok.pad_id,
                                      eos_token_id=tok.eos_id, vocab_pad_multiple=8), seed=1)
  names = [s.task_name for s in list(skills.SKILLS.values())[:2]]
  questions = {t: list(tasks.get(t).questions(24)) for t in names}
  spec = features.ExtractSpec(layers=(1, 2), token_layer=1, token_cap=8, hybrid=True, reference_eos=True,
                              batch_size=16, length_bucket=4)
  rng = np.random.default_rng(0)
  sets, labels = [], []
  for step in (1, 2, 3, 4):
    for t in names:
      fs = features.extract(model, tok, questions[t], spec, checkpoint=f"ck{step}", checkpoint_step=step, task=t)
      sets.append(fs)
      labels += [{"checkpoint": f"ck{step}", "checkpoint_step": step, "task": t, "question_id": q,
                  "c": int(rng.integers(0, 5)), "k": 4} for q in fs.question_ids]
  for family in ("linear", "hybrid"):
    head, train_cfg = family_config(family, layers=(2,), epochs=5)
    data = build_data(sets, labels, **head.data_kwargs())
    probe = train_probe(data, make_split(data), head, train_cfg)
    want = probe.extract_spec()
    assert want.layers == (2,) and want.token_layer is None and want.hybrid == (family == "hybrid")
    assert (want.reference_eos, want.length_bucket, want.token_cap) == (True, 4, 8)  # as trained
    pred = probe.predict_model(model, tok, questions, checkpoint="ck9", checkpoint_step=9)
    direct = probe.predict(probe.build_data(features.extract_tasks(model, tok, questions, want,
                                                                   checkpoint="ck9", checkpoint_step=9)))
    np.testing.assert_allclose(pred.p, direct, rtol=1e-6)
    assert list(pred.task_accuracy()) == [f"ck9/{t}" for t in sorted(names)]
    with pytest.raises(ProbeError, match=r"not trained on"):
      probe.predict_model(model, tok, {"gsm8k": []})


def test_cards_of_earlier_versions_still_load(data, tmp_path):
  """Cards written before `train` was its own section kept the training fields in `config`."""
  probe = train_probe(data, make_split(data), *family_config("linear"))
  probe.save(str(tmp_path / "probe"))
  card_file = tmp_path / "probe" / "probe_card.json"
  card = json.loads(card_file.read_text())
  card["config"].update(card.pop("train"))
  card_file.write_text(json.dumps(card))
  np.testing.assert_allclose(load_probe(str(tmp_path / "probe")).predict(data), probe.predict(data), rtol=1e-6)
