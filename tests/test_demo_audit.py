"""probing.demo.audit / pass_at_k / audit_figures and probing.eval.drift on synthetic records
whose truth is known: audit coverage and PPI++ against the audit alone, pass@k against
1 - C(n - c, k) / C(n, k) in exact integers, the drift score on an injected regression and on no change."""
import math

import numpy as np
import pytest

from probing.demo import audit, audit_figures
from probing.demo import pass_at_k as pak_demo
from probing.eval import audit as audit_lib
from probing.eval import audited as audited_lib
from probing.eval import drift
from probing.features import FeatureSet


def _comb_pass_at_k(n, c, k):
  """Unbiased pass@k per question, 1 - C(n - c, k) / C(n, k), in exact integers (a reference)."""
  return np.array([1.0 - math.comb(int(a) - int(b), k) / math.comb(int(a), k) for a, b in zip(n, c)])


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _records(*, tasks=("a", "b"), steps=(10, 20, 30, 40), later_from=30, N=300, k=8, bias=0.1, seed=0,
             informative=True, calibrated=False, logit_bias=0.0):
  """predictions.jsonl / labels.jsonl rows: latent ease z per question, true pass rate pi(z, step),
  c ~ Bin(k, pi); the probe's p tracks pi (noisily, shifted by `bias`, and on the logit scale by
  `logit_bias`, at later steps)."""
  rng = np.random.default_rng(seed)
  preds, labels = [], []
  for t in tasks:
    z = rng.normal(size=N)
    for step in steps:
      pi = _sigmoid(-1.0 + 0.02 * step + 1.5 * z)
      c = rng.binomial(k, pi)
      if calibrated:
        p = pi
      elif informative:
        later = step >= later_from
        p = np.clip(_sigmoid(-1.0 + 0.02 * step + 1.5 * z + 0.5 * rng.normal(size=N) + (logit_bias if later else 0.0))
                    + (bias if later else 0.0), 0, 1)
      else:
        p = rng.uniform(size=N)
      for i in range(N):
        qid = f"{t}-{i}"
        split = "test" if i % 3 == 0 else ("val" if i % 3 == 1 else "train")
        preds.append({"checkpoint": f"s{step}", "checkpoint_step": step, "task": t, "question_id": qid,
                      "probe": "fam", "p": float(p[i]), "split": split,
                      "checkpoint_role": "later" if step >= later_from else "train"})
        labels.append({"checkpoint": f"s{step}", "checkpoint_step": step, "task": t, "question_id": qid,
                       "k": k, "c": int(c[i]), "greedy": None, "difficulty": int(i % 5)})
  return preds, labels


# ----------------------------------------------------------------------------- audit


def test_audit_covers_and_ppi_beats_the_audit_alone():
  preds, labels = _records(bias=0.1)
  s = audit.audit_summary(preds, labels, family="fam", later_steps=[30, 40], sizes=(32, 64), draws=150)
  assert set(s["per_cell"]) == {"a@30", "a@40", "b@30", "b@40"}
  for block in (s, s["by_size"]["32"], s["by_size"]["64"]):
    assert 0.90 <= block["coverage"] <= 0.99, block
    assert 0.90 <= block["coverage_audit_only"] <= 0.99, block
    assert block["abs_error_mean"] <= block["abs_error_audit_only_mean"]
    assert block["ess_gain_median"] > 1.1
    assert block["ci_halfwidth_median"] < block["ci_halfwidth_audit_only_median"]
  assert s["abs_error_probe_only_mean"] > 0.05  # the probe's bias; the audit removes it
  assert s["abs_error_mean"] < 0.05
  assert s["by_size"]["64"]["ci_halfwidth_median"] < s["by_size"]["32"]["ci_halfwidth_median"]
  cell = s["per_cell"]["a@30"]
  assert cell["n"] == 32 and cell["N"] == 300
  assert cell["ppi"]["ci"][0] <= cell["ppi"]["estimate"] <= cell["ppi"]["ci"][1]
  plan = s["planning"]
  assert plan["target_halfwidth"] == 0.03
  for t in ("a", "b"):
    assert 2 <= plan["questions_needed_per_task_ppi"][t] <= plan["questions_needed_per_task_audit_only"][t] <= 300
  assert s["capped"] == {}


def test_audit_is_seeded_and_caps_n_at_the_population():
  preds, labels = _records(tasks=("a",), N=20, steps=(10, 20, 30))
  kw = dict(family="fam", later_steps=[30], sizes=(8, 32), default_size=8, draws=20)
  s = audit.audit_summary(preds, labels, **kw)
  assert s == audit.audit_summary(preds, labels, **kw)
  assert s["capped"] == {"a@30": {"questions": 20, "sizes": [32]}}
  census = s["by_size"]["32"]
  assert census["coverage"] == 1.0 and census["abs_error_mean"] < 1e-12


def test_jackknife_matches_brute_force_leave_one_out():
  rng = np.random.default_rng(1)
  p_all = rng.uniform(size=200)
  idx = rng.choice(200, 30, replace=False)
  y = np.clip(p_all[idx] + rng.normal(0, 0.2, 30), 0, 1)
  thetas = []
  for i in range(30):
    keep = np.arange(30) != i
    lam = audit_lib.ppi_plus_plus(p_all, y[keep], p_all[idx][keep], N=200).lam
    thetas.append(lam * p_all.mean() + np.mean(y[keep] - lam * p_all[idx][keep]))
  thetas = np.asarray(thetas)
  brute = np.sqrt((1 - 30 / 200) * 29 / 30 * np.sum((thetas - thetas.mean()) ** 2))
  assert audited_lib.jackknife_se(p_all, y, p_all[idx]) == pytest.approx(brute, rel=1e-9)


@pytest.mark.parametrize("kw", [{"stratify_by": "probe"}, {"stratify_by": "difficulty"}, {"k": 4}])
def test_audit_variants_still_cover(kw):
  preds, labels = _records(tasks=("a",), bias=0.1, seed=3)
  s = audit.audit_summary(preds, labels, family="fam", later_steps=[30, 40], sizes=(48,), default_size=48,
                          draws=100, **kw)
  assert 0.88 <= s["coverage"] <= 0.99
  assert s["abs_error_mean"] < s["abs_error_probe_only_mean"]


def test_audit_rejects_unknown_strata_and_missing_family():
  preds, labels = _records(tasks=("a",), N=30)
  with pytest.raises(ValueError, match="stratify_by"):
    audit.audit_summary(preds, labels, family="fam", later_steps=[30], draws=2, stratify_by="nope")
  with pytest.raises(ValueError, match="no prediction records"):
    audit.audit_summary(preds, labels, family="other", later_steps=[30], draws=2)


# ----------------------------------------------------------------------------- pass@k


def test_pass_at_k_matches_metrics_and_a_calibrated_probe():
  preds, labels = _records(calibrated=True, N=600, seed=2)
  out = audit.pass_at_k_summary(preds, labels, family="fam", ks=(1, 4, 8))
  assert set(out) == {"1", "4", "8"}
  cells = audit.join_cells(preds, labels, "fam", split="test", role="later")
  for (task, step), cell in cells.items():
    for k in (1, 4, 8):
      row = out[str(k)]["per_cell"][f"{task}@{step}"]
      measured = _comb_pass_at_k(cell["k"], cell["c"], k).mean()
      assert row["measured"] == pytest.approx(measured, abs=1e-12)
      assert row["predicted"] == pytest.approx(np.mean(1 - (1 - cell["p"]) ** k), abs=1e-12)
  # p is the true pass rate: 1 - (1 - p)^k is unbiased, so only sampling noise remains; an
  # offset fitted on two 32-question audits adds its own noise, and no more.
  for k in ("1", "4", "8"):
    assert out[k]["probe_alone"]["abs_error_mean"] < 0.03
    assert out[k]["abs_error_mean"] < 0.05
  assert out["1"]["calibrated"]["concentration"] > 30  # little spread around a perfect p
  assert out["8"]["mean_matched"]["abs_error_mean"] < 0.03


def test_pass_at_k_spread_calibration_undoes_jensen():
  # The probe says p = the task's mean rate for every question; the truth is 0 or 1 per question.
  rng = np.random.default_rng(0)
  preds, labels = [], []
  for step, role in ((10, "train"), (20, "later")):
    solved = rng.uniform(size=800) < 0.3
    for i in range(800):
      preds.append({"checkpoint_step": step, "task": "a", "question_id": str(i), "probe": "f", "p": 0.3,
                    "split": "val" if role == "train" else "test", "checkpoint_role": role})
      labels.append({"checkpoint_step": step, "task": "a", "question_id": str(i), "k": 8,
                     "c": 8 if solved[i] else 0})
  out = pak_demo.pass_at_k_summary(preds, labels, family="f", ks=(8,))["8"]
  assert out["probe_alone"]["abs_error_mean"] > 0.5  # 1 - 0.7^8 = 0.94 against a measured 0.3
  assert out["calibrated"]["abs_error_mean"] < 0.05
  assert pak_demo.spread_pass_at_k(np.array([0.3]), 8, 1e-3)[0] == pytest.approx(0.3, abs=1e-2)
  assert pak_demo.spread_pass_at_k(np.array([0.3]), 8, 1e6)[0] == pytest.approx(1 - 0.7 ** 8, abs=1e-4)
  # Against scipy's beta-binomial: pass@k is 1 - P(no success in k | Beta(p phi, (1 - p) phi)).
  from scipy.stats import betabinom
  p = np.array([1e-5, 0.02, 0.3, 0.77, 0.999])
  for phi in (0.2, 2.0, 50.0):
    np.testing.assert_allclose(pak_demo.spread_pass_at_k(p, 8, phi), 1 - betabinom.pmf(0, 8, p * phi, (1 - p) * phi),
                               rtol=1e-9)


# ----------------------------------------------------------------------------- drift


def _trajectory(rng, N=200, F=6, steps=6, back_at=None):
  """Cells of one task: question offsets u_i, the cell mean walking +0.5 sd per step along a
  direction, stepping back 1 sd from `back_at` on."""
  u = rng.normal(size=(N, F))
  d = np.zeros(F)
  d[0] = 1.0
  cells, pos = [], 0.0
  for j in range(steps):
    pos += -1.0 if back_at is not None and j >= back_at else 0.5
    cells.append(u + pos * d + 0.1 * rng.normal(size=(N, F)))
  return cells


def test_shift_monitor_fires_on_a_step_back_and_not_on_progress_or_no_change():
  rng = np.random.default_rng(0)
  cells = _trajectory(rng, back_at=4)
  mon = drift.ShiftMonitor.fit(cells[:3], paired=True)
  assert mon.threshold > 0 and all(s < 0 for s in mon.train_scores)
  assert not mon.check(cells[2], cells[3])["alarm"]  # still progressing
  assert mon.check(cells[3], cells[4])["alarm"]  # the regression
  same = cells[3] + 0.01 * rng.normal(size=cells[3].shape)
  assert not mon.check(cells[3], same)["alarm"]
  with pytest.raises(ValueError, match=">= 2"):
    drift.ShiftMonitor.fit(cells[:1])


def test_residual_test_and_domain_auroc():
  rng = np.random.default_rng(0)
  p = rng.uniform(0.2, 0.8, size=64)
  y = np.clip(p + rng.normal(0, 0.1, 64), 0, 1)
  assert drift.residual_test(y, p, N=400)[1] > 0.01
  m, pv = drift.residual_test(np.clip(y - 0.2, 0, 1), p, N=400)
  assert m < -0.1 and pv < 1e-4
  a = rng.normal(size=(150, 4))
  assert abs(drift.domain_auroc(a, rng.normal(size=(150, 4))) - 0.5) < 0.1
  assert drift.domain_auroc(a, rng.normal(size=(150, 4)) + [1.5, 0, 0, 0]) > 0.8


def _feature_sets(rng, steps, regress_task="b", regress_from=40, N=120):
  """FeatureSets whose gold NLL falls with training, except `regress_task` after `regress_from`."""
  out = []
  for task in ("a", "b", "c"):
    z = rng.normal(size=N)
    for step in steps:
      back = task == regress_task and step >= regress_from
      level = 3.0 - 0.02 * step + (0.04 * (step - regress_from + 10) if back else 0.0)
      nll_mean = np.exp(0.3 * z + np.log(max(level, 0.2))) + 0.02 * rng.normal(size=N) ** 2
      pooled = rng.normal(size=(N, 2, 4)).astype(np.float32) + step
      meta = {"checkpoint": f"s{step}", "checkpoint_step": step, "task": task, "layers": [0, 1],
              "question_ids": [f"{task}-{i}" for i in range(N)]}
      out.append(FeatureSet(meta, {"last": pooled, "mean": pooled, "nll_mean": nll_mean,
                                   "nll_sum": 5 * nll_mean}))
  return out


def test_drift_summary_fires_on_the_regressing_task_only(tmp_path):
  rng = np.random.default_rng(0)
  steps = (10, 20, 30, 40, 50, 60)
  preds, labels = _records(tasks=("a", "b", "c"), steps=steps, later_from=40, N=120, bias=0.0)
  fs = _feature_sets(rng, steps)
  d = audit.drift_summary(preds, labels, fs, family="fam", train_steps=[10, 20, 30], later_steps=[40, 50, 60],
                          layers=(0, 1), center=True, nll=True, draws=20)
  assert set(d["cells"]) == {f"{t}@{s}" for t in "abc" for s in (40, 50, 60)}
  for key, v in d["cells"].items():
    assert set(v) >= {"score", "threshold", "residual_p_value", "alarm"}
    assert v["score_alarm"] == key.startswith("b@"), (key, v)
  assert d["by_task"]["b"]["score_alarm_rate"] == 1.0


# ----------------------------------------------------------------------------- figures


def test_figures_write_pngs(tmp_path):
  preds, labels = _records(N=60)
  s = audit.audit_summary(preds, labels, family="fam", later_steps=[30, 40], sizes=(16,), default_size=16,
                          draws=5)
  pk = audit.pass_at_k_summary(preds, labels, family="fam")
  for path in (audit_figures.plot_audited_accuracy(s, tmp_path / "audit.png"),
               audit_figures.plot_pass_at_k(pk, tmp_path / "pass_at_k.png")):
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_audited_pass_at_k_removes_the_probes_bias():
  """A probe 0.15 too optimistic misses pass@k from one pass; PPI++ on a 32-question audit of
  the same cells gets it back within sampling error, with intervals that cover."""
  preds, labels = _records(tasks=("a",), bias=0.15, N=300, seed=4)
  out = audit.pass_at_k_summary(preds, labels, family="fam", ks=(1, 8), audit_size=32, draws=60)
  for k in ("1", "8"):
    assert out[k]["probe_alone"]["abs_error_mean"] > 0.06  # misses the 0.05 bar
    assert out[k]["audited"]["abs_error_mean"] < 0.05
    assert out[k]["audited"]["coverage"] >= 0.85


def test_audited_clock_matches_precision_by_the_ess_gain():
  from probing.demo import evaluate
  lat = {"generative_eval": 100.0, "questions": 1000, "probe": 1.0}
  cells = {"a@5": {"N": 200, "ess_gain": 1.0}, "a@6": {"N": 200, "ess_gain": 1.0},
           "b@5": {"N": 200, "ess_gain": 4.0}}
  out = evaluate.audited_clock(lat, {"audit_questions_per_task": 32, "per_cell": cells})
  assert out["audit_questions"] == 64 and out["audit_generation_seconds"] == pytest.approx(6.4)
  m_b = 1 / (1 / 200 + (1 / 32 - 1 / 200) / 4.0)  # 4x the audit's information, less with the fpc
  assert 32 * 2 < m_b < 32 * 4
  assert out["generation_alone_questions"] == pytest.approx(32 + m_b)
  assert out["speedup_at_matched_precision"] == pytest.approx((32 + m_b) * 0.1 / 7.4)


def test_residual_test_tolerance():
  """With a tolerance the test asks whether the probe is off by more than it: a 0.05 bias passes
  a 0.1 tolerance (and fails the plain test), a 0.3 bias fails both; tolerance 0 is two-sided."""
  rng = np.random.default_rng(0)
  y = rng.binomial(8, 0.5, size=400) / 8
  for bias, plain, tol in ((0.05, True, False), (0.3, True, True)):
    p = np.clip(y - bias + 0.05 * rng.normal(size=400), 0, 1)
    assert (drift.residual_test(y, p, N=4000)[1] < 0.05) == plain
    assert (drift.residual_test(y, p, N=4000, tolerance=0.1)[1] < 0.05) == tol
  m, pv = drift.residual_test(y, y - 0.01, tolerance=0.0)
  assert pv == 0.0 and drift.residual_test(y, y - 0.01, tolerance=0.02)[1] == 1.0


# ----------------------------------------------------------------------------- carried offsets


def test_carried_offsets_come_from_the_previous_later_audit():
  """A task's first later cell carries nothing; the next carries, draw by draw, the recalibration
  of the previous later cell's audit draws (the same draws the drift alarm reads)."""
  from probing.demo import carry
  from probing.demo.records import join_cells
  preds, labels = _records(tasks=("a",), steps=(10, 20, 30, 40, 50), later_from=30, N=80, bias=0.2)
  cells = join_cells(preds, labels, "fam", role="later")
  out = carry.carried_offsets(cells, [30, 40, 50], audit_size=16, draws=3, seed=7)
  assert out[("a", 30)] is None and len(out[("a", 40)]) == 3
  prev = cells[("a", 40)]
  for idx, offset in zip(carry.audit_draws("a", 40, len(prev["p"]), 16, 3, 7), out[("a", 50)]):
    assert len(idx) == 16
    assert offset == pytest.approx(audited_lib.recalibration(prev["c"][idx] / prev["k"][idx], prev["p"][idx],
                                                             prev["k"][idx]))
  assert np.median(out[("a", 50)]) < 0  # a probe 0.2 too optimistic is moved down
  # pass@8: the offset at which the audited questions' predicted pass@8 (Beta spread) is their
  # measured one.
  draws = np.stack(carry.audit_draws("a", 40, len(prev["p"]), 16, 3, 7))
  for idx, s in zip(draws, pak_demo.pass_at_k_offsets(8, 2.0)([(prev, draws)])):
    q = audited_lib.recalibrate(prev["p"][idx], s)
    measured = _comb_pass_at_k(prev["k"][idx], prev["c"][idx], 8).mean()
    assert pak_demo.spread_pass_at_k(q, 8, 2.0).mean() == pytest.approx(measured, abs=1e-6)
  # Pooled over two cells' audits: one offset per draw for the union of both draws' questions.
  cur = cells[("a", 50)]
  now = np.stack(carry.audit_draws("a", 50, len(cur["p"]), 16, 3, 7))
  for d, s in enumerate(pak_demo.pass_at_k_offsets(4, None)([(cur, now), (prev, draws)])):
    q = np.concatenate([audited_lib.recalibrate(cur["p"][now[d]], s), audited_lib.recalibrate(prev["p"][draws[d]], s)])
    kk = np.concatenate([cur["k"][now[d]], prev["k"][draws[d]]]).astype(int)
    cc = np.concatenate([cur["c"][now[d]], prev["c"][draws[d]]]).astype(int)
    assert (1 - (1 - q) ** 4).mean() == pytest.approx(_comb_pass_at_k(kk, cc, 4).mean(), abs=1e-6)
  assert carry.previous_cells(cells, [30, 40, 50]) == {("a", 30): None, ("a", 40): ("a", 30), ("a", 50): ("a", 40)}


def test_a_constant_bias_alarms_once_with_the_carried_offset():
  """A probe far too pessimistic at every later checkpoint (a skill learned after its labels): the
  residual test on the probe as trained fires at each of them; through the offset the previous
  audit fitted it fires at the first only, and the one-pass pass@k through that offset meets the
  0.05 bar the probe as trained misses."""
  rng = np.random.default_rng(1)
  steps = (10, 20, 30, 40, 50, 60)
  preds, labels = _records(tasks=("a", "b", "c"), steps=steps, later_from=40, N=200, bias=0.0, logit_bias=-2.5,
                           seed=2)
  d = audit.drift_summary(preds, labels, _feature_sets(rng, steps, regress_task=None), family="fam",
                          train_steps=[10, 20, 30], later_steps=[40, 50, 60], layers=(), nll=True, draws=40)
  for key, v in d["cells"].items():
    first = key.endswith("@40")
    assert v["alarm_as_trained"] and v["residual_alarm_rate_as_trained"] > 0.9, key
    assert v["residual_alarm"] == first and (v["carried_offset"] is None) == first, (key, v)
    assert abs(v["true_bias"]) < 0.1 if not first else v["true_bias"] == v["true_bias_as_trained"]
  assert d["settings"]["carry"] is True
  plain = audit.drift_summary(preds, labels, _feature_sets(rng, steps, regress_task=None), family="fam",
                              train_steps=[10, 20, 30], later_steps=[40, 50, 60], layers=(), nll=True, draws=40,
                              carry=False)
  assert all(v["residual_alarm"] and v["carried_offset"] is None for v in plain["cells"].values())
  pk = audit.pass_at_k_summary(preds, labels, family="fam", ks=(1, 8), audit_size=32, draws=40)
  for k in ("1", "8"):
    cells = {key: v for key, v in pk[k]["per_cell"].items() if not key.endswith("@40")}
    assert pk[k]["probe_alone"]["abs_error_mean"] > 0.1
    for block in (pk[k], pk[k]["one_pass"]):  # each beats the probe as trained, paired interval below 0
      d = block["minus_probe_alone"]
      assert d["ci"][0] <= d["diff"] <= d["ci"][1] and d["ci"][1] < 0
    assert pk[k]["abs_error_mean"] < 0.05, k  # this checkpoint's audit: every cell, the first included
    assert np.mean([abs(v["one_pass"] - v["held_out_measured"]) for v in cells.values()]) < 0.05, k
    first = [v for key, v in pk[k]["per_cell"].items() if key.endswith("@40")]
    assert all(abs(v["one_pass"] - v["held_out_measured"]) > 0.1 for v in first)  # nothing carried there
