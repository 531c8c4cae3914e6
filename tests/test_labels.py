"""probing.labels: records, resumption after SIGKILL (== an uninterrupted run), bad input."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import hf_reference
from configs.experiments import label as label_config
from models import checkpoint, olmo3
from probing import labels
from probing.eval import audited as audit
from probing.testbed import skills as synthetic
from probing.tasks.olmo_eval import shipped_tokenizer_path
from probing.tokenizer import CharTokenizer, HFTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BPE = "gpt-neox-olmo-dolma-v1_5"  # the BPE tokenizer shipped with the task data
# Two synthetic skills, whichever the registry has (the set of skills may change).
TASKS = ",".join([n for n in labels.task_registry.names() if n.startswith("syn_")][:2])


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  """A tiny random orbax checkpoint whose metadata names the testbed's character tokenizer."""
  tok = CharTokenizer(synthetic.ALPHABET)
  cfg = olmo3.tiny(vocab_size=tok.vocab_size, sliding_window=8, max_position_embeddings=64,
                   pad_token_id=tok.pad_id, eos_token_id=tok.eos_id, vocab_pad_multiple=8)
  path = str(tmp_path_factory.mktemp("ckpt") / "step_000010")
  checkpoint.save(path, olmo3.init_model(cfg, seed=0), {
      "tokenizer": {"kind": "char", "alphabet": synthetic.ALPHABET}, "checkpoint": "step_000010",
      "checkpoint_step": 10})
  return path


DATA_KEYS = ("checkpoint", "tasks", "limit", "tokenizer", "checkpoint_name", "checkpoint_step", "overwrite", "audit")


def _config(ckpt, out_dir, **kw):
  c = label_config.get_config()
  c.data.update(dict(checkpoint=ckpt, tasks=TASKS, limit=12))
  c.update(dict(batch_size=4, num_samples=4, out=str(out_dir)))
  c.data.update({k: v for k, v in kw.items() if k in DATA_KEYS})
  c.update({k: v for k, v in kw.items() if k not in DATA_KEYS})
  return c


def _flags(c):
  flat = {f"data.{k}": v for k, v in c.data.items()} | {k: v for k, v in c.items() if k != "data"}
  return [f"--config.{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in flat.items()
          if v is not None and v != ""]


def _without_timings(records):
  return sorted((json.dumps({k: v for k, v in r.items() if k != "timings"}, sort_keys=True) for r in records))


def test_killed_run_resumes_to_the_uninterrupted_result(ckpt, tmp_path):
  full = labels.run(_config(ckpt, tmp_path / "full"), log=lambda _: None)
  want = labels.read_label_file(full["out"])
  assert len(want) == 24 and {r["k"] for r in want} == {4}
  assert all(r["pass1"] == r["c"] / 4 and r["greedy"] in (0, 1) and r["checkpoint_step"] == 10 for r in want)
  # A random audit (data.audit) labels the drawn questions only, exactly as the full run labels them.
  audited = labels.read_label_file(labels.run(_config(ckpt, tmp_path / "audit", audit=5), log=lambda _: None)["out"])
  for task in TASKS.split(","):
    ids = audit.audit_questions([r["question_id"] for r in want if r["task"] == task], 5, seed=0, task=task)
    assert sorted(r["question_id"] for r in audited if r["task"] == task) == sorted(ids)
  assert _without_timings(audited) == _without_timings(
      [r for r in want if (r["task"], r["question_id"]) in {(a["task"], a["question_id"]) for a in audited}])

  cfg = _config(ckpt, tmp_path / "resumed")
  out = tmp_path / "resumed" / "step_000010.jsonl"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  proc = subprocess.Popen([sys.executable, "-m", "launch.label"] + _flags(cfg), cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    if out.exists() and out.read_bytes().count(b"\n") >= 1:
      break
    time.sleep(0.005)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  partial = out.read_bytes().count(b"\n")
  assert 0 < partial < 24, partial  # killed mid-way
  with open(out, "a") as f:
    f.write('{"checkpoint": "step_000010", "task": "syn_k')  # a torn write

  resumed = labels.run(cfg, log=lambda _: None)
  assert resumed["new_records"] == 24 - partial
  got = labels.read_label_file(resumed["out"])
  assert _without_timings(got) == _without_timings(want)
  again = labels.run(cfg, log=lambda _: None)  # nothing left to do
  assert again["new_records"] == 0
  prov = json.load(open(resumed["provenance"]))
  assert set(prov["tasks"]) == set(TASKS.split(",")) and prov["tokenizer_hash"] and prov["code_version"]

  with pytest.raises(labels.LabelError, match="seed.*--config.data.overwrite=True"):
    labels.run(_config(ckpt, tmp_path / "resumed", seed=1), log=lambda _: None)
  replaced = labels.run(_config(ckpt, tmp_path / "resumed", seed=1, overwrite=True), log=lambda _: None)
  assert replaced["new_records"] == replaced["records"] == 24  # the seed-0 labels are gone, not mixed in
  assert json.load(open(replaced["provenance"]))["result_settings"]["seed"] == 1


@pytest.mark.parametrize("kw, match", [
    (dict(tasks="syn_add,nope"), "unknown task"), (dict(tasks="nope_*"), "matches no task"), (dict(top_p=0.0), "top_p"), (dict(top_p=1.2), "top_p"),
    (dict(temperature=-0.5), "temperature"), (dict(num_samples=0), "num_samples"),
    (dict(checkpoint="/nonexistent/ckpt"), "not a directory")])
def test_bad_input_is_rejected_before_work(ckpt, tmp_path, kw, match):
  with pytest.raises(labels.LabelError, match=match):
    labels.setup(_config(ckpt, tmp_path, **kw))
  assert not (tmp_path / "step_000010.jsonl").exists()


def test_checkpoint_that_does_not_load(tmp_path):
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "config.json").write_text("{not json")
  with pytest.raises(labels.LabelError, match="does not load"):
    labels.setup(_config(str(bad), tmp_path, tokenizer="char"))


def test_launch_exits_nonzero_with_a_clear_error(ckpt, tmp_path):
  cfg = _config(ckpt, tmp_path, tasks="no_such_task")
  proc = subprocess.run([sys.executable, "-m", "launch.label"] + _flags(cfg), cwd=ROOT, capture_output=True,
                        text=True, env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=""), timeout=120)
  assert proc.returncode != 0
  assert "error: unknown task 'no_such_task'" in proc.stderr


def test_hf_checkpoint_dir_loads(tmp_path):
  hf = hf_reference.random_hf_model(hf_reference.hf_config(), seed=0)
  path = hf_reference.save_hf_checkpoint(hf, str(tmp_path / "stage1-step1200"))
  s = labels.setup(_config(path, tmp_path, tokenizer="char"))
  assert (s.checkpoint, s.checkpoint_step) == ("stage1-step1200", 1200)
  assert s.model.config.vocab_size == 128


def test_task_patterns_expand():
  from probing import tasks
  assert tasks.expand("syn_*,syn_add") == [n for n in tasks.names() if n.startswith("syn_")]
  with pytest.raises(KeyError, match="unknown task 'nope'"):
    tasks.expand("syn_add,nope")


def test_stop_tokens_cover_single_token_stops():
  tok = CharTokenizer("ab\n")
  ids, seqs = labels.stop_tokens(tok, ("\n\n", "b"))
  assert ids == (tok.eos_id, tok.encode("b")[0]) and seqs == (tuple(tok.encode("\n\n")),)


def test_failed_run_does_not_block_a_corrected_rerun(ckpt, tmp_path):
  """A sidecar whose labels file holds no record (a run that failed before its first batch) is
  replaced; once records exist, changed result settings are refused."""
  prov = str(tmp_path / "step_000010.provenance.json")
  labels._write_provenance(prov, labels.setup(_config(ckpt, tmp_path, seed=0)), has_records=False)
  labels._write_provenance(prov, labels.setup(_config(ckpt, tmp_path, seed=1)), has_records=False)
  assert json.load(open(prov))["result_settings"]["seed"] == 1
  with pytest.raises(labels.LabelError, match="seed"):
    labels._write_provenance(prov, labels.setup(_config(ckpt, tmp_path, seed=2)), has_records=True)


@pytest.fixture(scope="module")
def gsm8k_ckpt(tmp_path_factory):
  """A tiny random 2-layer OLMo3 (window 8 + one full layer) on the shipped BPE tokenizer, made to
  stop often: a constant embedding feature that the LM head reads as a bias for EOS, a "\\n\\n"
  token, and "Question" then ":" (the stop sequence "Question:")."""
  tok = HFTokenizer(shipped_tokenizer_path(BPE))
  cfg = olmo3.tiny(vocab_size=tok.vocab_size, num_hidden_layers=2, max_position_embeddings=1024,
                   layer_types=("sliding_attention", "full_attention"), eos_token_id=tok.eos_id,
                   pad_token_id=tok.pad_id)
  graphdef, state = nnx.split(olmo3.abstract_model(cfg))  # weights drawn in numpy: no compile per shape
  rng = np.random.default_rng(0)
  state = jax.tree_util.tree_map_with_path(lambda p, x: np.ones(x.shape, x.dtype) if "norm" in str(p[-2])
                                           else (0.02 * rng.standard_normal(x.shape)).astype(x.dtype), state)
  model = nnx.merge(graphdef, state)
  embedding, head = np.array(model.embedding[...]), np.array(model.lm_head[...])
  embedding[:, 0] = 4.0
  head[0, [tok.eos_id, tok.encode("\n\n")[0], *tok.encode("Question:")]] = [2.3, 2.3, 2.6, 2.9]
  model.embedding[...], model.lm_head[...] = jnp.asarray(embedding), jnp.asarray(head)
  path = str(tmp_path_factory.mktemp("gsm8k") / "gsm8k-tiny")
  checkpoint.save(path, model, {"checkpoint": "gsm8k-tiny", "checkpoint_step": 1})
  return path, tok


def test_continuous_labels_equal_static_on_gsm8k(gsm8k_ckpt, tmp_path, monkeypatch):
  """Same seed, same labels: every (question, sample) and greedy answer gets the same tokens from
  the continuous sampler (6 slots for 5 x (3 + 1) rows, so rows are refilled) as from the static
  one, and the stops (EOS, a "\\n\\n" token, the sequence "Question:", the budget) end rows alike."""
  path, tok = gsm8k_ckpt
  tokens = {"static": {}, "continuous": {}}
  generate, stream = labels.sampling.generate, labels.continuous.stream

  def spy_generate(model, prompts, ids, params, **kw):
    out = generate(model, prompts, ids, params, **kw)
    kind = lambda j: "greedy" if params.greedy else j
    tokens["static"].update({(q, kind(j)): s for q, o in zip(ids, out) for j, s in enumerate(o)})
    return out

  def spy_stream(model, prompts, ids, params, **kw):
    for i, samples, greedy in stream(model, prompts, ids, params, **kw):
      tokens["continuous"].update({(ids[i], j): s for j, s in enumerate(samples)})
      tokens["continuous"][(ids[i], "greedy")] = greedy
      yield i, samples, greedy

  monkeypatch.setattr(labels.sampling, "generate", spy_generate)
  monkeypatch.setattr(labels.continuous, "stream", spy_stream)
  kw = dict(checkpoint=path, tasks="gsm8k", limit=5, batch_size=5, num_samples=3, max_new_tokens=24, top_p=0.95,
            tokenizer=f"shipped:{BPE}")
  static = labels.run(_config(path, tmp_path / "static", sampler="static", **kw), log=lambda _: None)
  cont = labels.run(_config(path, tmp_path / "cont", sampler="continuous", max_slots=6, **kw), log=lambda _: None)
  assert len(tokens["static"]) == 20 and tokens["continuous"] == tokens["static"]
  records = [_without_timings(labels.read_label_file(r["out"])) for r in (static, cont)]
  assert records[1] == records[0]
  eos, nn, seq = tok.eos_id, tok.encode("\n\n")[0], tuple(tok.encode("Question:"))
  ends = {"eos" if s[-1] == eos else "nn" if s[-1] == nn else "seq" if tuple(s[-2:]) == seq else len(s)
          for s in tokens["static"].values()}
  assert {"eos", "nn", "seq", 24} <= ends, ends


def test_labels_and_checkpoints_on_an_object_store(ckpt, tmp_path, monkeypatch):
  """`gs://` paths go through etils.epath: an object cannot be appended to, so each batch rewrites
  the labels object whole; a resumed run reads it back and adds nothing; a checkpoint there opens."""
  import shutil

  from object_store import fake_bucket
  from probing import checkpoints
  want = labels.read_label_file(labels.run(_config(ckpt, tmp_path / "local"), log=lambda _: None)["out"])
  shutil.copytree(ckpt, tmp_path / "bucket" / "ckpts" / "step_000010")
  with fake_bucket(tmp_path / "bucket", monkeypatch):
    cfg = _config(ckpt, "gs://runs/labels", batch_size=5)  # 12 questions per task: several appends
    first = labels.run(cfg, log=lambda _: None)
    assert first["out"] == "gs://runs/labels/step_000010.jsonl" and first["new_records"] == 24
    got = labels.read_labels("gs://runs/labels")
    assert _without_timings(got) == _without_timings(want)
    with labels.epath.Path(first["out"]).open("w") as f:  # a torn last line, cut off on resume
      f.write("".join(json.dumps(r) + "\n" for r in got[:7]) + '{"checkpoint": "step_0')
    again = labels.run(cfg, log=lambda _: None)
    assert again["new_records"] == 17 and _without_timings(labels.read_labels(first["out"])) == _without_timings(want)
    ck = checkpoints.inspect_checkpoint("gs://ckpts/step_000010")
    assert (ck.name, ck.step, ck.path, ck.config.num_hidden_layers) == (
        "step_000010", 10, "gs://ckpts/step_000010", checkpoint.config_of(ckpt).num_hidden_layers)
  assert (tmp_path / "bucket" / "runs" / "labels" / "step_000010.provenance.json").exists()
