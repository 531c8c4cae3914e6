"""Testbed pretraining: packing, determinism, checkpoints, loss decrease and resume after a kill."""
import jax
import numpy as np
import pytest
from flax import nnx

from configs.experiments import testbed
from models import checkpoint as model_checkpoint
from probing.testbed import pretrain
from probing.testbed import skills as synthetic
from probing.tokenizer import CharTokenizer

TOK = CharTokenizer(synthetic.ALPHABET)


def test_pack_rows_masks_all_but_answers():
  examples = iter([("12+3=", "15"), ("<ab=", "ba"), ("^321=", "123")] * 10)
  b = pretrain.pack_rows(examples, TOK, rows=3, seq_len=16)
  assert b["inputs"].shape == (3, 16)
  for r in range(3):
    for seg in range(1, b["segment_ids"][r].max() + 1):
      idx = np.flatnonzero(b["segment_ids"][r] == seg)
      text = TOK.decode(b["inputs"][r, idx])
      prompt, answer = text.split("=")
      assert (prompt + "=", answer) in {("12+3=", "15"), ("<ab=", "ba"), ("^321=", "123")}
      w = b["weights"][r, idx]
      # Weighted targets are exactly the answer followed by EOS.
      assert list(b["targets"][r, idx][w > 0]) == TOK.encode(answer) + [TOK.eos_id]
    assert np.all(b["weights"][r][b["segment_ids"][r] == 0] == 0)


def test_stream_is_a_function_of_seed_and_step():
  s = pretrain.PackedStream(("add", "rev"), TOK, batch_size=4, seq_len=32, seed=0)
  a, b = s.batch(7), s.batch(7)
  assert all(np.array_equal(a[k], b[k]) for k in a)
  assert not np.array_equal(a["inputs"], s.batch(8)["inputs"])
  assert (a["segment_ids"] > 0).mean() > 0.6  # rows are well packed (whole examples only, 32 tokens)


def test_skill_windows_stagger_the_mixture():
  s = pretrain.PackedStream(("rev", "path", "inc"), TOK, batch_size=8, seq_len=64, seed=0,
                            windows=((0.0, 1.0), (0.3, 1.0), (0.0, 0.6)), total_steps=100)
  assert s.mixture(10) == (1.0, 0.0, 1.0) and s.mixture(30) == (1.0, 1.0, 1.0) and s.mixture(60) == (1.0, 1.0, 0.0)

  def prefixes(step):
    b = s.batch(step)
    return {TOK.decode(b["inputs"][r, b["segment_ids"][r] == g])[0] for r in range(8)
            for g in range(1, b["segment_ids"][r].max() + 1)}
  assert "g" not in prefixes(10) and "g" in prefixes(50)  # path prompts start with g:
  assert any(p.isdigit() for p in prefixes(10)) and not any(p.isdigit() for p in prefixes(80))  # inc: digits


def test_checkpoint_schedule():
  assert pretrain.checkpoint_steps(100, 10) == list(range(10, 101, 10))
  log = pretrain.checkpoint_steps(1000, 8, "log", 10)
  assert log[0] == 10 and log[-1] == 1000 and len(log) == 8 and log == sorted(log)
  with pytest.raises(ValueError):
    pretrain.checkpoint_steps(5, 8)


def _smoke_config():
  c = testbed.get_config("smoke")
  c.train.steps = 12
  c.checkpoint.num = 4
  return c


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("full"))
  return workdir, pretrain.train(_smoke_config(), workdir)


def _loss(path, batch):
  return float(nnx.jit(pretrain.loss_fn)(model_checkpoint.load(path), batch))


def test_smoke_run_writes_checkpoints_and_learns(full_run):
  workdir, summary = full_run
  assert summary["steps"] == [3, 6, 9, 12]
  found = pretrain.list_checkpoints(workdir)
  assert [s for s, _ in found] == summary["steps"]
  meta = model_checkpoint.read_metadata(found[-1][1])
  assert meta["checkpoint_step"] == 12 and meta["checkpoint"] == "step_000012"
  assert meta["tokenizer"]["alphabet"] == synthetic.ALPHABET
  assert meta["skills"] == [f"syn_{s}" for s in testbed.SKILLS]
  c = _smoke_config()
  batch = pretrain.PackedStream(tuple(c.data.skills), TOK, 32, c.data.seq_len, seed=c.seed).batch(1000)
  assert _loss(found[-1][1], batch) < _loss(found[0][1], batch) - 0.2


def test_resume_after_kill_matches_uninterrupted_run(full_run, tmp_path):
  _, summary = full_run
  workdir = str(tmp_path / "resumed")
  first = pretrain.train(_smoke_config(), workdir, stop_at=7)  # "killed" after step 7
  assert first["end_step"] == 7 and first["steps"] == [3, 6]
  second = pretrain.train(_smoke_config(), workdir)
  assert second["start_step"] == 6  # the latest saved train state
  a = nnx.to_pure_dict(nnx.state(model_checkpoint.load(summary["checkpoints"][-1]), nnx.Param))
  b = nnx.to_pure_dict(nnx.state(model_checkpoint.load(second["checkpoints"][-1]), nnx.Param))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_resume_refuses_another_config(full_run):
  workdir, _ = full_run
  c = _smoke_config()
  c.train.lr = 1e-4
  with pytest.raises(ValueError, match="another config"):
    pretrain.train(c, workdir)
