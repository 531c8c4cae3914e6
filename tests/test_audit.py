"""probing.eval.audit: PPI++ against ppi_py, exact design checks by enumeration, coverage by
simulation on a synthetic task, stratification, audit draws, and pass@k (probing.eval.pass_at_k)."""
import itertools
import math

import numpy as np
import pytest

from probing.eval import audit, audited
from probing.eval.audit import (Estimate, audit_only, draw_audit, effective_sample_gain, neyman_allocation,
                                ppi_plus_plus, stratified)
from probing.eval.pass_at_k import pass_at_k_from_p, unbiased_pass_at_k


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _population(*, N=1000, k=8, bias=0.0, informative=True, seed=0):
  """A task: latent ease z, true pass rate q(z), labels Y = c/k, probe p = noisy calibrated q."""
  rng = np.random.default_rng(seed)
  z = rng.normal(size=N)
  y = rng.binomial(k, _sigmoid(-0.3 + 1.5 * z)) / k
  if informative:
    p = _sigmoid(-0.3 + 1.5 * z + 0.6 * rng.normal(size=N))
  else:
    p = rng.uniform(size=N)
  return y, np.clip(p + bias, 0.0, 1.0)


def _audit_data(seed=0, n=40, m=500):
  rng = np.random.default_rng(seed)
  p_all = rng.uniform(size=m)
  idx = rng.choice(m, n, replace=False)
  y = np.clip(0.8 * p_all[idx] + 0.15 + rng.normal(0, 0.2, n), 0, 1)
  return p_all, y, p_all[idx]


# ----------------------------------------------------------------------------- vs ppi_py


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_ppi_py(seed):
  ppi_py = pytest.importorskip("ppi_py")
  p_all, y, p = _audit_data(seed)
  est = ppi_plus_plus(p_all, y, p, alpha=0.05, ddof=0)  # ppi_py uses np.std (ddof=0)
  lo, hi = ppi_py.ppi_mean_ci(y, p, p_all, alpha=0.05)
  point = ppi_py.ppi_mean_pointestimate(y, p, p_all)
  assert est.value == pytest.approx(float(np.squeeze(point)), abs=1e-12)
  assert (est.ci_low, est.ci_high) == pytest.approx((float(np.squeeze(lo)), float(np.squeeze(hi))),
                                                   abs=1e-12)
  assert 0.0 < est.lam < 1.0 and est.method == "ppi++" and est.N == len(p_all)
  for lam in (0.0, 0.5, 1.0):  # fixed lam, no tuning
    fixed = ppi_plus_plus(p_all, y, p, lam=lam, ddof=0)
    lo, hi = ppi_py.ppi_mean_ci(y, p, p_all, alpha=0.05, lam=lam)
    assert (fixed.ci_low, fixed.ci_high) == pytest.approx(
        (float(np.squeeze(lo)), float(np.squeeze(hi))), abs=1e-12)
  lo, hi = ppi_py.classical_mean_ci(y, alpha=0.05)
  classical = audit_only(y, ddof=0)
  assert (classical.ci_low, classical.ci_high) == pytest.approx((float(lo), float(hi)), abs=1e-12)


def test_tuned_lam_clipped_like_ppi_py():
  ppi_py = pytest.importorskip("ppi_py")
  rng = np.random.default_rng(5)
  p_all = rng.uniform(size=300)
  p = p_all[:30]
  for y in (1.0 - p, np.clip(2.5 * (p - 0.5) + 0.5, 0, 1)):  # negative slope; slope > 1
    est = ppi_plus_plus(p_all, y, p, ddof=0)
    assert est.lam in (0.0, 1.0)
    lo, hi = ppi_py.ppi_mean_ci(y, p, p_all, alpha=0.05)
    assert (est.ci_low, est.ci_high) == pytest.approx((float(lo[0]), float(hi[0])), abs=1e-12)
    assert ppi_plus_plus(p_all, y, p, clip=False).lam not in (0.0, 1.0)


def test_default_ddof1_formula():
  """Default ddof=1: same point and lam, variance from the s^2 formula written out by hand."""
  p_all, y, p = _audit_data(3)
  n, m = len(y), len(p_all)
  est, est0 = ppi_plus_plus(p_all, y, p), ppi_plus_plus(p_all, y, p, ddof=0)
  assert est.value == est0.value and est.lam == est0.lam
  lam = est.lam
  var = lam ** 2 * np.var(p_all, ddof=1) / m + np.var(y - lam * p, ddof=1) / n
  assert est.std_err == pytest.approx(math.sqrt(var), rel=1e-12)
  assert est.halfwidth == pytest.approx(1.959963984540054 * est.std_err, rel=1e-12)
  assert est.covers(est.value) and not est.covers(est.ci_high + 1e-9)
  # lam = 0 is the audit alone in both variance models
  assert ppi_plus_plus(p_all, y, p, lam=0.0).std_err == pytest.approx(audit_only(y).std_err)
  fp0 = ppi_plus_plus(p_all, y, p, lam=0.0, finite_population=True)
  assert (fp0.value, fp0.std_err) == pytest.approx((y.mean(), audit_only(y, N=m).std_err))


# ----------------------------------------------------------------------------- exact design checks


@pytest.mark.parametrize("lam", [0.0, 0.7])
def test_finite_population_unbiased_by_enumeration(lam):
  """Fixed lam, every SRSWOR sample of a tiny population: the estimator averages to theta and
  its variance estimate averages to its true design variance (s^2 is unbiased for S^2)."""
  rng = np.random.default_rng(1)
  N, n = 8, 3
  y = rng.integers(0, 5, N) / 4
  p = rng.uniform(size=N)
  vals, variances = [], []
  for s in itertools.combinations(range(N), n):
    s = list(s)
    est = ppi_plus_plus(p, y[s], p[s], N=N, lam=lam)
    assert est.method == "ppi++_fpc" and est.N == N
    vals.append(est.value)
    variances.append(est.std_err ** 2)
  assert np.mean(vals) == pytest.approx(y.mean(), abs=1e-12)
  assert np.mean(variances) == pytest.approx(np.var(vals), rel=1e-10)
  if lam == 0.0:
    ests = [audit_only(y[list(s)], N=N) for s in itertools.combinations(range(N), n)]
    assert np.mean([e.value for e in ests]) == pytest.approx(y.mean(), abs=1e-12)
    assert np.mean([e.std_err ** 2 for e in ests]) == pytest.approx(np.var(vals), rel=1e-10)


def test_stratified_unbiased_by_enumeration():
  rng = np.random.default_rng(2)
  strata = np.repeat([0, 1], [5, 6])
  y = rng.integers(0, 5, 11) / 4
  p = rng.uniform(size=11)
  vals, variances = [], []
  for a in itertools.combinations(range(5), 2):
    for b in itertools.combinations(range(5, 11), 3):
      s = list(a + b)
      est = stratified(p, y[s], p[s], strata, strata[s], finite_population=True, lam=[0.3, 0.9])
      vals.append(est.value)
      variances.append(est.std_err ** 2)
  assert np.mean(vals) == pytest.approx(y.mean(), abs=1e-12)
  assert np.mean(variances) == pytest.approx(np.var(vals), rel=1e-10)


def test_census_has_no_sampling_error():
  y, p = _population(N=50, seed=4)
  est = ppi_plus_plus(p, y, p, finite_population=True)
  assert est.value == pytest.approx(y.mean()) and est.std_err == 0.0
  assert audit_only(y, N=50).std_err == 0.0


# ----------------------------------------------------------------------------- coverage


def _simulate(y, p, *, n=32, draws=300, seed=0):
  rng = np.random.default_rng(seed)
  theta = y.mean()
  out = {"audit": [], "ppi_fpc": [], "ppi": [], "gain": [], "lam": [], "excludes_probe": []}
  for _ in range(draws):
    s = draw_audit(len(y), n, seed=rng).indices
    a = audit_only(y[s], N=len(y))
    f = ppi_plus_plus(p, y[s], p[s], finite_population=True)
    u = ppi_plus_plus(p, y[s], p[s])
    out["audit"].append(a.covers(theta))
    out["ppi_fpc"].append(f.covers(theta))
    out["ppi"].append(u.covers(theta))
    out["gain"].append(effective_sample_gain(a, f))
    out["lam"].append(f.lam)
    out["excludes_probe"].append(not f.covers(p.mean()))
  return {k: np.asarray(v, float) for k, v in out.items()}


@pytest.mark.parametrize("bias", [0.0, 0.15])
def test_coverage_informative_probe(bias):
  y, p = _population(bias=bias, seed=10)
  r = _simulate(y, p, seed=17)  # a typical seed: coverage over 20 seeds spans 0.907-0.967
  assert r["audit"].mean() >= 0.90
  assert r["ppi_fpc"].mean() >= 0.90
  assert r["ppi"].mean() >= 0.90
  assert np.median(r["gain"]) > 1.5  # the probe is worth labels
  if bias:
    assert abs(p.mean() - y.mean()) > 0.1  # the probe alone is off ...
    assert r["excludes_probe"].mean() > 0.9  # ... and the audited interval says so


def test_pure_noise_probe_gets_lam_near_zero():
  y, p = _population(informative=False, seed=12)
  r = _simulate(y, p, n=200, draws=100, seed=13)
  assert r["lam"].mean() < 0.1 and np.quantile(r["lam"], 0.9) < 0.2
  assert 0.8 < np.median(r["gain"]) < 1.25  # no gain, and little loss


def test_stratified_coverage_with_neyman_allocation():
  y, p = _population(bias=0.1, seed=20)
  strata = np.digitize(p, np.quantile(p, [0.25, 0.5, 0.75]))
  sizes = np.bincount(strata)
  sigmas = np.array([np.sqrt(np.mean(p[strata == h] * (1 - p[strata == h]))) for h in range(4)])
  alloc = neyman_allocation(40, sizes, sigmas)
  rng = np.random.default_rng(21)
  cover = []
  for _ in range(300):
    s = draw_audit(len(y), 40, seed=rng, strata=strata, allocation=alloc).indices
    est = stratified(p, y[s], p[s], strata, strata[s], finite_population=True)
    assert len(est.lam) == 4 and est.method == "stratified_ppi++_fpc"
    cover.append(est.covers(y.mean()))
  assert np.mean(cover) >= 0.90


# ----------------------------------------------------------------------------- stratification


@pytest.mark.parametrize("fp", [False, True])
def test_one_stratum_is_unstratified(fp):
  p_all, y, p = _audit_data(6)
  one = stratified(p_all, y, p, np.zeros(len(p_all)), np.zeros(len(y)), finite_population=fp)
  flat = ppi_plus_plus(p_all, y, p, finite_population=fp)
  assert (one.value, one.std_err, one.ci_low, one.ci_high) == pytest.approx(
      (flat.value, flat.std_err, flat.ci_low, flat.ci_high), rel=1e-12)
  assert one.lam == (flat.lam,)


def test_neyman_allocation():
  alloc = neyman_allocation(60, [100, 300, 50, 5], [0.1, 0.4, 0.2, 0.0])
  assert alloc.sum() == 60 and alloc.dtype.kind == "i" and np.all(alloc >= 2)
  alloc = neyman_allocation(100, [400, 400, 200], [0.2, 0.1, 0.2])  # unbounded: exact Neyman
  assert alloc.tolist() == [50, 25, 25]
  alloc = neyman_allocation(30, [10, 3, 100], [1.0, 1.0, 0.01])  # caps at N_h, floor of 2
  assert alloc.sum() == 30 and alloc[0] == 10 and alloc[1] == 3 and alloc[2] >= 2
  assert neyman_allocation(9, [5, 5, 5], [0, 0, 0]).tolist() == [3, 3, 3]  # no info: proportional
  with pytest.raises(ValueError, match="budget"):
    neyman_allocation(5, [10, 10, 10], [1, 1, 1])
  with pytest.raises(ValueError, match="budget"):
    neyman_allocation(25, [10, 10], [1, 1])


# ----------------------------------------------------------------------------- audit draws


def test_draw_audit_uniform():
  d = draw_audit(100, 10, seed=0)
  assert len(np.unique(d.indices)) == 10 and np.all(np.diff(d.indices) > 0)
  assert np.allclose(d.inclusion_prob, 0.1)
  assert np.array_equal(d.indices, draw_audit(100, 10, seed=0).indices)
  counts = np.zeros(12)
  rng = np.random.default_rng(1)
  for _ in range(3000):
    counts[draw_audit(12, 3, seed=rng).indices] += 1
  assert np.allclose(counts / 3000, 0.25, atol=0.04)  # every question equally likely


def test_draw_audit_stratified():
  strata = np.repeat(["a", "b", "c"], [50, 30, 20])
  d = draw_audit(100, 20, seed=3, strata=strata)
  got = {h: int(np.sum(strata[d.indices] == h)) for h in "abc"}
  assert got == {"a": 10, "b": 6, "c": 4}
  assert np.allclose(d.inclusion_prob, 0.2)
  d = draw_audit(100, 12, seed=3, strata=strata, allocation=[2, 5, 5])
  assert np.allclose(d.inclusion_prob, np.select([strata[d.indices] == h for h in "abc"],
                                                 [2 / 50, 5 / 30, 5 / 20]))
  small = draw_audit(100, 7, seed=0, strata=np.repeat([0, 1, 2], [90, 9, 1]))
  assert np.bincount(np.repeat([0, 1, 2], [90, 9, 1])[small.indices]).tolist() == [4, 2, 1]
  with pytest.raises(ValueError, match="allocation"):
    draw_audit(100, 12, seed=0, strata=strata, allocation=[2, 5, 6])


# ----------------------------------------------------------------------------- pass@k


def test_unbiased_pass_at_k_brute_force():
  for n in range(1, 8):
    for c in range(n + 1):
      outcomes = [1] * c + [0] * (n - c)
      for k in range(1, n + 1):
        brute = np.mean([any(sub) for sub in itertools.combinations(outcomes, k)])
        assert unbiased_pass_at_k(c, n, k) == pytest.approx(brute, abs=1e-12)
  c = np.array([0, 1, 3, 8])
  assert np.allclose(unbiased_pass_at_k(c, 8, 1), c / 8)  # pass@1 is c/n
  assert unbiased_pass_at_k(0, 200, 50) == 0.0 and unbiased_pass_at_k(160, 200, 50) == 1.0
  assert 0.0 < unbiased_pass_at_k(1, 2000, 1) < 1e-3  # large n: no overflow
  assert unbiased_pass_at_k(1, 2000, 1000) == pytest.approx(0.5)


def test_pass_at_k_from_p():
  p = np.linspace(0, 1, 11)
  assert np.array_equal(pass_at_k_from_p(p, 1), p)
  assert np.allclose(pass_at_k_from_p(p, 4), 1 - (1 - p) ** 4)
  assert pass_at_k_from_p(1e-12, 3) == pytest.approx(3e-12, rel=1e-9)  # small p keeps precision
  # unbiased pass@k averaged over c ~ Binomial(n, p) is exactly 1 - (1 - p)^k
  n, k = 10, 3
  for q in (0.05, 0.3, 0.9):
    pmf = np.array([math.comb(n, c) * q ** c * (1 - q) ** (n - c) for c in range(n + 1)])
    mean = float(pmf @ unbiased_pass_at_k(np.arange(n + 1), n, k))
    assert mean == pytest.approx(float(pass_at_k_from_p(q, k)), abs=1e-12)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("call,match", [
    (lambda: audit_only([0.5]), "at least 2"),
    (lambda: audit_only([0.5, 1.2]), r"\[0, 1\]"),
    (lambda: audit_only([0.5, np.nan]), "NaN"),
    (lambda: audit_only([[0.5, 0.2]]), "1-D"),
    (lambda: audit_only([0.5, 0.2], alpha=1.0), "alpha"),
    (lambda: audit_only([0.5, 0.2], alpha=0), "alpha"),
    (lambda: audit_only([0.5, 0.2, 0.1], N=2), "N"),
    (lambda: audit_only([0.5, 0.2], ddof=2), "ddof"),
    (lambda: ppi_plus_plus([0.1, 0.2, 0.3], [0.5, 0.2], [0.1, 0.2, 0.3]), "length mismatch"),
    (lambda: ppi_plus_plus([0.1, 0.2, 0.3], [0.5, 0.2], [0.1, -0.1]), "p_audit"),
    (lambda: ppi_plus_plus([0.1, 1.5], [0.5, 0.2], [0.1, 0.2]), "p_all"),
    (lambda: ppi_plus_plus([0.1, 0.2, 0.3], [0.5, 0.2], [0.1, 0.2], N=5), "len\\(p_all\\)"),
    (lambda: ppi_plus_plus([0.1, 0.2], [0.5, 0.2, 0.1], [0.1, 0.2, 0.3],
                           finite_population=True), "n=3 > N"),
    (lambda: ppi_plus_plus([0.1, 0.2], [0.5, 0.2], [0.1, 0.2], lam=np.inf), "lam"),
    (lambda: stratified([0.1, 0.2, 0.3], [0.5, 0.2], [0.1, 0.2], [0, 0, 1], [0, 1]), "at least 2"),
    (lambda: stratified([0.1, 0.2, 0.3], [0.5, 0.2], [0.1, 0.2], [0, 0, 0], [0, 7]), "do not occur"),
    (lambda: stratified([0.1, 0.2, 0.3], [0.5, 0.2], [0.1, 0.2], [0, 0], [0, 0]), "strata_all"),
    (lambda: stratified([0.1, 0.2, 0.3], [0.5, 0.2], [0.1, 0.2], [0, 0, 0], [0, 0], lam=[1, 2]),
     "one value per stratum"),
    (lambda: draw_audit(10, 11, seed=0), "n:"),
    (lambda: draw_audit(10, 3, seed=0, strata=[0] * 9), "strata"),
    (lambda: draw_audit(10, 3, seed=0, strata=[0, 1] * 5), "2 questions per stratum"),
    (lambda: unbiased_pass_at_k(3, 2, 1), "c:"),
    (lambda: unbiased_pass_at_k(1, 2, 3), "k:"),
    (lambda: unbiased_pass_at_k(1.5, 2, 1), "integers"),
    (lambda: pass_at_k_from_p(1.2, 2), r"\[0, 1\]"),
    (lambda: pass_at_k_from_p(0.2, 0), "k:"),
    (lambda: effective_sample_gain(audit_only([0.1, 0.2]), audit_only([0.1, 0.2, 0.3])), "same audit"),
])
def test_input_validation(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_estimate_is_frozen():
  est = audit_only([0.2, 0.4, 0.9])
  assert isinstance(est, Estimate) and est.lam == 0.0 and est.N is None
  with pytest.raises(AttributeError):
    est.value = 0.0  # type: ignore[misc]
  assert set(audit.__all__) >= {"audit_only", "ppi_plus_plus", "stratified", "draw_audit"}


# ----------------------------------------------------------------------------- the audited estimate


def test_audited_accuracy_covers_a_biased_probe():
  """The reported PPI++ interval (jackknife se, t on n-1 df) covers the task's accuracy in >= 90%
  of random 32-question audits even when the probe is off by 0.3, and the stale alarm (residual
  off by more than the 0.1 tolerance) fires on that bias far more often than on a calibrated probe."""
  y, p = _population(N=300, seed=3)
  truth = y.mean()
  covered, alarms = [], {}
  for bias in (0.0, 0.3):
    pb = np.clip(p + bias, 0, 1)
    hits = []
    for d in range(300):
      idx = draw_audit(len(y), 32, seed=d).indices
      r = audited.audited_accuracy(pb, y[idx], pb[idx])
      lo, hi = r["ppi"]["ci"]
      covered.append(lo <= truth <= hi)
      hits.append(r["alarm"])
      assert r["n"] == 32 and r["N"] == 300 and 0 <= r["ppi"]["lam"] <= 1
    alarms[bias] = np.mean(hits)
  assert np.mean(covered) >= 0.9
  assert alarms[0.3] > 0.5 > 0.05 > alarms[0.0]


def test_an_audit_without_a_success_still_covers_a_rare_one():
  """A skill nearly never solved (2 successes in 200 questions x 8 samples): most audits of 32
  see no success, and a t interval on their zero variance would have width zero. The floor (the
  Agresti-Coull se of the 256 pooled samples) keeps it covered; away from the boundary it does
  not bind, so the interval is the jackknife t interval there."""
  N, k = 200, 8
  c = np.zeros(N)
  c[[3, 77]] = 1
  y, p = c / k, np.full(N, 0.01)
  truth, hits = y.mean(), []
  for d in range(200):
    idx = draw_audit(N, 32, seed=d).indices
    r = audited.audited_accuracy(p, y[idx], p[idx], k_audit=k)
    hits.append(r["ppi"]["ci"][0] <= truth <= r["ppi"]["ci"][1] and r["audit_only"]["ci"][0] <= truth)
  assert np.mean(hits) >= 0.95
  assert audited.floor_se(np.zeros(32), 8, N) == pytest.approx(
      np.sqrt((1 - 32 / 200) * 0.0074 * 0.9926 / 259.84), rel=0.02)  # p~ = 1.92 / 259.84
  y2, p2 = _population(N=300, seed=3)
  idx = draw_audit(300, 32, seed=0).indices
  r = audited.audited_accuracy(p2, y2[idx], p2[idx], k_audit=8)
  hw = (r["ppi"]["ci"][1] - r["ppi"]["ci"][0]) / 2
  assert hw == pytest.approx(audited.t_quantile(0.05, 31) * audited.jackknife_se(p2, y2[idx], p2[idx]))


def test_audited_accuracy_census_is_exact():
  y, p = _population(N=40, seed=1)
  r = audited.audited_accuracy(p, y, p)
  assert r["ppi"]["estimate"] == pytest.approx(y.mean()) and r["ppi"]["ci"][1] - r["ppi"]["ci"][0] < 1e-9


def test_audit_tasks_joins_records_and_names_the_culprit():
  y, p = _population(N=50, seed=2)
  preds = [{"task": "t", "question_id": f"q{i}", "p": float(v)} for i, v in enumerate(p)]
  ids = audited.audit_questions([r["question_id"] for r in preds], 12, seed=0, task="t")
  assert ids == audited.audit_questions([r["question_id"] for r in preds], 12, seed=0, task="t")
  assert ids != audited.audit_questions([r["question_id"] for r in preds], 12, seed=1, task="t")
  labels = [{"task": "t", "question_id": q, "c": int(round(y[int(q[1:])] * 8)), "k": 8} for q in ids]
  got = audited.audit_tasks(preds, labels)["t"]
  idx = [int(q[1:]) for q in sorted(ids)]
  want = audited.audited_accuracy(p, np.round(y[idx] * 8) / 8, p[idx], k_audit=8)
  assert got == want
  with pytest.raises(ValueError, match="t/q999 was not predicted"):
    audited.audit_tasks(preds, labels + [{"task": "t", "question_id": "q999", "c": 1, "k": 8}])
  with pytest.raises(ValueError, match="labelled twice"):
    audited.audit_tasks(preds, labels + labels[:1])


def test_recalibration_matches_the_audit_mean_and_keeps_the_ranking():
  rng = np.random.default_rng(3)
  p = rng.uniform(0.05, 0.95, size=40)
  y = rng.binomial(8, np.clip(p - 0.3, 0, 1)) / 8
  s = audited.recalibration(y, p, 8)
  q = audited.recalibrate(p, s)
  assert s < 0 and q.mean() == pytest.approx(y.mean(), abs=1e-8)
  assert np.array_equal(np.argsort(q), np.argsort(p))
  assert np.array_equal(audited.recalibrate(p, None), p) and np.array_equal(audited.recalibrate(p, 0.0), p)
  rows = audited.recalibrate(p, np.array([0.0, s])[:, None])  # one row per offset
  assert rows.shape == (2, 40) and np.allclose(rows[0], p) and np.array_equal(rows[1], q)
  # No success in 40 x 8 samples: the target is half a sample above 0, a finite offset.
  s0 = audited.recalibration(np.zeros(40), p, 8)
  assert np.isfinite(s0) and audited.recalibrate(p, s0).mean() == pytest.approx(0.5 / 320, rel=1e-6)
  with pytest.raises(ValueError, match="p_audit"):
    audited.recalibration(y, np.append(p[:-1], 1.5))
