"""Probe cards: what training writes, the checks the prediction path runs against it (prompt
formats, validity window), and `launch.card`."""
import dataclasses
import json
import os
import subprocess
import sys
import warnings

import pytest

from probe_fixtures import family_config, synthetic

from probing.monitor import ProbeMonitor
from probing.probes import ProbeError, build_data, make_split, train_probe
from probing import cards as card_lib
from probing.probes.trained import ProbeWindowWarning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMATS = {"ta": "fmt-ta-1", "tb": "fmt-tb-1"}


@pytest.fixture(scope="module")
def probe():
  sets, labels = synthetic(n_questions=120)
  sets = [dataclasses.replace(s, meta=dict(s.meta, prompt_format_hash=FORMATS[s.meta["task"]])) for s in sets]
  data = build_data(sets, labels, layers=(1,))
  return train_probe(data, make_split(data), *family_config("linear", validity_factor=2.0))


def test_training_writes_the_card_fields(probe):
  card = probe.card
  assert card["prompt_formats"] == FORMATS and card["tokenizer_hash"] == "t"
  assert card["checkpoint_range"] == {"first_step": 100, "last_step": 300, "n_checkpoints": 3}
  assert card["validity"]["min_step"] == 100 and card["validity"]["max_step"] == 600
  assert card["drift"] == {"threshold": None}
  for t in ("ta", "tb"):
    v = card["validation_per_task"][t]
    assert v["n_rows"] > 0 and 0.5 < v["auroc"] <= 1 and 0 <= v["ece"] < 0.5
  s = card_lib.summary(card)
  assert s["tasks"]["ta"]["prompt_format"] == "fmt-ta-1" and s["validity"] == card["validity"]


def test_prompt_formats_and_steps_are_checked(probe):
  probe.check_tasks(["ta"], formats={"ta": "fmt-ta-1", "tb": ""})  # unknown ('') is not checked
  with pytest.raises(ProbeError, match=r"task ta has prompt format fmt-ta-2, the probe's card fmt-ta-1"):
    probe.check_tasks(["ta"], name="p", formats={"ta": "fmt-ta-2"})
  with pytest.raises(ProbeError, match=r"prompt format fmt-tb-9"):  # before any model work: no model given
    probe.predict_model(None, None, {"tb": []}, prompt_format_hashes={"tb": "fmt-tb-9"})
  with pytest.raises(ProbeError, match=r"prompt format"):  # the monitor refuses at construction
    ProbeMonitor({"p": probe}, {"ta": []}, None, every=1, prompt_format_hashes={"ta": "other"})
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert probe.check_step(600) is None and probe.check_step(100) is None
  with pytest.warns(ProbeWindowWarning, match=r"step 601 lies outside its validity window \[100, 600\]"):
    probe.check_step(601)
  with pytest.warns(ProbeWindowWarning, match=r"step 50 "):
    probe.check_step(50)


def test_cards_written_before_the_fields_still_read(probe):
  old = {k: v for k, v in probe.card.items() if k not in ("prompt_formats", "tokenizer_hash", "checkpoint_range",
                                                          "validation_per_task", "drift", "validity")}
  old["features"] = [dict(f, prompt_format_hash="old-" + f["task"]) for f in old["features"]]
  s = card_lib.summary(old)
  assert s["trained_on"] == {"first_step": 100, "last_step": 300, "n_checkpoints": 3}
  assert s["tokenizer_hash"] == "t" and s["tasks"]["tb"]["prompt_format"] == "old-tb" and s["validity"] is None
  assert card_lib.step_warning(old, 10_000) is None and "not recorded" in card_lib.table(old)
  assert card_lib.format_mismatches(old, {"tb": "new"}) == {"tb": ("old-tb", "new")}


def test_launch_card_prints_the_table(probe, tmp_path):
  path = tmp_path / "probe"
  os.makedirs(path)
  (path / card_lib.CARD).write_text(json.dumps(probe.card))  # the card is all launch.card reads
  out = subprocess.run([sys.executable, "-m", "launch.card", str(path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  assert lines[0] == f"probe {path}" and any("validity     steps 100..600" in x for x in lines)
  row = next(x.split() for x in lines if x.strip().startswith("ta "))
  assert row[:2] == ["ta", "fmt-ta-1"] and float(row[2]) > 0.5
  assert json.loads(json.dumps(card_lib.summary(probe.card)))["drift_threshold"] is None
  bad = subprocess.run([sys.executable, "-m", "launch.card", str(tmp_path / "nope")], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
  assert bad.returncode == 1 and bad.stderr.strip().startswith("error: ") and "no probe_card.json" in bad.stderr


def test_monitor_warns_once_per_probe_outside_the_window(probe):
  import copy
  import types

  import numpy as np
  from flax import nnx

  def fake_predict(model, tokenizer, questions, **kw):  # stands in for the extraction pass
    probe.check_step(kw["checkpoint_step"])  # what predict_model does: silenced inside the monitor
    return types.SimpleNamespace(data=types.SimpleNamespace(task=np.asarray(["ta", "ta"], object)),
                                 p=np.asarray([0.2, 0.4]))

  stub = copy.copy(probe)
  stub.predict_model = fake_predict
  logs = []
  monitor = ProbeMonitor({"lin": stub}, {"ta": [None, None]}, None, every=1, log=logs.append,
                         prompt_format_hashes={"ta": "fmt-ta-1"})
  model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    inside = monitor.maybe_run(200, model)
    outside = [monitor.maybe_run(s, model) for s in (700, 800)]
  assert inside[0]["in_validity_window"] and inside[0]["predicted"] == pytest.approx(0.3)
  assert [r[0]["in_validity_window"] for r in outside] == [False, False]
  assert len([w for w in caught if issubclass(w.category, ProbeWindowWarning)]) == 1
  assert sum("outside its validity window" in line for line in logs) == 1
