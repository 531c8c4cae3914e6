"""Shared fields of the probe configs (one file per family next to this one).

Presets (`get_config(arg)` of every family file): '7b' (default; OLMo3-7B, 32 layers) and
'testbed' (the 4-layer synthetic testbed of configs/experiments/testbed.py).
"""
import ml_collections
from ml_collections import config_dict

# OLMo3-7B's stage lengths (probing.checkpoints.OLMO3_7B_STAGE_LENGTHS): 'stage2-stepN' is step
# 1,413,814 + N. Other runs set `data.stage_lengths`.
OLMO3_7B_STAGE_LENGTHS = (1_413_814, 47_684)

PRESETS = {
    "7b": dict(extract_layers=(8, 12, 16, 20, 24, 28, 32), mid=16, token_cap=64, batch_size=8,
               max_prompt_tokens=2048, max_reference_tokens=512, store_dtype="float16",
               model_dtype="bfloat16", reference_eos=False),
    "testbed": dict(extract_layers=(0, 1, 2, 3, 4), mid=2, token_cap=32, batch_size=64,
                    max_prompt_tokens=64, max_reference_tokens=40, store_dtype="float32",
                    model_dtype="float32", reference_eos=True),
}


def preset(arg: str | None) -> dict:
  name = arg or "7b"
  if name not in PRESETS:
    raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
  return PRESETS[name]


def base_config(family: str, arg: str | None) -> ml_collections.ConfigDict:
  """Every field a probe config has, in typed sections; family files override `head` and `train`.

  Sections: `head` -> `probing.probes.ProbeConfig`, `train` -> `probing.probes.TrainConfig`,
  `split` -> `probing.probes.make_split`, `extract` -> `probing.features.ExtractSpec`; each raises
  on a field it does not know. `data` names inputs, `probe` a trained probe, `out` the output.
  """
  p = preset(arg)
  c = ml_collections.ConfigDict()

  # What the probe is (probing.probes.ProbeConfig).
  c.head = ml_collections.ConfigDict()
  c.head.family = family  # 'linear' | 'mlp' | 'attention' | 'submodel' | 'hybrid'
  # Every family gets the same inputs: all extracted layers' last and mean states, concatenated
  # (attention and submodel read token states instead).
  c.head.layers = p["extract_layers"]  # pooled hidden states read by linear/mlp/hybrid (0 = embeddings)
  c.head.pooling = "last+mean"  # 'last', 'mean' or 'last+mean'
  c.head.token_layer = config_dict.placeholder(int)  # attention / submodel: token states' layer
  c.head.hidden = 128  # mlp / attention width
  c.head.n_queries = 4  # attention: learned queries
  c.head.base = "linear"  # hybrid: the family whose head also gets the NLL
  c.head.submodel_blocks = 2  # submodel: checkpoint blocks copied after token_layer
  c.head.per_task_heads = False  # one head per task instead of a shared one
  c.head.task_embed_dim = 8  # shared head: learned task embedding width
  c.head.nll_anchor = False  # hybrid: the logit starts from logit(p_ref) of the gold-answer NLL
  c.head.center = "none"  # 'checkpoint_task': pooled features centered per (checkpoint, task) cell

  # How it is fitted (probing.probes.TrainConfig; optax adamw, the whole loop in one jit).
  c.train = ml_collections.ConfigDict()
  c.train.lr = 3e-3  # peak learning rate of the head
  c.train.wd = 1e-3  # decoupled weight decay on head kernels
  c.train.epochs = 100  # upper bound; early stopping usually ends sooner
  c.train.batch = 512  # rows per minibatch; 0 = full batch
  c.train.eval_every = 1  # epochs per validation round
  c.train.patience = 5  # validation rounds without improvement before stopping
  c.train.loss = "bce"  # 'bce' | 'mse' against the soft pass@1 c/k
  c.train.rank_weight = 0.0  # + this x a within-cell pairwise ranking term (0 = pointwise only)
  c.train.schedule = "cosine"  # 'cosine' | 'constant'
  c.train.submodel_train = "all"  # submodel blocks: 'all' | 'norms' | 'none'
  c.train.block_lr_scale = 0.1  # submodel blocks' lr relative to the head's
  c.train.seed = 0  # head initialization and minibatch order
  c.train.validity_factor = 4.0  # the card vouches for steps up to this x the last trained step

  # Splits (probing.probes.make_split).
  c.split = ml_collections.ConfigDict()
  c.split.test_frac = 0.3  # held-out questions (hash split)
  c.split.val_frac = 0.15  # early-stopping questions, from the training checkpoints
  c.split.earlier_predicts_later = True  # train on early checkpoints, test on later ones
  c.split.train_upto_step = config_dict.placeholder(int)  # default: first 40% of checkpoints
  c.split.train_checkpoint_frac = 0.4  # default cutoff: this share of the checkpoints trains
  c.split.min_train_checkpoints = 3  # and at least this many
  # Evaluation beside the probe (probing.eval.baselines).
  c.eval = ml_collections.ConfigDict()
  c.eval.baselines = True  # priors and gold-answer NLL, and sklearn LR as a reference, on the same split
  c.eval.sklearn_c = 0.1  # inverse L2 strength of the sklearn reference

  # Extraction (probing.features.ExtractSpec): the same for every family, so one extraction
  # serves all five probes and the baselines.
  c.extract = ml_collections.ConfigDict()
  c.extract.layers = p["extract_layers"]  # hidden states stored (0 = embeddings, i = after block i)
  c.extract.pooling = ("last", "mean")  # poolings of the prompt states stored
  c.extract.token_layer = p["mid"]  # token states for attention/submodel probes
  c.extract.token_cap = p["token_cap"]  # last prompt tokens kept as token states
  c.extract.hybrid = True  # gold-answer NLL in the same pass (hybrid probe, NLL baseline)
  c.extract.reference_eos = p["reference_eos"]  # the reference ends in EOS (testbed answers do)
  c.extract.batch_size = p["batch_size"]  # prompts per forward pass, per process
  c.extract.max_prompt_tokens = p["max_prompt_tokens"]  # longer prompts keep their last tokens
  c.extract.max_reference_tokens = p["max_reference_tokens"]  # longer references keep their first
  c.extract.dtype = p["store_dtype"]  # float dtype of stored features

  # Inputs.
  c.data = ml_collections.ConfigDict()
  c.data.features = config_dict.placeholder(str)  # root of the feature stores
  c.data.labels = config_dict.placeholder(str)  # label JSONL file(s), comma-separated, or a dir
  c.data.audit_labels = config_dict.placeholder(str)  # predict: labels of a random audit -> audited accuracy
  c.data.previous_audit = config_dict.placeholder(str)  # predict: an earlier audited run's summary.json -> its offset
  c.data.tasks = config_dict.placeholder(str)  # comma-separated, * patterns; default: all found
  c.data.limit = config_dict.placeholder(int)  # questions per task (extraction)
  c.data.checkpoint = config_dict.placeholder(str)  # HF dir or orbax checkpoint (extract, predict, submodel)
  c.data.checkpoint_name = config_dict.placeholder(str)  # default: from metadata or the dir name
  c.data.checkpoint_step = config_dict.placeholder(int)  # monotone step; default: from metadata or the name
  c.data.stage_lengths = OLMO3_7B_STAGE_LENGTHS  # steps of each stage, for 'stageK-stepN' names
  c.data.tokenizer = config_dict.placeholder(str)  # '' = the checkpoint's; char[:abc], shipped:<name>, a path
  c.data.mesh = "data=-1"  # device mesh, e.g. 'data=-1' or 'fsdp=-1'
  c.data.model_dtype = p["model_dtype"]  # dtype the model runs in
  c.data.overwrite = False  # extract: replace a store that holds a different extraction

  # Outputs.
  c.probe = config_dict.placeholder(str)  # a trained probe dir (predict reads it)
  c.out = config_dict.placeholder(str)  # output dir (train_probes, predict)
  c.lm_eval_dir = ""  # predict: also write lm-eval's results_<date>.json and samples files here ('' = off)
  c.stale_tolerance = 0.1  # predict: "probe stale: relabel" when the audit puts it off by more than this
  return c


def use_tokens(c: ml_collections.ConfigDict, arg: str | None) -> None:
  """Token-state families read the middle layer's last `token_cap` prompt tokens."""
  c.head.token_layer = preset(arg)["mid"]
