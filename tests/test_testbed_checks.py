"""probing.testbed.checks: the testbed's acceptance checks on hand-made labels and predictions."""
import numpy as np

from probing.testbed import checks


def _acc(curves):
  return {t: {str(s): {"pass1": a} for s, a in zip((10, 20, 30, 40, 50), v)} for t, v in curves.items()}


def test_timing_checks_count_rises_on_either_side_of_the_cutoff():
  acc = _acc({"syn_sum": [0.0, 0.1, 0.2, 0.5, 0.6], "syn_path": [0.0, 0.0, 0.0, 0.3, 0.4],
              "syn_rev": [0.5, 0.9, 0.9, 0.9, 0.9], "syn_nodup": [0.4, 0.5, 0.5, 0.5, 0.5],
              "syn_inc": [0.2, 0.6, 0.5, 0.3, 0.2], "syn_change": [0.0, 0.0, 0.01, 0.01, 0.02]})
  out = checks.timing_checks(acc, cutoff_step=20, regression="inc")
  # change never learned and inc (the regression skill) falling: neither is timed
  assert out["half_final_accuracy_step"] == {"syn_sum": 40, "syn_path": 40, "syn_rev": 10, "syn_nodup": 10}
  assert out["skills_rising_after_cutoff"]["skills"] == ["syn_path", "syn_sum"]
  assert out["skills_rising_after_cutoff"]["met"] is False  # 2 < 3
  assert out["skills_rising_before_cutoff"]["met"] is True
  assert np.isclose(out["regression_drop"]["value"], 0.4) and out["regression_drop"]["met"]


def test_reference_checks_tell_an_oracle_from_a_weak_reference():
  rng = np.random.default_rng(0)
  labels, preds, diff = [], [], {}
  for task, oracle in (("syn_rev", True), ("syn_sum", False)):
    for q in range(60):
      diff[(task, f"q{q}")] = q % 2
      for step in (1, 2):
        p = rng.random()
        c = int(rng.binomial(8, p))
        p_ref = p if oracle else p * 10 ** rng.uniform(-4, -1)  # one of many valid answers
        labels.append({"checkpoint_step": step, "task": task, "question_id": f"q{q}", "c": c, "k": 8})
        preds.append({"checkpoint_step": step, "task": task, "question_id": f"q{q}", "probe": checks.P_REF,
                      "p": p_ref})
  out = checks.reference_checks(labels, preds, diff, ["syn_rev", "syn_sum"])
  assert out["syn_rev/pass1_over_p_ref"]["value"] < 1.5 and not out["syn_rev/pass1_over_p_ref"]["met"]
  assert out["syn_rev/within_cell_spearman_p_ref"]["value"] > 0.7
  assert out["syn_sum/pass1_over_p_ref"]["value"] > 10 and out["syn_sum/pass1_over_p_ref"]["met"]
  assert out["syn_sum/within_cell_spearman_p_ref"]["met"]


def test_prior_check_and_all_met():
  base = {"task_difficulty_prior": {"auroc_later_checkpoints": {"per_task": {
      "a": {"mean": 0.55}, "b": {"mean": 0.58}, "c": {"mean": 0.7}, "d": {"mean": 0.6}, "e": {"mean": 0.5}}}}}
  out = checks.prior_check(base, ["a", "b", "c", "d", "e"])["task_level_prior_weak_skills"]
  assert out["value"] == 4 and out["met"] and out["skills"] == ["a", "b", "d", "e"]
