"""OLMo3 in Flax NNX: the model, HF conversion, orbax checkpoints, sharding and sampling.

  Olmo3Config   the model's configuration (`from_hf`/`to_hf`; presets `olmo3_7b()`, `tiny()`)
  Olmo3         the NNX model; `model(ids, mask, layers=...)` -> logits and residual streams
  init_model    a randomly initialized model of a config
  load_hf       a HF safetensors directory -> Olmo3, streamed into the target shardings
  save_hf       Olmo3 -> a HF directory that transformers loads
  save, load    orbax checkpoints of ours (with metadata)
  load_any      either kind of directory -> (Olmo3, metadata)
  make_mesh     a ('data', 'fsdp', 'tensor') mesh from 'fsdp=-1,tensor=4'-style specs
  shard_model   places a model's params per the logical-axis rules table
  generate      batched KV-cache sampling (`SamplingParams`)

`models/` knows nothing of probes or tasks.
"""
from models.checkpoint import load, load_any, save
from models.config import Olmo3Config
from models.convert import load_hf, save_hf
from models.olmo3 import Olmo3, init_model
from models.sampling import SamplingParams, generate
from models.sharding import make_mesh, shard_model

__all__ = ["Olmo3", "Olmo3Config", "SamplingParams", "generate", "init_model", "load", "load_any", "load_hf",
           "make_mesh", "save", "save_hf", "shard_model"]
