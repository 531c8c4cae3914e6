"""The embedded testbed: a small OLMo3 pretrained on synthetic skills, with in-training checkpoints.

Testbed v2: five skills answer with many valid completions (`sum` and `mul` write a trace in any
order then `|final`; `path`, `change` and `nodup` answer with any object a verifier accepts), so
one reference's probability is not the label; `rev` and `dup` are controls where it is; `inc` has
its data removed at 60% of training, a regression to predict. `sum` and `change` data enter at
30%. Declared levels are coarse, overlapping, sometimes wrong bands; what makes a question hard
goes to its metadata. The mixture was tuned on seed 0 only (README, "The testbed") and frozen.

  python -m launch.pretrain --config=configs/experiments/testbed.py --workdir=runs/testbed
  python -m launch.pretrain --config=configs/experiments/testbed.py:smoke --workdir=runs/smoke
"""
import ml_collections

SKILLS = ("sum", "mul", "path", "change", "nodup", "rev", "dup", "inc")
# Five skills with many valid answers (a trace then |final, or an object a verifier checks); rev
# and dup as controls where one reference is the only answer; inc, whose data is dropped late so
# its accuracy falls. Weights give the slow skills more data, inc enough to be learned well before
# it is dropped, and the easy nodup, rev and dup enough to rise before the probe cutoff (40% of
# training); sum, change, mul and path rise after it.
WEIGHTS = {"sum": 2.5, "mul": 3.0, "path": 1.5, "change": 1.5, "nodup": 3.0, "rev": 2.5, "dup": 2.0, "inc": 2.0}
# (start, stop) fractions of training during which a skill's data is in the mixture.
WINDOWS = {"sum": (0.3, 1.0), "change": (0.3, 1.0), "inc": (0.0, 0.6)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # data order and init
  c.mesh = "data=-1"  # device mesh
  c.log_every = 50  # steps between loss log lines
  c.model = ml_collections.ConfigDict()
  c.model.hidden_size = 64  # model width
  c.model.intermediate_size = 192  # MLP width
  c.model.num_layers = 4  # transformer blocks
  c.model.num_heads = 4  # attention heads
  c.model.num_kv_heads = 2  # key/value heads (grouped-query attention)
  c.model.full_every = 2  # layers 2, 4, ... attend fully; the rest use the sliding window
  c.model.sliding_window = 32  # traces must reach back to the operands
  c.model.rope_theta = 10000.0  # RoPE base
  c.model.max_position_embeddings = 128  # >= data.seq_len
  c.model.init_std = 0.02  # init scale of the weights
  c.model.vocab_pad_multiple = 8  # embedding rows padded to a multiple of this
  c.data = ml_collections.ConfigDict()
  c.data.skills = SKILLS  # the synthetic skills in the mixture
  c.data.skill_weights = tuple(WEIGHTS[s] for s in SKILLS)  # aligned with skills; () = uniform
  c.data.skill_windows = tuple(WINDOWS.get(s, (0.0, 1.0)) for s in SKILLS)  # (start, stop) of each skill's data
  c.data.seq_len = 128  # packed sequence length
  c.train = ml_collections.ConfigDict()
  c.train.steps = 800  # optimizer steps
  c.train.batch_size = 48  # sequences per step
  c.train.lr = 3e-3  # peak learning rate
  c.train.warmup_steps = 50  # linear warmup steps
  c.train.final_lr_fraction = 0.1  # cosine decay ends at this share of the peak
  c.train.b1 = 0.9  # adamw beta1
  c.train.b2 = 0.98  # adamw beta2
  c.train.weight_decay = 0.1  # adamw weight decay
  c.train.clip_norm = 1.0  # global gradient-norm clip
  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.num = 10  # in-training checkpoints saved
  c.checkpoint.spacing = "linear"  # or "log"
  c.checkpoint.first = 0  # first step of "log" spacing; 0 = total / (4 * num)
  c.checkpoint.keep_train_states = 2  # optimizer states kept for resuming
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
