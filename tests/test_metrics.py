"""probing.eval.metrics against scikit-learn on expanded per-sample data, plus edge rules."""

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, roc_auc_score

from probing.eval import metrics


def _random(n=60, k=8, seed=0):
  rng = np.random.default_rng(seed)
  p = np.round(rng.uniform(size=n), 2)  # rounding creates ties, which must count one half
  c = rng.binomial(k, p)
  return p, c, np.full(n, k)


def _expand(p, c, k):
  """One row per sampled outcome: c ones and k-c zeros, each scored by the question's p."""
  y = np.concatenate([np.r_[np.ones(ci), np.zeros(ki - ci)] for ci, ki in zip(c, k)])
  return y, np.repeat(p, k)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_auroc_matches_sklearn_expanded(seed):
  p, c, k = _random(seed=seed)
  k = k + np.arange(len(k)) % 3  # unequal k per question
  c = np.minimum(c, k)
  y, s = _expand(p, c, k)
  assert metrics.weighted_auroc(p, c, k) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_weighted_auroc_undefined_is_nan():
  assert np.isnan(metrics.weighted_auroc([0.2, 0.8], [0, 0], [4, 4]))


def _records(task, step, p, c, k, greedy=None):
  return [dict(task=task, checkpoint_step=step, question_id=f"q{i}", p=float(pi), c=int(ci),
               k=int(ki), greedy=None if greedy is None else int(greedy[i]))
          for i, (pi, ci, ki) in enumerate(zip(p, c, k))]


def test_primary_auroc_cells_and_average():
  recs, want = [], {}
  for t, task in enumerate(["gsm8k", "arc"]):
    for step in (100, 200):
      p, c, k = _random(seed=10 * t + step)
      recs += _records(task, step, p, c, k)
      want[(task, step)] = roc_auc_score(*_expand(p, c, k))
  out = metrics.primary_auroc(recs)
  assert out["n_cells"] == 4 and out["n_cells_skipped"] == 0
  for cell, v in want.items():
    assert out["cells"][cell] == pytest.approx(v)
  assert out["mean"] == pytest.approx(np.mean(list(want.values())))
  assert out["per_task"]["arc"] == pytest.approx(np.mean([want[("arc", 100)], want[("arc", 200)]]))


def test_cell_rule_exactly_five_vs_four():
  p = [0.1, 0.9]
  ok = _records("t", 1, p, c=[0, 5], k=[5, 5])  # 5 positives, 5 negatives: defined
  few_pos = _records("t", 2, p, c=[0, 4], k=[5, 4])  # 4 positives: skipped
  few_neg = _records("u", 1, p, c=[1, 5], k=[5, 5])  # 4 negatives: skipped
  out = metrics.primary_auroc(ok + few_pos + few_neg)
  assert out["cells"] == {("t", 1): 1.0}
  assert out["n_cells"] == 1 and out["n_cells_skipped"] == 2
  none = metrics.primary_auroc(few_pos)
  assert none["mean"] is None and none["n_cells_skipped"] == 1


def test_structured_array_and_column_mapping_agree_with_dicts():
  p, c, k = _random(seed=5)
  recs = _records("t", 3, p, c, k)
  table = np.array([(r["task"], r["checkpoint_step"], r["question_id"], r["p"], r["c"], r["k"])
                    for r in recs],
                   dtype=[("task", "U8"), ("checkpoint_step", "i8"), ("question_id", "U8"),
                          ("p", "f8"), ("c", "i8"), ("k", "i8")])
  cols = {f: [r[f] for r in recs] for f in recs[0]}
  want = metrics.primary_auroc(recs)["mean"]
  assert metrics.primary_auroc(table)["mean"] == pytest.approx(want)
  assert metrics.primary_auroc(cols)["mean"] == pytest.approx(want)
  pa = pytest.importorskip("pyarrow")
  assert metrics.primary_auroc(pa.Table.from_pylist(recs))["mean"] == pytest.approx(want)


def test_greedy_and_threshold_auroc():
  rng = np.random.default_rng(3)
  p, c, k = _random(n=40, seed=3)
  greedy = (rng.uniform(size=40) < p).astype(int)
  recs = _records("t", 1, p, c, k, greedy=greedy)
  recs[0]["greedy"] = None  # not run: dropped
  out = metrics.auroc_summary(recs)
  assert out["greedy"]["cells"][("t", 1)] == pytest.approx(roc_auc_score(greedy[1:], p[1:]))
  assert out["pass1_ge_0.5"]["mean"] == pytest.approx(roc_auc_score(c / k >= 0.5, p))
  assert "greedy" not in metrics.auroc_summary([{k_: v for k_, v in r.items() if k_ != "greedy"}
                                                for r in recs])
  assert "greedy" not in metrics.auroc_summary([dict(r, greedy=None) for r in recs])  # never run


def test_cross_checkpoint_matrix_masks_earlier_steps():
  by_train = {}
  for i in (100, 200):
    recs = []
    for step in (100, 200, 300):
      p, c, k = _random(seed=i + step)
      recs += _records("t", step, p, c, k)
    by_train[i] = recs
  res = metrics.cross_checkpoint_matrix(by_train)
  assert res.train_steps == [100, 200] and res.test_steps == [100, 200, 300]
  assert np.isnan(res.matrix[0, 0]) and np.isnan(res.matrix[1, :2]).all()
  assert np.isfinite(res.matrix[0, 1:]).all() and np.isfinite(res.matrix[1, 2])
  assert res.matrix[0, 2] == pytest.approx(metrics.primary_auroc(
      [r for r in by_train[100] if r["checkpoint_step"] == 300])["mean"])
  full = metrics.cross_checkpoint_matrix(by_train, later_only=False)
  assert np.isfinite(full.matrix).all()


def test_brier_binary_and_soft_match_sklearn():
  p, c, k = _random(seed=7)
  y, s = _expand(p, c, k)
  assert metrics.brier(p, c / k, k=k) == pytest.approx(brier_score_loss(y, s))
  assert metrics.brier(p, c / k) == pytest.approx(brier_score_loss(y, s))  # equal k
  yb = (c > 4).astype(float)
  assert metrics.brier(p, yb) == pytest.approx(brier_score_loss(yb, p))
  # Expected Brier = MSE to pass@1 + the outcome variance pass1 * (1 - pass1).
  assert metrics.brier(p, c / k) == pytest.approx(
      metrics.mse(p, c / k) + np.mean(c / k * (1 - c / k)))


def test_reliability_and_ece_match_sklearn_calibration_curve():
  p, c, k = _random(n=200, seed=8)
  p[:3] = [0.0, 0.1, 1.0]  # bin edges land where sklearn puts them
  y, s = _expand(p, c, k)
  prob_true, prob_pred = calibration_curve(y, s, n_bins=10, strategy="uniform")
  curve = metrics.reliability_curve(p, c, k, n_bins=10)
  np.testing.assert_allclose(curve.mean_pred, prob_pred)
  np.testing.assert_allclose(curve.frac_pos, prob_true)
  assert curve.counts.sum() == k.sum()
  want = np.sum(curve.counts / len(y) * np.abs(prob_true - prob_pred))
  assert metrics.ece(p, c, k) == pytest.approx(want)
  assert metrics.ece([0.5, 0.5], [1, 0], 1) == 0.0


def test_task_accuracy_bootstrap():
  rng = np.random.default_rng(0)
  pass1 = rng.uniform(size=150)
  p = np.clip(pass1 + rng.normal(0, 0.1, size=150), 0, 1)
  out = metrics.task_accuracy(p, pass1, n_boot=500, seed=1)
  assert out["predicted"] == pytest.approx(p.mean()) and out["measured"] == pytest.approx(pass1.mean())
  assert out["predicted_ci"][0] <= out["predicted"] <= out["predicted_ci"][1]
  assert out["measured_ci"][0] <= out["measured"] <= out["measured_ci"][1]
  assert out["abs_error"] == pytest.approx(metrics.abs_error(p, pass1))
  assert out == metrics.task_accuracy(p, pass1, n_boot=500, seed=1)  # deterministic per seed
  by_id = metrics.task_accuracy({"a": 0.2, "b": 0.6}, {"b": 1.0, "a": 0.0}, n_boot=50)
  assert by_id["abs_error"] == pytest.approx(0.1) and by_id["n_questions"] == 2


@pytest.mark.parametrize("call, match", [
    (lambda: metrics.weighted_auroc([0.1, 0.2], [1], [2, 2]), "length mismatch"),
    (lambda: metrics.weighted_auroc([0.1, 1.2], [1, 1], [2, 2]), "^p:"),
    (lambda: metrics.weighted_auroc([0.1, np.nan], [1, 1], [2, 2]), "^p: contains NaN"),
    (lambda: metrics.weighted_auroc([0.1, 0.2], [3, 1], [2, 2]), "^c: c <= k"),
    (lambda: metrics.weighted_auroc([0.1, 0.2], [0, 1], [0, 2]), "^k:"),
    (lambda: metrics.brier([0.1], [1.5]), "^y:"),
    (lambda: metrics.mse([0.1, 0.2], [0.1]), "length mismatch"),
    (lambda: metrics.ece([0.1], [2], [1]), "^c:"),
    (lambda: metrics.primary_auroc([{"task": "t", "p": 0.1}]), "missing field"),
    (lambda: metrics.primary_auroc(_records("t", 1, [0.1, 0.2], [1, 1], [2, 2]) * 2), "duplicate"),
    (lambda: metrics.greedy_auroc(_records("t", 1, [0.1], [1], [2], greedy=[2])), "^greedy:"),
    (lambda: metrics.task_accuracy({"a": 0.1}, {"b": 0.1}), "question ids differ"),
    (lambda: metrics.task_accuracy([0.1], [0.1], n_boot=0), "^n_boot:"),
])
def test_input_validation_names_the_field(call, match):
  with pytest.raises(ValueError, match=match):
    call()
