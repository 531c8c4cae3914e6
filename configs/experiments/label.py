"""Generative labels (per-question pass@1) for one checkpoint: `python -m launch.label`.

  python -m launch.label --config=configs/experiments/label.py \
      --config.checkpoint=runs/testbed/checkpoints/step_000120 --config.tasks=syn_add,syn_sub
  python -m launch.label --config=configs/experiments/label.py:real \
      --config.checkpoint=/path/to/hf_dir --config.tasks=gsm8k --config.mesh=data=-1 \
      --config.kv_cache_gib=90 --config.share_prefix=True  # e.g. a 7B on one H200

`get_config('real')` uses the OLMES-style sampling for real tasks; the default suits the
testbed's synthetic skills.
"""
import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.checkpoint = ""  # our orbax checkpoint dir (models.checkpoint) or a HF safetensors dir
  c.checkpoint_id = ""  # record key; default: the checkpoint's metadata name, else its dir name
  c.checkpoint_step = config_dict.placeholder(int)  # default: metadata, else 'step_N' in the name
  c.tasks = "syn_*"  # comma-separated names; * and ? patterns expand over the task registry
  c.num_samples = 8  # k
  c.temperature = 1.0
  c.top_p = 1.0
  c.greedy = True  # also decode greedily once per question
  c.max_new_tokens = config_dict.placeholder(int)  # default: each task's own
  c.batch_size = 32  # static: questions per batch (each expands to k rows); continuous: records per write
  # 'continuous': decode slots refilled as rows stop (models.continuous); 'static': batches of
  # batch_size questions, each decoded until its longest row stops. Same labels for the same seed.
  c.sampler = "continuous"
  c.kv_cache_gib = 4.0  # continuous: KV-cache budget that sizes the decode slots (models.kv_budget)
  c.max_slots = 512  # continuous: at most this many decode rows
  # continuous: prefill the prompt start every question of a task shares (few-shot examples) once,
  # not per row: about half the KV memory on GSM8K 8-shot (2x the slots of a 7B run), but tokens
  # then match the static sampler's up to float rounding only (models.continuous.stream).
  c.share_prefix = False
  c.limit = config_dict.placeholder(int)  # questions per task; default: all
  c.mesh = ""  # e.g. "data=-1"; empty: one device
  c.seed = 0
  c.tokenizer = ""  # '' = from the checkpoint; 'char'; 'char:<alphabet>'; 'shipped:<name>'; a path
  c.dtype = "float32"
  c.out_dir = "labels"
  if arg == "real":
    c.tasks = "gsm8k,minerva_math_500,humaneval,mbpp,arc_challenge,mmlu"
    c.num_samples = 16
    c.temperature = 0.6
    c.top_p = 0.95
    c.batch_size = 8
    c.dtype = "bfloat16"
    c.kv_cache_gib = 40.0  # OLMo3-7B bf16 on one 80 GB GPU: ~15 GB of weights, the rest for prefill
  elif arg not in (None, ""):
    raise ValueError(f"unknown label config variant {arg!r}; use '' or 'real'")
  return c
