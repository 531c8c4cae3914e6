"""The README's "Using it on real OLMo3 checkpoints" section runs as written: its shell blocks are
read from README.md and executed in order by bash, command by command (`set -x -e`: the first
command that fails ends the run and is named in the log), in a fresh directory laid out like the
repository root. What the README cannot do offline is stood in for, nothing else:

* `hf download ... --revision=R --local-dir=D` writes a tiny random `Olmo3ForCausalLM` saved by
  transformers (a new seed per revision) plus the real BPE tokenizer shipped with the task data;
* `python -m launch.<name>` runs the real launcher with overrides appended for the tiny size
  (layers that exist in a 2-block model, a few questions, 2 samples, 8 new tokens).

A README command that does not run fails this test; a README change changes what it runs.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

import hf_reference as H
from probing.tasks.olmo_eval import shipped_tokenizer_path

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECTION = "## Using it on real OLMo3 checkpoints"
LAYERS = "0,1,2"  # every hidden state of the 2-block model
TINY = {  # appended to each launcher's README arguments
    "launch.label": "--config.data.limit=5 --config.num_samples=2 --config.max_new_tokens=8 --config.max_slots=16",
    "launch.extract": f"--config.data.limit=5 --config.extract.layers={LAYERS} --config.extract.token_layer=1",
    "launch.train_probes": f"--config.head.layers={LAYERS} --config.train.epochs=3",
    "launch.predict": "--config.data.limit=5",
    "launch.demo": ("--config.data.tasks=gsm8k,humaneval --config.data.limit=5 --config.labels.num_samples=2 "
                    "--config.labels.max_new_tokens=8 --config.labels.max_slots=16 --config.probe_families=linear "
                    f"--config.families.linear.extract.layers={LAYERS} --config.families.linear.extract.token_layer=1 "
                    f"--config.families.linear.head.layers={LAYERS} --config.families.linear.train.epochs=3 "
                    "--config.audit.questions_per_task=2 --config.audit.sizes=2 --config.audit.draws=5"),
}


def readme_blocks() -> list[str]:
  """The ```sh blocks of the README's real-checkpoint section, in order."""
  with open(os.path.join(ROOT, "README.md")) as f:
    text = f.read()
  start = text.index(SECTION)
  end = text.index("\n## ", start + len(SECTION)) if "\n## " in text[start + len(SECTION):] else len(text)
  section = text[start:end]
  section = section[:section.index("\n### ")] if "\n### " in section else section
  return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def _tiny_hf_checkpoints(root: str, n: int) -> None:
  """n tiny random HF OLMo3 checkpoints (vocab padded past the tokenizer's 50,280 ids, as OLMo's)."""
  config = H.hf_config(vocab_size=50304, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                       sliding_window=64, layer_types=["sliding_attention", "full_attention"],
                       eos_token_id=50279, pad_token_id=1)
  for i in range(n):
    path = os.path.join(root, f"seed{i}")
    H.save_hf_checkpoint(H.random_hf_model(config, seed=i), path)
    shutil.copy(shipped_tokenizer_path("gpt-neox-olmo-dolma-v1_5"), os.path.join(path, "tokenizer.json"))


PRELUDE = r'''
PS4='+ [${SECONDS}s] '
set -e -u -o pipefail -x
made=0
hf() {  # stand-in for the download: a tiny random checkpoint per revision
  local -; set +x
  local dir="" a
  for a in "$@"; do case "$a" in --local-dir=*) dir="${a#--local-dir=}";; esac; done
  mkdir -p "$(dirname "$dir")" && cp -r "$TINY_DIR/seed$made" "$dir" && made=$((made + 1))
}
python() {  # the real launcher, with the test's tiny-size overrides appended
  local -; set +x
  local extra=""
  case "$2" in
    launch.label) extra="$TINY_LABEL";; launch.extract) extra="$TINY_EXTRACT";;
    launch.train_probes) extra="$TINY_TRAIN";; launch.predict) extra="$TINY_PREDICT";;
    launch.demo) extra="$TINY_DEMO";;
  esac
  "$PYTHON" "$@" $extra
}
'''


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
  blocks = readme_blocks()
  assert len(blocks) >= 4, "the README's real-checkpoint section lost its commands"
  script = "\n".join(blocks)
  revisions = sorted(set(re.findall(r"\b(stage\d+-step\d+)\b", script)))
  work = tmp_path_factory.mktemp("recipe")
  tiny = work / "tiny"
  _tiny_hf_checkpoints(str(tiny), len(revisions))
  root = work / "repo"  # the README runs from the repository root: its config files are there
  root.mkdir()
  os.symlink(os.path.join(ROOT, "configs"), root / "configs")
  env = dict(os.environ, PYTHON=sys.executable, TINY_DIR=str(tiny), PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
             XLA_FLAGS="", TOKENIZERS_PARALLELISM="false",
             # One JAX compilation cache for every command: the revisions share their shapes, so
             # only the first label/extract run compiles (what a user's repeated runs get too).
             JAX_COMPILATION_CACHE_DIR=str(work / "jax_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
             TINY_LABEL=TINY["launch.label"], TINY_EXTRACT=TINY["launch.extract"], TINY_TRAIN=TINY["launch.train_probes"],
             TINY_PREDICT=TINY["launch.predict"], TINY_DEMO=TINY["launch.demo"])
  proc = subprocess.run(["bash", "-c", PRELUDE + script], cwd=root, env=env, capture_output=True, text=True,
                        timeout=900)
  return root, revisions, proc


def test_readme_recipe_runs_as_written(recipe):
  root, revisions, proc = recipe
  assert proc.returncode == 0, proc.stderr[-6000:]
  # At least four OLMo3 revisions of both stages, converted with their tokenizer and configs.
  assert len(revisions) >= 4 and {r.split("-")[0] for r in revisions} >= {"stage1", "stage2"}
  for rev in revisions:
    for name in ("tokenizer.json", "hf_config.json", "generation_config.json", "metadata.json"):
      assert os.path.exists(root / "ckpts" / rev / name), (rev, name)
  # Labels of real tasks at every revision, with monotone steps from the names.
  labels = [json.loads(line) for rev in revisions for line in open(root / "runs" / "labels" / f"{rev}.jsonl")]
  assert {r["task"] for r in labels} == {"gsm8k", "humaneval"}
  steps = {r["checkpoint"]: r["checkpoint_step"] for r in labels}
  assert steps["stage2-step1000"] == 1_413_814 + 1_000 and steps["stage1-step3000"] == 3_000
  # The probe trained on the earlier revisions, predictions at a later one.
  card = json.load(open(root / "runs" / "probes" / "hybrid" / "probe" / "probe_card.json"))
  trained = sorted(card["trained_on"]["checkpoints"].values())
  predicted = json.load(open(root / "runs" / "predict" / "stage2-step1000" / "summary.json"))
  assert predicted["checkpoint_step"] > max(trained)
  accuracy = predicted["task_accuracy"]
  assert set(accuracy) == {"stage2-step1000/gsm8k", "stage2-step1000/humaneval"}
  assert all(0 <= v["predicted"] <= 1 for v in accuracy.values())
  # The one-command experiment ran the 7B config it was given (with the tiny overrides).
  summary = json.load(open(root / "runs" / "olmo3_7b" / "summary.json"))
  settings = summary["settings"]
  assert settings["preset"] == "olmo3_7b" and settings["config"]["preset"] == "olmo3_7b"
  assert settings["config"]["dtype"] == "bfloat16" and settings["config"]["mesh"] == "fsdp=-1"
  assert settings["config"]["labels"]["temperature"] == 0.6 and settings["config"]["labels"]["num_samples"] == 2
  assert settings["train_checkpoints"] == sorted(settings["train_checkpoints"])
  assert max(settings["train_checkpoints"]) < min(settings["later_checkpoints"])
  assert settings["tasks"] == ["gsm8k", "humaneval"]


def test_orbax_and_backend_chatter_is_muted(recipe):
  _, _, proc = recipe
  assert "orbax" not in proc.stderr and "Unable to initialize backend" not in proc.stderr
  # ... while every long step still shows its count, rate and ETA
  for step in ("convert:", "extract ", "train hybrid:", "predict: prefill:"):
    assert re.search(re.escape(step) + r".*\d+/\d+ .*/s, ETA", proc.stderr), step
  assert re.search(r"humaneval: \d+/\d+ questions, .*/s, ETA", proc.stderr)  # the label job
