"""The embedded testbed: a small OLMo3 pretrained on synthetic skills, with in-training checkpoints.

Run (about 5 min on 2 CPU cores; `:smoke` takes about 20 s):
  python -m launch.pretrain --config=configs/experiments/testbed.py --workdir=runs/testbed
  python -m launch.pretrain --config=configs/experiments/testbed.py:smoke --workdir=runs/smoke
"""
import ml_collections

SKILLS = ("add", "sub", "mul", "sort", "rev", "shift", "dup", "inc")
# Mixture weights: the slow skills (arithmetic, and rev with its 2-14 letters) get twice the
# data, so each one rises within the budget whatever the seed, while shift/dup/sort are
# learned early and inc mid-run.
WEIGHTS = {"add": 2.0, "sub": 2.0, "mul": 2.0, "sort": 1.0, "rev": 2.0, "shift": 1.0, "dup": 1.0, "inc": 1.0}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.mesh = "data=-1"
  c.log_every = 50

  c.model = ml_collections.ConfigDict()
  c.model.hidden_size = 64
  c.model.intermediate_size = 192
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.num_kv_heads = 2
  c.model.full_every = 4  # layers 4, 8, ... attend fully; the rest use the sliding window
  c.model.sliding_window = 16
  c.model.rope_theta = 10000.0
  c.model.max_position_embeddings = 64  # >= data.seq_len
  c.model.init_std = 0.02
  c.model.vocab_pad_multiple = 8

  c.data = ml_collections.ConfigDict()
  c.data.skills = SKILLS
  c.data.skill_weights = tuple(WEIGHTS[s] for s in SKILLS)  # aligned with skills; () = uniform
  c.data.seq_len = 64

  c.train = ml_collections.ConfigDict()
  c.train.steps = 800
  c.train.batch_size = 96
  c.train.lr = 3e-3
  c.train.warmup_steps = 50
  c.train.final_lr_fraction = 0.1
  c.train.b1 = 0.9
  c.train.b2 = 0.98
  c.train.weight_decay = 0.1
  c.train.clip_norm = 1.0

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.num = 10
  c.checkpoint.spacing = "linear"  # or "log"
  c.checkpoint.first = 0  # first step of "log" spacing; 0 = total / (4 * num)
  c.checkpoint.keep_train_states = 2

  if arg == "smoke":
    c.model.hidden_size = 32
    c.model.intermediate_size = 64
    c.model.num_layers = 2
    c.model.full_every = 2
    c.model.sliding_window = 8
    c.train.steps = 24
    c.train.batch_size = 16
    c.train.warmup_steps = 4
    c.checkpoint.num = 8
    c.log_every = 4
  elif arg:
    raise ValueError(f"unknown testbed variant {arg!r}; expected '' or 'smoke'")
  return c
