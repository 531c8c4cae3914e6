"""Shared fields of the probe configs (one file per family next to this one).

Presets (`get_config(arg)` of every family file): '7b' (default; OLMo3-7B, 32 layers) and
'testbed' (the 4-layer synthetic testbed of configs/experiments/testbed.py).
"""
import ml_collections
from ml_collections import config_dict

PRESETS = {
    "7b": dict(extract_layers=(8, 12, 16, 20, 24, 28, 32), mid=16, token_cap=64, batch_size=8,
               max_prompt_tokens=2048, max_reference_tokens=512, store_dtype="float16",
               model_dtype="bfloat16", reference_eos=False),
    "testbed": dict(extract_layers=(0, 1, 2, 3, 4), mid=2, token_cap=32, batch_size=64,
                    max_prompt_tokens=64, max_reference_tokens=16, store_dtype="float32",
                    model_dtype="float32", reference_eos=True),
}


def preset(arg: str | None) -> dict:
  name = arg or "7b"
  if name not in PRESETS:
    raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
  return PRESETS[name]


def base_config(family: str, arg: str | None) -> ml_collections.ConfigDict:
  """Every field a probe config has; family files override the probe and training fields."""
  p = preset(arg)
  c = ml_collections.ConfigDict()
  c.family = family
  # Which extracted features the probe reads.
  c.layers = (p["mid"],)
  c.pooling = "mean"  # 'last', 'mean' or 'last+mean'
  c.token_layer = config_dict.placeholder(int)  # attention / submodel
  # Architecture.
  c.hidden = 128
  c.n_queries = 4
  c.base = "linear"  # hybrid: the family whose head also gets the NLL
  c.submodel_blocks = 2
  c.submodel_train = "all"  # 'all' | 'norms' | 'none'
  c.block_lr_scale = 0.1
  c.per_task_heads = False
  c.task_embed_dim = 8
  c.nll_anchor = False  # hybrid: the logit starts from logit(p_ref) of the gold-answer NLL
  # Training (optax adamw, the whole loop in one jit).
  c.lr = 3e-3
  c.wd = 1e-3
  c.epochs = 100
  c.batch = 512  # 0 = full batch
  c.eval_every = 1
  c.patience = 5
  c.loss = "bce"  # 'bce' | 'mse' against the soft pass@1 c/k
  c.schedule = "cosine"
  c.center = "none"  # 'checkpoint_task': pooled features centered per (checkpoint, task) cell
  c.seed = 0
  # Splits (see probing.probe_data).
  c.split = ml_collections.ConfigDict()
  c.split.test_frac = 0.3
  c.split.val_frac = 0.15
  c.split.earlier_predicts_later = True
  c.split.train_upto_step = config_dict.placeholder(int)  # default: first 40% of checkpoints
  c.split.train_checkpoint_frac = 0.4
  c.split.min_train_checkpoints = 3
  c.baselines = True
  c.sklearn_c = 0.1
  # Extraction (launch/extract.py, launch/predict.py): the same for every family, so one
  # extraction serves all five probes and the baselines.
  c.extract = ml_collections.ConfigDict()
  c.extract.layers = p["extract_layers"]
  c.extract.pooling = ("last", "mean")
  c.extract.token_layer = p["mid"]  # token states for attention/submodel probes
  c.extract.token_cap = p["token_cap"]
  c.extract.hybrid = True  # gold-answer NLL in the same pass (hybrid probe, NLL baseline)
  c.extract.reference_eos = p["reference_eos"]
  c.extract.batch_size = p["batch_size"]
  c.extract.max_prompt_tokens = p["max_prompt_tokens"]
  c.extract.max_reference_tokens = p["max_reference_tokens"]
  c.extract.dtype = p["store_dtype"]
  # Inputs and outputs.
  c.data = ml_collections.ConfigDict()
  c.data.features = config_dict.placeholder(str)  # root of the feature stores
  c.data.labels = config_dict.placeholder(str)  # label JSONL file(s), comma-separated, or a dir
  c.data.tasks = config_dict.placeholder(str)  # comma-separated; default: all found
  c.data.limit = config_dict.placeholder(int)  # questions per task (extraction)
  c.data.checkpoint = config_dict.placeholder(str)  # HF dir or orbax checkpoint (extract, predict, submodel)
  c.data.checkpoint_name = config_dict.placeholder(str)  # default: from metadata or the dir name
  c.data.checkpoint_step = config_dict.placeholder(int)  # default: from metadata or '...step<N>'
  c.data.tokenizer = config_dict.placeholder(str)  # as probing.labels: char[:abc], shipped:<name>, a path
  c.data.mesh = "data=-1"
  c.data.model_dtype = p["model_dtype"]
  c.probe = config_dict.placeholder(str)  # a trained probe dir (predict)
  c.out = config_dict.placeholder(str)
  return c


def use_tokens(c: ml_collections.ConfigDict, arg: str | None) -> None:
  """Token-state families read the middle layer's last `token_cap` prompt tokens."""
  c.token_layer = preset(arg)["mid"]
