"""The README's library example runs as written: every ```python block, in order, in one
namespace, on tiny random OLMo3 checkpoints saved where the README names them (HF directories
with a real BPE tokenizer) and label files of the documented schema."""
import json
import os
import re
import shutil

import numpy as np

from models import init_model, save_hf
from models.config import default_layer_types, tiny
from probing import tasks
from probing.tasks.olmo_eval import shipped_tokenizer_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE1 = [1000, 2000, 3000, 4000]


def _blocks() -> list[str]:
  with open(os.path.join(ROOT, "README.md")) as f:
    return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def _checkpoints(root: str) -> None:
  tokenizer = shipped_tokenizer_path("gpt-neox-olmo-dolma-v1_5")
  cfg = tiny(vocab_size=50304, num_hidden_layers=24, layer_types=default_layer_types(24),
             max_position_embeddings=4096, eos_token_id=50279, pad_token_id=1)
  for i, name in enumerate([f"stage1-step{s}" for s in STAGE1] + ["stage2-step2000"]):
    path = os.path.join(root, "ckpts", name)
    save_hf(init_model(cfg, seed=i), path)
    shutil.copy(tokenizer, os.path.join(path, "tokenizer.json"))


def _labels(root: str) -> None:
  rng = np.random.default_rng(0)
  os.makedirs(os.path.join(root, "runs", "labels"))
  qs = list(tasks.get("gsm8k").questions(16))
  for step in STAGE1:
    name = f"stage1-step{step}"
    with open(os.path.join(root, "runs", "labels", f"{name}.jsonl"), "w") as f:
      for q in qs:
        c = int(rng.integers(0, 9))
        f.write(json.dumps({"checkpoint": name, "checkpoint_step": step, "task": "gsm8k", "question_id": q.id,
                            "k": 8, "c": c, "pass1": c / 8, "greedy": None}) + "\n")


def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys):
  blocks = _blocks()
  assert len(blocks) >= 3 and "import probing" in blocks[0]
  for block in blocks:  # the example uses the public faces only
    for line in block.splitlines():
      if line.startswith(("import ", "from ")):
        assert re.match(r"(import (probing|numpy as np)$|from models import )", line), line
  _checkpoints(str(tmp_path))
  _labels(str(tmp_path))
  monkeypatch.chdir(tmp_path)
  namespace: dict = {}
  for block in blocks:
    exec(compile(block, "README.md", "exec"), namespace)  # pylint: disable=exec-used
  assert os.path.exists(tmp_path / "runs" / "probes" / "hybrid" / "probe_card.json")
  accuracy = namespace["prediction"].task_accuracy()
  assert list(accuracy) == ["stage2-step2000/gsm8k"] and 0 <= accuracy["stage2-step2000/gsm8k"]["predicted"] <= 1
  assert namespace["ck"].step == 1_415_814
  assert len(namespace["out"].hidden_states) == 2 and set(namespace["rest"].hidden_states) == {16}
  assert "predicted" in capsys.readouterr().out
