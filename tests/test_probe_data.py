"""probing.probes.data: hash-stable leak-free splits, and bad joins that name the culprit."""
import dataclasses

import numpy as np
import pytest

from probe_fixtures import LAYERS, synthetic
from probing.features import FeatureError
from probing.probes import build_data, make_split
from probing.probes.data import default_train_upto, question_roles, split_unit, train_checkpoint_count


@pytest.fixture(scope="module")
def data():
  sets, labels = synthetic()
  return build_data(sets, labels, layers=LAYERS, pooling="mean", tokens=True, nll=True)


def test_splits_are_hash_stable_and_disjoint(data):
  a, b = make_split(data), make_split(data.subset(np.arange(len(data))[::-1]))
  test_q = {(t, q) for t, q in zip(data.task[a.test], data.question_id[a.test])}
  train_q = {(t, q) for t, q in zip(data.task[a.train | a.val], data.question_id[a.train | a.val])}
  assert not test_q & train_q
  assert (data.step[a.train | a.val] <= a.train_upto_step).all() and (data.step[a.test] > 300).all()
  assert split_unit("ta", "ta-3") == split_unit("ta", "ta-3")
  assert sorted(zip(data.task[a.test], data.question_id[a.test])) == sorted(
      zip(data.task[::-1][b.test], data.question_id[::-1][b.test]))
  assert default_train_upto([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) == 4
  assert default_train_upto([5, 6, 7]) == 6


def test_bad_inputs_name_the_culprit(tmp_path):
  sets, labels = synthetic(n_questions=20, steps=(1, 2, 3))
  with pytest.raises(FeatureError, match=r"ta-0.*without labels|1 without labels"):
    build_data(sets, [r for r in labels if r["question_id"] != "ta-0"], layers=(1,))
  with pytest.raises(FeatureError, match=r"'ck1'.*no records for this checkpoint"):
    build_data(sets, [r for r in labels if r["checkpoint"] != "ck1"], layers=(1,))
  with pytest.raises(FeatureError, match=r"layers \[7\] were not extracted"):
    build_data(sets, labels, layers=(1, 7))
  moved = [dict(r, checkpoint_step=99) if r["checkpoint"] == "ck2" else r for r in labels]
  with pytest.raises(FeatureError, match="checkpoint_step 2 but labels say 99"):
    build_data(sets, moved, layers=(1,))
  sets[1].arrays["mean"][3, 0, 5] = np.nan
  with pytest.raises(FeatureError, match=r"checkpoint 'ck2' task 'ta'.*NaN.*'ta-3'"):
    build_data(sets, labels, layers=(0,))
  sets[1].arrays["mean"][3, 0, 5] = 0.0
  retok = [dataclasses.replace(s, meta=dict(s.meta, tokenizer_hash="u")) if s.meta["checkpoint"] == "ck3"
           else s for s in sets]
  with pytest.raises(FeatureError, match="different tokenizers"):
    build_data(retok, labels, layers=(1,))


def test_question_roles_agree_with_make_split(data):
  split = make_split(data, earlier_predicts_later=False)
  roles = question_roles(data.task, data.question_id, 0.3, 0.15)
  np.testing.assert_array_equal(roles == "test", split.test)
  np.testing.assert_array_equal(roles == "val", split.val)
  assert train_checkpoint_count(10) == 4 and train_checkpoint_count(3) == 2
  other = question_roles(data.task, data.question_id, 0.3, 0.15, seed=1)  # another seed, another split
  assert (other != roles).any() and abs((other == "test").mean() - (roles == "test").mean()) < 0.15
  with pytest.raises(ValueError, match=">= 2 checkpoints"):
    train_checkpoint_count(1)
