"""The demo's pipeline on real OLMo3-7B checkpoints and the real downstream tasks.

Convert the HF revisions first (one dir each), then run the same pipeline as `make demo`, minus
pretraining and the in-loop monitor (the checkpoints already exist):

  python -m launch.convert --hf_dir=Olmo-3-1025-7B@stage1-step100000 --out_dir=ckpts/s1-100000 \
      --dtype=bfloat16 --mesh=fsdp=-1 --revision=stage1-step100000
  python -m launch.demo --config=configs/experiments/olmo3_7b.py --workdir=runs/olmo3_7b \
      --config.checkpoints=ckpts/s1-100000,ckpts/s1-400000,... \
      --config.checkpoint_steps=100000,400000,... \
      --config.tokenizer=Olmo-3-1025-7B/tokenizer.json

`checkpoint_steps` must be monotone training steps: OLMo3's stage counters restart, so add the
steps of earlier stages (stage 1 ends at 1,413,814; stage 2 adds 47,684). Left empty, they are
read from directory names of the form `stageK-stepN`, which map to exactly that. Probes use the '7b'
preset of configs/probes/*.py (layers 8-32, the middle layer's token states, bf16 model).
"""
import importlib

import ml_collections

from configs.experiments import demo


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  c = demo.get_config()
  c.preset = "olmo3_7b"
  c.mesh = "fsdp=-1"
  c.dtype = "bfloat16"
  c.tasks = "gsm8k,minerva_math_500,humaneval,mbpp,arc_challenge,mmlu"
  c.families = ml_collections.ConfigDict(
      {f: importlib.import_module(f"configs.probes.{f}").get_config("7b") for f in demo.FAMILIES})
  demo.tie_family_seeds(c)
  c.labels.tokenizer = c.get_ref("tokenizer")
  c.labels.num_samples = 16
  c.labels.temperature = 0.6
  c.labels.top_p = 0.95
  c.labels.batch_size = 8
  c.monitor.enabled = False
  c.real_task.enabled = False  # the tasks are real here: latency_seconds is the real figure
  return c
