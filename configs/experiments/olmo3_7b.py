"""The demo's pipeline on real OLMo3-7B checkpoints and the real downstream tasks.

Convert the HF revisions first (one dir each), then run the same pipeline as `make demo`, minus
pretraining and the in-loop monitor (the checkpoints already exist):

  hf download allenai/Olmo-3-1025-7B --revision=stage1-step100000 --local-dir=hf/stage1-step100000
  python -m launch.convert --hf_dir=hf/stage1-step100000 --out_dir=ckpts/stage1-step100000 \
      --dtype=bfloat16 --mesh=fsdp=-1 --revision=stage1-step100000
  python -m launch.demo --config=configs/experiments/olmo3_7b.py --workdir=runs/olmo3_7b \
      --config.data.checkpoints=ckpts/stage1-step100000,ckpts/stage1-step400000,...,ckpts/stage2-step20000

Steps are read from the directory names (`stageK-stepN`, OLMo3's revision names) and mapped to one
monotone step: OLMo3's stage counters restart, so the lengths of earlier stages are added
(`data.stage_lengths`: stage 1 ends at 1,413,814; stage 2 adds 47,684). Other names need
`--config.data.checkpoint_steps` (monotone training steps, one per checkpoint). The tokenizer is
the one launch.convert copied beside the weights. Probes use the '7b' preset of
configs/probes/*.py (layers 8-32, the middle layer's token states, bf16 model).
"""
import importlib

import ml_collections

from configs.experiments import demo


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg:
    raise ValueError(f"configs/experiments/olmo3_7b.py has no preset {arg!r}")
  c = demo.get_config()
  c.preset = "olmo3_7b"
  c.mesh = "fsdp=-1"
  c.dtype = "bfloat16"
  c.data.tasks = "gsm8k,minerva_math_500,humaneval,mbpp,arc_challenge,mmlu"
  c.families = ml_collections.ConfigDict(
      {f: importlib.import_module(f"configs.probes.{f}").get_config("7b") for f in demo.FAMILIES})
  demo.tie_family_seeds(c)
  c.labels.num_samples = 16
  c.labels.temperature = 0.6
  c.labels.top_p = 0.95
  c.labels.batch_size = 8
  c.monitor.enabled = False
  c.real_task.enabled = False  # the tasks are real here: latency_seconds is the real figure
  return c
