"""ProbeMonitor on any model: a plain-function forward (our Olmo3 as a function of its nnx state)
gives the same predictions as the module itself; scalars go to the writer at the monitored step."""
import os

import numpy as np
import pytest
from flax import nnx

from run_fixtures import LIMIT, TASKS

from models import checkpoint as model_checkpoint
from probing import tasks
from probing.monitor import ProbeMonitor
from probing.probes import load_probe
from probing.tokenizer import CharTokenizer


class ListWriter:
  """A user's own writer: the one method of the protocol."""

  def __init__(self):
    self.rows = []

  def write_scalars(self, step, scalars):
    self.rows.append((step, dict(scalars)))


def test_plain_function_forward_predicts_as_the_module(testbed_run, testbed_probe):
  step, path = testbed_run["checkpoints"][-1]
  model = model_checkpoint.load(path)
  tok = CharTokenizer(model_checkpoint.read_metadata(path)["tokenizer"]["alphabet"])
  probe = load_probe(testbed_probe["probe"])
  questions = {t: list(tasks.get(t).questions(LIMIT)) for t in TASKS}
  graphdef, state = nnx.split(model)

  def forward(state, input_ids, attention_mask):  # what a MaxText / levanter user would write
    return nnx.merge(graphdef, state)(input_ids, attention_mask, return_logits=False).hidden_states

  with_module = ProbeMonitor({"linear": probe}, questions, tok, every=1, log=lambda _: None)
  writer = ListWriter()
  with_forward = ProbeMonitor({"linear": probe}, questions, tok, every=1, log=lambda _: None, forward=forward,
                              writer=writer)
  a = with_module.maybe_run(step, model)
  b = with_forward.maybe_run(step, state)
  assert [(r["task"], r["probe"]) for r in a] == [(r["task"], r["probe"]) for r in b]
  for x, y in zip(a, b):
    assert y["predicted"] == pytest.approx(x["predicted"], abs=1e-6)
    assert y["predicted_low"] <= y["predicted"] <= y["predicted_high"]
  again = with_forward.maybe_run(step, state)  # same params, compiled pass reused: same numbers
  assert [r["predicted"] for r in again] == [r["predicted"] for r in b]
  assert [s for s, _ in writer.rows] == [step, step]
  scalars = writer.rows[0][1]
  assert scalars[f"predicted/{TASKS[0]}/linear"] == pytest.approx(b[0]["predicted"])
  assert scalars["monitor/seconds"] > 0 and f"predicted_high/{TASKS[1]}/linear" in scalars
  # the forward's own layout: a mapping of just the probe's layers works too
  def only_layers(state, input_ids, attention_mask):
    hs = forward(state, input_ids, attention_mask)
    return {i: hs[i] for i in probe.layers}
  c = ProbeMonitor({"linear": probe}, questions, tok, every=1, log=lambda _: None, forward=only_layers)
  np.testing.assert_allclose([r["predicted"] for r in c.maybe_run(step, state)], [r["predicted"] for r in a],
                             atol=1e-6)


def test_monitor_reports_the_audited_estimate_given_audit_labels(testbed_run, testbed_probe):
  """With label records of a random audit at the monitored step, each audited task's record carries
  the PPI++ estimate and interval of `probing.eval.audited.audit_tasks` and the stale flag."""
  from probing.eval import audited as audit
  from probing.labels import read_labels
  step, path = testbed_run["checkpoints"][-1]
  model = model_checkpoint.load(path)
  tok = CharTokenizer(model_checkpoint.read_metadata(path)["tokenizer"]["alphabet"])
  questions = {t: list(tasks.get(t).questions(LIMIT)) for t in TASKS}
  name = os.path.basename(path)
  labels = [r for r in read_labels(testbed_probe["labels"]) if str(r["checkpoint"]) == name]
  assert labels, name
  keep = set(audit.audit_questions([q.id for q in questions[TASKS[0]]], 6, seed=0, task=TASKS[0]))
  audit_labels = [r for r in labels if r["task"] == TASKS[0] and r["question_id"] in keep]
  logs = []
  monitor = ProbeMonitor({"linear": load_probe(testbed_probe["probe"])}, questions, tok, every=1, log=logs.append)
  records = monitor.maybe_run(step, model, audit_labels=audit_labels)
  a, b = records
  assert "audited" not in b and a["audit_size"] == 6 and a["audited_low"] <= a["audited"] <= a["audited_high"]
  assert isinstance(a["stale"], bool) and any("probe stale" in m for m in logs) == a["stale"]
  assert "predicted_recalibrated" not in a  # no audit before this one
  # The audit's offset is carried into the next call: the audited task's accuracy through it, and
  # the next audit's stale test reads p through it.
  offset = monitor.offsets["linear"][TASKS[0]]
  p = np.asarray([r["p"] for r in load_probe(testbed_probe["probe"]).predict_model(
      model, tok, {TASKS[0]: questions[TASKS[0]]}, checkpoint="x", checkpoint_step=step).records()])
  y = {r["question_id"]: r["c"] / r["k"] for r in audit_labels}
  a2, b2 = monitor.maybe_run(step, model, audit_labels=audit_labels)
  assert "predicted_recalibrated" not in b2
  assert a2["predicted_recalibrated"] == pytest.approx(float(audit.recalibrate(p, offset).mean()), abs=1e-5)
  assert a2["predicted_recalibrated"] != a2["predicted"]
  ids = sorted(y)
  by_id = dict(zip([q.id for q in questions[TASKS[0]]], p))
  assert offset == pytest.approx(audit.recalibration([y[q] for q in ids], [by_id[q] for q in ids],
                                                     [r["k"] for r in sorted(audit_labels, key=lambda r: r["question_id"])]),
                                 abs=1e-5)
