"""Generative labels (per-question pass@1) for one checkpoint: `python -m launch.label`.

  python -m launch.label --config=configs/experiments/label.py \
      --config.data.checkpoint=runs/testbed/checkpoints/step_000120 --config.data.tasks=syn_add,syn_sub \
      --config.out=runs/testbed/labels
  python -m launch.label --config=configs/experiments/label.py:real \
      --config.data.checkpoint=/path/to/converted --config.data.tasks=gsm8k --config.data.mesh=data=-1 \
      --config.kv_cache_gib=90 --config.share_prefix=True  # e.g. a 7B on one H200

`get_config('real')` uses the OLMES-style sampling for real tasks; the default suits the
testbed's synthetic skills. What the job reads is under `data` (the same keys as the probe
configs'), what it writes is `out`; the rest says how to sample.
"""
import ml_collections
from ml_collections import config_dict

from configs.probes import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Inputs: the same keys as the probe configs' data section.
  c.data = ml_collections.ConfigDict()
  c.data.checkpoint = config_dict.placeholder(str)  # our orbax checkpoint dir (launch.convert) or a HF dir
  c.data.checkpoint_name = config_dict.placeholder(str)  # record id; default: from metadata or the dir name
  c.data.checkpoint_step = config_dict.placeholder(int)  # monotone step; default: from metadata or the name
  c.data.stage_lengths = common.OLMO3_7B_STAGE_LENGTHS  # steps of each stage, for 'stageK-stepN' names
  c.data.tasks = "syn_*"  # comma-separated names; * and ? patterns expand over the task registry
  c.data.limit = config_dict.placeholder(int)  # questions per task; default: all
  c.data.audit = config_dict.placeholder(int)  # label only a uniform random audit of this many questions per task
  c.data.tokenizer = ""  # '' = the checkpoint's own; 'char'; 'char:<alphabet>'; 'shipped:<name>'; a path
  c.data.mesh = ""  # device mesh, e.g. 'data=-1' or 'fsdp=-1'; '' = one device
  c.data.model_dtype = "float32"  # dtype the model runs in
  c.data.overwrite = False  # replace labels at `out` made with other settings (else: an error)
  # Sampling.
  c.num_samples = 8  # k samples per question
  c.temperature = 1.0  # sampling temperature
  c.top_p = 1.0  # nucleus sampling threshold
  c.greedy = True  # also decode greedily once per question
  c.max_new_tokens = config_dict.placeholder(int)  # token budget per answer; default: each task's own
  c.batch_size = 32  # static: questions per batch (each expands to k rows); continuous: records per write
  # 'continuous': decode slots refilled as rows stop (models.continuous); 'static': batches of
  # batch_size questions, each decoded until its longest row stops. Same labels for the same seed.
  c.sampler = "continuous"  # 'continuous' or 'static' (same labels for the same seed)
  c.kv_cache_gib = 4.0  # continuous: KV-cache budget that sizes the decode slots (models.kv_budget)
  c.max_slots = 512  # continuous: at most this many decode rows
  # continuous: prefill the prompt start every question of a task shares (few-shot examples) once,
  # not per row: about half the KV memory on GSM8K 8-shot (2x the slots of a 7B run), but tokens
  # then match the static sampler's up to float rounding only (models.continuous.stream).
  c.share_prefix = False  # continuous: prefill the few-shot prefix all prompts share once
  c.seed = 0  # sampling seed (each sample's stream depends on seed, task, question and index only)
  # Output.
  c.out = "labels"  # directory of <checkpoint>.jsonl label files and their provenance sidecars
  if arg == "real":
    c.data.tasks = "gsm8k,minerva_math_500,humaneval,mbpp,arc_challenge,mmlu"
    c.data.model_dtype = "bfloat16"
    c.num_samples = 16
    c.temperature = 0.6
    c.top_p = 0.95
    c.batch_size = 8
    c.kv_cache_gib = 40.0  # OLMo3-7B bf16 on one 80 GB GPU: ~15 GB of weights, the rest for prefill
  elif arg not in (None, ""):
    raise ValueError(f"unknown label config variant {arg!r}; use '' or 'real'")
  return c
