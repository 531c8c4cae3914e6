"""Prefill throughput of our jitted OLMo3 vs HF transformers (PyTorch) on CPU, same weights.

Usage: python -m benchmarks.forward --out=benchmarks/out/forward.json

Two paths are compared, each against what a user would otherwise run in transformers:
  * forward: our jitted forward with logits vs `model(ids, attention_mask=...).logits`;
  * extraction: our `model(ids, mask, layers=(mid, last), return_logits=False)` pooled to
    last-token + mean features vs `model(ids, output_hidden_states=True)` pooled the same way.
HF is timed with both eager and sdpa attention (fp32, `torch.inference_mode()`); the ratio is
ours / the faster of the two. `model.model(ids, output_hidden_states=True)` (sdpa, no LM head) is
also timed as a stricter extraction peer, for information. All variants run interleaved in one process (see
`benchmarks.common.interleaved`) so load from other jobs hits them alike.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from flax import nnx

from benchmarks import common
from models import convert
hf_reference = common.hf_reference()

# OLMo3 proportions (SwiGLU width 256 * ceil(8d/3 / 256), head_dim 64, no GQA as in the 7B),
# the 3:1 sliding/full layer pattern and the real 4096-token window (never shorter than the prompt).
SIZES = {
    "L4-d256": dict(num_hidden_layers=4, hidden_size=256, intermediate_size=768,
                    num_attention_heads=4, num_key_value_heads=4),
    "L8-d512": dict(num_hidden_layers=8, hidden_size=512, intermediate_size=1536,
                    num_attention_heads=8, num_key_value_heads=8),
}
SHAPES = ((8, 256), (8, 512))
SLIDING_WINDOW = 4096
BARS = {"forward": {256: 0.85, 512: 0.7}, "extraction": 1.0}


def probe_layers(num_layers: int) -> tuple[int, int]:
  """The hidden states a default probe reads: a middle block's output and the last one."""
  return num_layers // 2, num_layers


def hf_config(size: str, vocab: int) -> transformers.Olmo3Config:
  return hf_reference.hf_config(vocab_size=vocab, max_position_embeddings=8192, sliding_window=SLIDING_WINDOW,
                                rope_theta=500000.0, **SIZES[size])


def _pool_jax(h, mask):
  """[B, T, D] -> [B, 2D]: last valid token and mean over valid tokens."""
  m = mask.astype(h.dtype)
  last = jnp.take_along_axis(h, (jnp.sum(mask, axis=1) - 1)[:, None, None], axis=1)[:, 0]
  mean = jnp.sum(h * m[..., None], axis=1) / jnp.sum(m, axis=1, keepdims=True)
  return jnp.concatenate([last, mean], axis=-1)


def _pool_torch(h, mask):
  m = mask.to(h.dtype)
  last = h[torch.arange(h.shape[0]), mask.sum(1) - 1]
  mean = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True)
  return torch.cat([last, mean], dim=-1)


def our_fns(model, layers):
  """Jitted (forward with logits, pooled extraction) closures over the model's state."""
  graphdef, state = nnx.split(model)

  @jax.jit
  def logits(state, ids, mask):
    return nnx.merge(graphdef, state)(ids, mask).logits

  @jax.jit
  def extract(state, ids, mask):
    out = nnx.merge(graphdef, state)(ids, mask, layers=layers, return_logits=False)
    return {i: _pool_jax(out.hidden_states[i], mask) for i in layers}

  return (lambda ids, mask: jax.block_until_ready(logits(state, ids, mask)),
          lambda ids, mask: jax.block_until_ready(extract(state, ids, mask)))


def hf_fns(model, layers):
  def logits(ids, mask):
    with torch.inference_mode():
      return model(input_ids=ids, attention_mask=mask).logits

  def extract(ids, mask):
    with torch.inference_mode():
      hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
      return {i: _pool_torch(hidden[i], mask) for i in layers}

  def extract_base(ids, mask):  # the stricter peer: the bare decoder, no LM head
    with torch.inference_mode():
      hidden = model.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
      return {i: _pool_torch(hidden[i], mask) for i in layers}

  return logits, extract, extract_base


def parity(ours, hf_model, vocab: int) -> float:
  """Max |logits| difference on a short batch: proves both sides hold the same weights."""
  ids = np.random.default_rng(1).integers(0, vocab, (2, 32))
  mask = np.ones_like(ids)
  with torch.inference_mode():
    ref = hf_model(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask)).logits.numpy()
  got = np.asarray(ours(jnp.asarray(ids), jnp.asarray(mask)).logits)
  return float(np.abs(got - ref).max())


def bench_size(size: str, shapes, vocab: int, rounds: int, min_seconds: float, workdir: str) -> list[dict]:
  config = hf_config(size, vocab)
  path = os.path.join(workdir, size)
  hf_reference.save_hf_checkpoint(hf_reference.random_hf_model(config, seed=0), path)
  ours = convert.load_hf(path, dtype=jnp.float32)
  hf = {impl: transformers.Olmo3ForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                              attn_implementation=impl).eval()
        for impl in ("eager", "sdpa")}
  diff = parity(ours, hf["sdpa"], vocab)
  layers = probe_layers(config.num_hidden_layers)
  ours_logits, ours_extract = our_fns(ours, layers)
  results = []
  for batch, length in shapes:
    ids_np = np.random.default_rng(length).integers(0, vocab, (batch, length))
    ids_j, mask_j = jnp.asarray(ids_np), jnp.ones((batch, length), jnp.int32)
    ids_t, mask_t = torch.as_tensor(ids_np), torch.ones((batch, length), dtype=torch.long)
    variants = {"ours_forward": lambda: ours_logits(ids_j, mask_j),
                "ours_extraction": lambda: ours_extract(ids_j, mask_j)}
    for impl, model in hf.items():
      hf_logits, hf_extract, hf_extract_base = hf_fns(model, layers)
      variants[f"hf_{impl}_forward"] = lambda f=hf_logits: f(ids_t, mask_t)
      variants[f"hf_{impl}_extraction"] = lambda f=hf_extract: f(ids_t, mask_t)
      if impl == "sdpa":
        variants["hf_sdpa_base_model_extraction"] = lambda f=hf_extract_base: f(ids_t, mask_t)
    first_call = {}
    for name, fn in variants.items():  # compile / warm caches outside the timed rounds
      start = time.perf_counter()
      fn()
      first_call[name] = round(time.perf_counter() - start, 3)
      fn()
    load_before = common.load_average()
    samples = common.interleaved(variants, rounds, min_seconds)
    load_after = common.load_average()
    tokens = batch * length
    tps = {name: common.summarize(s, tokens) for name, s in samples.items()}
    case = {"size": size, "batch": batch, "length": length, "tokens_per_call": tokens,
            "vocab": vocab, "probe_layers": list(layers), "logits_max_abs_diff_vs_hf": diff,
            "load_average_before": load_before, "load_average_after": load_after,
            "first_call_seconds": first_call, "tokens_per_second": tps}
    for path_name in ("forward", "extraction"):
      best_impl = max(("eager", "sdpa"), key=lambda i: tps[f"hf_{i}_{path_name}"]["median"])
      best = tps[f"hf_{best_impl}_{path_name}"]["median"]
      ratio = tps[f"ours_{path_name}"]["median"] / best
      bar = BARS[path_name] if path_name == "extraction" else BARS[path_name][256 if length <= 256 else 512]
      case[path_name] = {"ours": tps[f"ours_{path_name}"]["median"],
                         "hf_eager": tps[f"hf_eager_{path_name}"]["median"],
                         "hf_sdpa": tps[f"hf_sdpa_{path_name}"]["median"],
                         "best_hf": best_impl, "ratio": round(ratio, 3), "bar": bar,
                         "bar_met": bool(ratio >= bar)}
    base = tps["hf_sdpa_base_model_extraction"]["median"]
    case["extraction"]["hf_sdpa_base_model"] = base
    case["extraction"]["ratio_vs_hf_base_model"] = round(case["extraction"]["ours"] / base, 3)
    results.append(case)
    print(f"{size} {batch}x{length}: forward ratio {case['forward']['ratio']:.3f}, "
          f"extraction ratio {case['extraction']['ratio']:.3f} (load {load_after[0]})", flush=True)
  return results


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--out", required=True, help="JSON file to write")
  parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated subset of " + ",".join(SIZES))
  parser.add_argument("--shapes", default=",".join(f"{b}x{t}" for b, t in SHAPES), help="BxT,...")
  parser.add_argument("--vocab", type=int, default=32000)
  parser.add_argument("--rounds", type=int, default=5, help="timed samples per variant (median taken)")
  parser.add_argument("--min-seconds", type=float, default=0.5, help="minimum length of one sample")
  args = parser.parse_args(argv)
  transformers.utils.logging.disable_progress_bar()
  shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
  info = {"machine": common.machine(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
          "transformers": transformers.__version__, "jax": jax.__version__,
          "jax_devices": [str(d) for d in jax.devices()], "rounds": args.rounds,
          "min_seconds_per_sample": args.min_seconds, "dtype": "float32", "sliding_window": SLIDING_WINDOW,
          "bars": {"forward_ratio_min": {str(k): v for k, v in BARS["forward"].items()},
                   "extraction_ratio_min": BARS["extraction"]}}
  cases = []
  with tempfile.TemporaryDirectory(prefix="bench-forward-") as workdir:
    for size in args.sizes.split(","):
      cases += bench_size(size, shapes, args.vocab, args.rounds, args.min_seconds, workdir)
  info["load_average_end"] = common.load_average()
  common.write_json(args.out, {**info, "cases": cases})
  rows = []
  for c in cases:
    for p in ("forward", "extraction"):
      r = c[p]
      rows.append([c["size"], f"{c['batch']}x{c['length']}", p, f"{r['ours']:.0f}", f"{r['hf_eager']:.0f}",
                   f"{r['hf_sdpa']:.0f}", f"{r['ratio']:.2f}", f">= {r['bar']}", "yes" if r["bar_met"] else "NO",
                   c["load_average_after"][0]])
  print(common.table(rows, ["size", "BxT", "path", "ours tok/s", "HF eager", "HF sdpa", "ratio", "bar",
                            "met", "load 1m"]))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
