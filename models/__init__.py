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
  generate      batched KV-cache sampling (`SamplingParams`); `models.continuous` refills decode
                slots as rows stop (continuous batching)
  slots_for_budget  how many decode slots a KV-cache budget (GiB) holds for a model config

`models/` knows nothing of probes or tasks. Names are resolved on first use (PEP 562), so
importing one submodule (e.g. `models.io`) does not load the rest.
"""
import importlib

_EXPORTS = {
    "load": "models.checkpoint", "load_any": "models.checkpoint", "save": "models.checkpoint",
    "Olmo3Config": "models.config", "load_hf": "models.convert", "save_hf": "models.convert",
    "Olmo3": "models.olmo3", "init_model": "models.olmo3", "SamplingParams": "models.sampling",
    "generate": "models.sampling", "make_mesh": "models.sharding", "shard_model": "models.sharding",
    "slots_for_budget": "models.kv_budget",
}

__all__ = ["Olmo3", "Olmo3Config", "SamplingParams", "generate", "init_model", "load", "load_any", "load_hf",
           "make_mesh", "save", "save_hf", "shard_model", "slots_for_budget"]


def __getattr__(name: str):
  if name not in _EXPORTS:
    raise AttributeError(f"module 'models' has no attribute {name!r}")
  value = getattr(importlib.import_module(_EXPORTS[name]), name)
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(__all__))
