"""probing.eval.intervals: question-cluster bootstrap CIs and paired differences."""
import numpy as np
import pytest

from probing.eval import intervals, metrics


def _records(seed=0, tasks=("a", "b"), steps=(1, 2, 3), n=50, noise=0.3):
  rng = np.random.default_rng(seed)
  out = []
  for t in tasks:
    skill = rng.random(n)
    for s in steps:
      for q in range(n):
        p_true = np.clip(skill[q] + rng.normal(0, noise), 0, 1)
        out.append({"task": t, "checkpoint_step": s, "question_id": f"q{q}", "c": int(rng.binomial(8, p_true)),
                    "k": 8, "p": float(np.round(skill[q], 1))})  # ties on purpose
  return out


def test_point_estimate_is_the_metrics_mean_and_cells_match():
  recs = _records()
  res = intervals.bootstrap_auroc({"x": recs}, n_boot=200)["x"]
  ref = metrics.primary_auroc(recs)
  assert res["mean"] == pytest.approx(ref["mean"], abs=1e-12)
  assert res["cells"] == ref["n_cells"]
  s = intervals.summarize(res)
  assert s["ci_low"] < s["mean"] < s["ci_high"]
  for t, v in s["per_task"].items():
    assert v["mean"] == pytest.approx(ref["per_task"][t], abs=1e-12) and v["ci_low"] < v["ci_high"]


def test_replicates_are_weighted_aurocs_of_the_drawn_questions():
  """One replicate recomputed by expanding the drawn questions and calling the sklearn-backed metric."""
  recs = [r for r in _records(n=30) if r["checkpoint_step"] == 1 and r["task"] == "a"]
  p = np.array([r["p"] for r in recs])
  c = np.array([r["c"] for r in recs], float)
  k = np.array([r["k"] for r in recs], float)
  w = np.random.default_rng(3).multinomial(len(recs), np.full(len(recs), 1 / len(recs)), size=2).astype(float)
  got = intervals._cell_auroc(p, c, k, w)
  for b in range(2):
    idx = np.repeat(np.arange(len(recs)), w[b].astype(int))
    assert got[b] == pytest.approx(metrics.weighted_auroc(p[idx], c[idx], k[idx]), abs=1e-12)


def test_paired_difference_cancels_shared_noise():
  recs = _records(seed=1)
  other = [dict(r, p=r["p"] + 0.01 * (hash(r["question_id"]) % 3)) for r in recs]
  res = intervals.bootstrap_auroc({"a": recs, "same": [dict(r) for r in recs], "b": other}, n_boot=300)
  same = intervals.paired_difference(res["a"], res["same"])
  assert same["diff"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0
  d = intervals.paired_difference(res["a"], res["b"])
  width_paired = d["ci_high"] - d["ci_low"]
  sa, sb = intervals.summarize(res["a"]), intervals.summarize(res["b"])
  assert width_paired < (sa["ci_high"] - sa["ci_low"])  # the pairing removes the question noise
  assert d["ci_low"] <= d["diff"] <= d["ci_high"]


def test_clusters_are_questions_not_rows():
  """A question drawn k times counts k times at every checkpoint: with identical checkpoints the
  replicate means of every cell agree."""
  recs = [r for r in _records(steps=(1,)) if r["task"] == "a"]
  twice = recs + [dict(r, checkpoint_step=2) for r in recs]
  res = intervals.bootstrap_auroc({"x": twice}, n_boot=50)["x"]
  one = intervals.bootstrap_auroc({"x": recs}, n_boot=50)["x"]
  np.testing.assert_allclose(res["replicates"], one["replicates"])


def test_predictors_must_cover_the_same_rows():
  recs = _records()
  with pytest.raises(ValueError, match="same questions"):
    intervals.bootstrap_auroc({"a": recs, "b": recs[:-1]}, n_boot=10)


def test_interval_coverage_on_a_known_population():
  """95% intervals from samples of a large population cover its AUROC about 95% of the time."""
  rng = np.random.default_rng(0)
  pop_n, n = 20000, 80
  score = rng.random(pop_n)
  c = rng.binomial(8, np.clip(score * 0.6 + 0.2 + rng.normal(0, 0.2, pop_n), 0, 1))
  truth = metrics.weighted_auroc(score, c, np.full(pop_n, 8))
  hits = 0
  for rep in range(60):
    idx = rng.choice(pop_n, n, replace=False)
    recs = [{"task": "t", "checkpoint_step": 1, "question_id": str(i), "p": score[i], "c": c[i], "k": 8} for i in idx]
    s = intervals.summarize(intervals.bootstrap_auroc({"x": recs}, n_boot=400, seed=rep)["x"])
    hits += s["ci_low"] <= truth <= s["ci_high"]
  assert hits >= 51  # 0.85 of 60: a 95% interval, allowing for the bootstrap's small-sample undercoverage
