"""The main job (`make demo`): the paper's experiment end to end on the embedded testbed.

Pretrain a small OLMo3 on synthetic skills (in-training checkpoints) -> generative pass@1
labels at every checkpoint -> one-pass features -> five probe families trained on the labels of
the earliest checkpoints only -> evaluation on held-out questions at those checkpoints and at
every later one -> report, with an in-loop monitor during the rest of pretraining.

  python -m launch.demo --workdir=runs/demo
  python -m launch.demo --workdir=runs/smoke --config=configs/experiments/demo.py:smoke
  python -m launch.demo --config.labels.num_samples=16 --config.probe_families=linear,hybrid

The probe families are the files of configs/probes/ at their 'testbed' preset (`families`);
`probe_families` picks which of them run. `labels` is a full label config
(configs/experiments/label.py) whose `data` (checkpoint, tasks, limit, tokenizer) and `out` the
pipeline fills in from this config's `data` section and the work dir.
"""
import importlib

import ml_collections
from ml_collections import config_dict

from configs.experiments import label, testbed
from configs.probes import common

FAMILIES = ("linear", "mlp", "attention", "submodel", "hybrid")
PRESETS = ("default", "smoke")


def tie_family_seeds(c: ml_collections.ConfigDict) -> None:
  """Every family's probe init and minibatch order follow the run's one `seed`."""
  for f in c.families:
    c.families[f].train.seed = c.get_ref("seed")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "default"
  if preset not in PRESETS:
    raise ValueError(f"unknown demo preset {preset!r}; expected one of {PRESETS}")
  c = ml_collections.ConfigDict()
  c.preset = preset  # this file's preset (--config=FILE:PRESET); summary.json settings.preset
  c.seed = 0  # everything: pretraining data and init, the question split, label sampling, probe init
  c.mesh = "data=-1"  # device mesh for labels and features, e.g. 'data=-1' or 'fsdp=-1'
  c.dtype = "float32"  # model dtype for labels and features
  # Inputs. Real checkpoints instead of the testbed (see olmo3_7b.py); empty = the testbed.
  c.data = ml_collections.ConfigDict()
  c.data.checkpoints = ""  # comma-separated checkpoint dirs (HF or converted); '' = pretrain the testbed
  c.data.checkpoint_steps = ""  # their monotone steps, comma-separated; '' = from metadata or names
  c.data.stage_lengths = common.OLMO3_7B_STAGE_LENGTHS  # steps of each stage, for 'stageK-stepN' names
  c.data.tasks = ""  # real checkpoints: comma-separated task names (the testbed uses its skills)
  c.data.limit = config_dict.placeholder(int)  # questions per task; default: all the task has
  c.data.tokenizer = ""  # real checkpoints: '' = the checkpoints' own tokenizer.json, or a path
  c.pretrain = testbed.get_config("smoke" if preset == "smoke" else None)
  c.pretrain.mesh = c.mesh
  c.pretrain.seed = c.get_ref("seed")
  # Probes train on the labels of the first `train_checkpoint_frac` of checkpoints (>= 3).
  c.train_checkpoint_frac = 0.4  # share of checkpoints whose labels train the probes
  c.min_train_checkpoints = 3  # at least this many probe-training checkpoints
  c.test_frac = 0.3  # held-out questions (hash split), never seen by probes or their selection
  c.val_frac = 0.15  # validation questions for early stopping, from the training checkpoints

  c.labels = label.get_config()
  c.labels.num_samples = 8  # k
  # The sampling real evaluations use (OLMES, lm-eval CoT tasks); with many valid answers per
  # question, exp(-NLL) of one reference is far from pass@1 anyway.
  c.labels.temperature = 0.6
  c.labels.top_p = 0.95
  c.labels.greedy = True
  c.labels.max_new_tokens = None  # each task's own budget, as a real evaluation runs it
  c.labels.batch_size = 128
  c.labels.seed = c.get_ref("seed")
  c.labels.data.mesh = c.get_ref("mesh")
  c.labels.data.model_dtype = c.get_ref("dtype")

  c.probe_families = ",".join(FAMILIES)  # which of `families` run
  c.families = ml_collections.ConfigDict(
      {f: importlib.import_module(f"configs.probes.{f}").get_config("testbed") for f in FAMILIES})
  tie_family_seeds(c)
  c.cross_checkpoint_family = "linear"  # family retrained per split point for the heatmap

  # At each later checkpoint: a small random audit (labelled questions) and PPI++ task accuracy,
  # simulated `draws` times per cell from the full labels to measure its coverage; predicted
  # pass@k; the drift alarm (probing.demo.audit).
  c.audit = ml_collections.ConfigDict()
  c.audit.enabled = True  # audit, pass@k and drift at the later checkpoints
  c.audit.family = "hybrid"  # a probe plus the cheap NLL: the audit's control variate
  c.audit.questions_per_task = 32  # audit size per task in the headline figures
  c.audit.sizes = (32, 64, 128)  # audit sizes whose interval coverage is measured
  c.audit.draws = 200  # simulated audits per (checkpoint, task) cell
  # "probe stale: relabel" when the audit shows the probe's task accuracy off by more than this
  # (PPI++ corrects a smaller bias), or when the shift score fires.
  c.audit.stale_tolerance = 0.1
  c.monitor = ml_collections.ConfigDict()
  c.monitor.enabled = True  # testbed: the in-training monitor during the rest of pretraining
  c.monitor.every = 50  # steps
  c.monitor.family = "linear"  # the probe family the monitor runs
  # Latency on one real task's shapes (the labels there are meaningless; the timing is real).
  c.real_task = ml_collections.ConfigDict()
  c.real_task.enabled = True
  c.real_task.task = "gsm8k"  # the real task whose shapes time the probe
  c.real_task.questions = 32  # its questions in that timing
  c.real_task.tokenizer = "gpt-neox-olmo-dolma-v1_5"  # a BPE tokenizer shipped with the task data
  c.real_task.num_samples = 8
  c.real_task.max_new_tokens = 0  # 0 = the task's own
  c.real_task.long_frac = 0.1  # questions whose samples run to max_new_tokens; the rest stop at their reference length

  if preset == "smoke":
    c.labels.num_samples = 4
    c.data.limit = 24
    c.labels.max_new_tokens = 37  # one budget for every skill: one sampler program to compile
    c.monitor.every = 8
    c.real_task.questions = 4
    c.real_task.num_samples = 2
    c.real_task.max_new_tokens = 16
    c.test_frac = 0.4
    c.audit.questions_per_task = 8
    c.audit.sizes = (8, 16)
    c.audit.draws = 20
  return c
