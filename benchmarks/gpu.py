"""OLMo3-7B on one GPU: prefill, probe-a-checkpoint and sampler throughput, and peak memory.

  python -m benchmarks.gpu --out=benchmarks/out/gpu.json                 # 7B, bf16, random weights (H200)
  python -m benchmarks.gpu --config=small --out=/tmp/gpu.json            # same code, tiny model, CPU, seconds
  python -m benchmarks.gpu --compile_only --out=benchmarks/out/compile.json  # 7B programs compiled from
                                                                          # abstract shapes (any backend, CPU ok)

Random bf16 weights in the real OLMo3-7B configuration (`models.config.olmo3_7b`); no checkpoint.
Writes the JSON (after every section, so a run cut short keeps what finished) and a markdown
section for BENCHMARKS.md beside it (`--md`, default: the JSON path with .md). Sections:
  * prefill: last-token logits of B x T random tokens (8x2048, 64x512): tokens/s and MFU (model
    FLOPs: 2 per weight per token, causal attention, no LM head but the last token's) against the
    device's dense bf16 peak (989.5 TFLOP/s on H100 and H200);
  * probe: probing a checkpoint = feature extraction (`probing.extract`, the 7B probe preset of
    configs/probes: layers 8-32, last+mean, token states of layer 16, gold-answer NLL, the shared
    8-shot prefix run once) of GSM8K's 1,319 prompts, then the linear, mlp, attention and hybrid
    heads (random parameters) on its features; cold (with compilation) and warm wall time;
  * sampler: the continuous sampler (`models.continuous`, shared few-shot prefix) on GSM8K's
    prompts with answer lengths of its reference solutions (benchmarks/workloads.py: a countdown
    LM head, 10% of rows never stop), 512 new tokens, at 128 and 256 decode slots: useful tokens/s.
Peak device memory is `memory_stats()['peak_bytes_in_use']` after each timed step (a running peak:
sections run from the smallest expected footprint up). Needs ml-collections (configs/probes).
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks import common, workloads  # noqa: E402
from models import continuous, kv_budget, sampling  # noqa: E402
from models.config import default_layer_types, olmo3_7b, tiny  # noqa: E402
from models.olmo3 import abstract_model, init_model  # noqa: E402

flags.DEFINE_enum("config", "7b", ["7b", "small"], "7b: the real shape (GPU); small: a tiny model (CPU, seconds).")
flags.DEFINE_string("out", None, "JSON output path.")
flags.DEFINE_string("md", None, "Markdown output path (default: --out with .md).")
flags.DEFINE_list("sections", ["prefill", "probe", "sampler"], "Sections to run, in order.")
flags.DEFINE_integer("questions", None, "GSM8K questions for probe and sampler (default: the config's).")
flags.DEFINE_list("sampler_rows", None, "Decode slots to measure (default: the config's).")
flags.DEFINE_float("kv_cache_gib", None, "Cap the sampler's KV caches (models.kv_budget); default: no cap.")
flags.DEFINE_bool("compile_only", False, "Only compile the extraction and sampler programs of --config from "
                  "abstract shapes (jit(...).lower(ShapeDtypeStruct...).compile()) and report the times.")
FLAGS = flags.FLAGS

PEAK_BF16 = {"H100": 989.5e12, "H200": 989.5e12}  # dense bf16 FLOP/s (reference/interop-and-scale.md)
SETTINGS = {
    # Extraction in batches of 256 (the preset's 8 compiles 32 programs for GSM8K: one per length and
    # reference window), the NLL's logits 32 positions at a time (256 x 32 x 100k fp32 = 3.3 GB).
    "7b": dict(prefill=((8, 2048), (64, 512)), questions=1319, sampler_rows=(128, 256), max_new=512,
               probe_preset="7b", probe_batch=256, probe_length_bucket=256, repeats=3,
               probe_overrides=dict(nll_chunk=32)),
    # The testbed probe preset (a 4-layer model), with GSM8K's prompts kept whole as the 7B preset does.
    "small": dict(prefill=((2, 64), (4, 32)), questions=8, sampler_rows=(8,), max_new=64,
                  probe_preset="testbed", probe_batch=8, probe_length_bucket=64, repeats=1,
                  probe_overrides=dict(max_prompt_tokens=2048, max_reference_tokens=512)),
}


def model_config(name: str):
  if name == "7b":
    return olmo3_7b(dtype="bfloat16", param_dtype="bfloat16")
  return tiny(vocab_size=50304, num_hidden_layers=4, layer_types=default_layer_types(4), sliding_window=16,
              max_position_embeddings=2048, eos_token_id=workloads.EOS, pad_token_id=0)


def random_model(cfg):
  """Random weights: drawn on the device for the 7B; for the small model drawn with numpy, which
  spares the CPU a compile per parameter shape (norm weights 1, the rest N(0, 0.02))."""
  if jax.default_backend() != "cpu":
    return init_model(cfg, seed=0)
  graphdef, state = nnx.split(abstract_model(cfg))
  rng = np.random.default_rng(0)
  draw = lambda path, x: jnp.asarray(np.ones(x.shape) if "norm" in str(path[-2])  # path[-1] is .value
                                     else 0.02 * rng.standard_normal(x.shape), x.dtype)
  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, state))


def _memory() -> dict:
  stats = jax.devices()[0].memory_stats() or {}
  return {k: stats[k] for k in ("peak_bytes_in_use", "bytes_in_use", "bytes_limit") if k in stats}


def _timed(fn, repeats: int) -> dict:
  """Cold (first, with compilation) and warm (median of `repeats`) seconds of fn(), which blocks."""
  t = time.perf_counter()
  fn()
  cold = time.perf_counter() - t
  warm = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    warm.append(time.perf_counter() - t)
  return {"cold_s": round(cold, 3), "warm_s": round(statistics.median(warm), 4) if warm else None}


def forward_flops(c, tokens: int, length: int) -> float:
  """Model FLOPs of a forward over `tokens` tokens in rows of `length`: matmuls (2 per weight) and
  causal attention (QK and PV over (length + 1) / 2 keys on average), LM head excluded."""
  d, f, h, kv, hd = c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim
  weights = c.num_hidden_layers * (2 * d * h * hd + 2 * d * kv * hd + 3 * d * f)
  attn = c.num_hidden_layers * 2 * 2 * h * hd * (length + 1) / 2
  return tokens * (2 * weights + attn)


def prefill_section(model, s) -> list[dict]:
  graphdef, state = nnx.split(model)
  run = jax.jit(lambda st, ids: sampling._prefill(nnx.merge(graphdef, st), ids, jnp.ones_like(ids), None)[0])
  kind = jax.devices()[0].device_kind
  peak = next((v for k, v in PEAK_BF16.items() if k in kind), None)
  rows = []
  for b, t in s["prefill"]:
    ids = jnp.asarray(np.random.default_rng(0).integers(0, model.config.vocab_size, (b, t)), jnp.int32)
    res = _timed(lambda: run(state, ids).block_until_ready(), s["repeats"])
    tok_s = b * t / res["warm_s"]
    flops = forward_flops(model.config, b * t, t) / res["warm_s"]
    rows.append({"batch": b, "length": t, **res, "tok_per_s": round(tok_s, 1), "tflop_per_s": round(flops / 1e12, 2),
                 "mfu": round(flops / peak, 4) if peak else None, "memory": _memory()})
    print(f"prefill {b}x{t}: {tok_s:.0f} tok/s, MFU {rows[-1]['mfu']}", flush=True)
  return rows


def _gsm8k(n: int):
  from probing import tasks  # pylint: disable=import-outside-toplevel
  from probing.tasks.olmo_eval import shipped_tokenizer_path  # pylint: disable=import-outside-toplevel
  from probing.tokenizer import HFTokenizer  # pylint: disable=import-outside-toplevel
  task = tasks.get("gsm8k")
  return task, list(task.questions(n)), HFTokenizer(shipped_tokenizer_path(workloads.BPE))


def probe_section(model, s, n: int) -> dict:
  import probing  # pylint: disable=import-outside-toplevel
  from configs.probes import attention, hybrid, linear, mlp  # pylint: disable=import-outside-toplevel
  from probing.features import extraction as extraction_lib  # pylint: disable=import-outside-toplevel
  from probing.features import forward as forward_lib  # pylint: disable=import-outside-toplevel
  from probing.probes import config as probe_config  # pylint: disable=import-outside-toplevel
  from probing.probes import data as data_lib, heads, trained  # pylint: disable=import-outside-toplevel
  task, questions, tok = _gsm8k(n)
  preset = s["probe_preset"]
  spec = probing.features.spec_from_config(linear.get_config(preset).extract, batch_size=s["probe_batch"],
                                           length_bucket=s["probe_length_bucket"], **s.get("probe_overrides", {}))
  out = {}

  def extract():
    out["fs"] = probing.extract(model, tok, questions, spec, task="gsm8k", checkpoint="random",
                                checkpoint_step=0, prompt_format_hash=task.format_hash())
  ext = _timed(extract, 1)
  fs = out["fs"]
  mem = _memory()
  head_times = {}
  for family, module in (("linear", linear), ("mlp", mlp), ("attention", attention), ("hybrid", hybrid)):
    cfg = probe_config.configs_from(module.get_config(preset))[0]
    inputs = data_lib._input_arrays(fs, cfg.layers if cfg.uses_x else (), cfg.pooling, cfg.uses_tokens, cfg.uses_nll)
    inputs["task"] = np.zeros(len(questions), np.int32)
    x, t = inputs.get("x"), inputs.get("tokens")
    pspec = heads.ProbeSpec(family=cfg.family, n_layers=0 if x is None else x.shape[1],
                            feature_dim=0 if x is None else x.shape[2], token_dim=0 if t is None else t.shape[-1],
                            hidden=cfg.hidden, n_queries=cfg.n_queries, base=cfg.base)
    probe = heads.build_probe(pspec)
    head_times[family] = _timed(lambda p=probe, i=inputs: trained.apply(p, i), 1)
  plan = extraction_lib._plan(model, tok, questions, spec, 1, checkpoint="random", checkpoint_step=0, task="gsm8k",
                              prompt_format_hash="")
  programs = {forward_lib.batch_shapes(plan.prompts, plan.refs, rows, spec.length_bucket) + (plan.rows_of[g],)
              for g, rows in enumerate(plan.batches)}
  warm = ext["warm_s"] + head_times["hybrid"]["warm_s"]
  res = {"questions": len(questions), "layers": list(spec.layers), "token_layer": spec.token_layer,
         "batch_size": spec.batch_size, "length_bucket": spec.length_bucket, "extraction_programs": len(programs),
         "shared_prefix_tokens": fs.meta.get("shared_prefix_tokens"),
         "prompt_tokens": int(np.sum(fs.arrays["prompt_len"])), "extract": ext, "heads": head_times,
         "probe_warm_s": round(warm, 3), "memory": mem}
  print(f"probe: {len(questions)} questions, extraction {ext}, hybrid head {head_times['hybrid']}", flush=True)
  return res


def sampler_section(model, s, n: int, rows_list) -> list[dict]:
  """Continuous sampler throughput on GSM8K prompts with GSM8K answer lengths (countdown weights)."""
  _, questions, tok = _gsm8k(n)
  workloads.countdown_jax(model)
  prompts = tok.encode_batch([q.prompt for q in questions])
  w = workloads.gsm8k_workload(len(prompts), max_new_tokens=s["max_new"], long_frac=0.1, prompt_len=0,
                               vocab=model.config.vocab_size, prompts=prompts,
                               answer_lengths=workloads.gsm8k_answer_lengths(n))
  params = sampling.SamplingParams(max_new_tokens=w.max_new_tokens, stop_sequences=(w.stop_sequence,))
  ids = [f"q{i}" for i in range(len(w.prompts))]
  p0 = continuous.common_prefix_length(w.prompts)
  rest = max(len(p) for p in w.prompts) - p0
  graph_state = nnx.split(model)
  out = []
  for rows in rows_list:
    cache = kv_budget.cache_bytes(model.config, rows=rows, group=1, prompt_tokens=rest,
                                  max_new_tokens=w.max_new_tokens, prefix_tokens=p0)
    if FLAGS.kv_cache_gib and cache > FLAGS.kv_cache_gib * 2**30:
      out.append({"rows": rows, "skipped": f"caches need {cache / 2**30:.1f} GiB > --kv_cache_gib"})
      continue
    got = {}

    def run():
      got["rows"] = continuous.generate(model, w.prompts, ids, params, pad_id=0, eos_id=workloads.EOS, rows=rows,
                                        share_prefix=True, prefix_len=p0, graphdef_state=graph_state)
    res = _timed(run, 1)
    lengths = [workloads.useful_length(r[0], w) for r in got["rows"]]
    if lengths != w.lengths.tolist():
      raise RuntimeError("sampler: rows did not stop where the countdown workload says")
    out.append({"rows": rows, **res, "useful_tokens": w.useful_tokens,
                "useful_tok_per_s": round(w.useful_tokens / res["warm_s"], 1), "shared_prefix_tokens": p0,
                "prompt_slot_tokens": sampling.prompt_bucket(rest), "kv_cache_gib": round(cache / 2**30, 2),
                "memory": _memory()})
    print(f"sampler {rows} slots: {out[-1]['useful_tok_per_s']} useful tok/s", flush=True)
  return out


def compile_only(name: str, s) -> dict:
  """Compile seconds of the extraction pass and sampler programs (7B: the real shapes), from
  abstract shapes only: no weights, no device memory."""
  from probing.features import forward as forward_lib  # pylint: disable=import-outside-toplevel
  from configs.probes import linear  # pylint: disable=import-outside-toplevel
  import probing  # pylint: disable=import-outside-toplevel
  cfg = model_config(name)
  graphdef, state = nnx.split(abstract_model(cfg))
  sds = jax.ShapeDtypeStruct
  spec = probing.features.spec_from_config(linear.get_config(s["probe_preset"]).extract, batch_size=s["probe_batch"],
                                           **s.get("probe_overrides", {}))
  b, t, r_pad = spec.batch_size, 256, 128
  fwd = forward_lib.compiled_pass(graphdef, spec.layers, spec.pooling, spec.token_layer, spec.token_cap, spec.hybrid,
                                  r_pad, spec.nll_chunk, cfg.num_hidden_layers, None)
  arrays = (sds((b, t), jnp.int32), sds((b, t), bool), sds((b, t), bool), sds((b,), jnp.int32))
  programs = {"extraction_pass": lambda: fwd.lower(state, *arrays)}
  rows, n_new, width = max(s["sampler_rows"]), s["max_new"], 256
  espec = continuous.EngineSpec(rows, 1, width, 0, n_new, (workloads.EOS,), ((521, 520),), True, False, False, 0, None)
  carry = jax.eval_shape(lambda: continuous._empty(nnx.merge(graphdef, state), espec))
  scalars = (sds((), jnp.float32), sds((), jnp.float32))
  programs["sampler_chunk"] = lambda: continuous._chunk_jit.lower(
      graphdef, state, carry, (), sds((), jnp.int32), sds((), jnp.int32), *scalars, spec=espec)
  a, d = 8, 32
  programs["sampler_admit"] = lambda: continuous._admit_jit.lower(
      graphdef, state, carry, (), sds((a, width), jnp.int32), sds((a, width), jnp.int32), sds((a, 2), jnp.uint32),
      sds((d,), jnp.int32), sds((d,), jnp.int32), sds((d, 1), jnp.uint32), sds((d, 1), bool), sds((d, 1), bool),
      sds((), jnp.uint32), *scalars, spec=espec)
  out = {"backend": jax.default_backend(), "shapes": {"extraction": [b, t, r_pad], "sampler_rows": rows,
                                                      "max_new_tokens": n_new, "prompt_width": width, "admit": [a, d]}}
  for name, lower in programs.items():
    t0 = time.perf_counter()
    lowered = lower()
    t1 = time.perf_counter()
    lowered.compile()
    out[name] = {"lower_s": round(t1 - t0, 2), "compile_s": round(time.perf_counter() - t1, 2)}
    print(name, out[name], flush=True)
  return out


def markdown(report: dict) -> str:
  """The BENCHMARKS.md section of a run."""
  dev = report["device"]
  flag = " --compile_only" if "compile_only" in report else ""
  lines = [f"## OLMo3-7B shape on a GPU ({report['config']})", "",
           f"**Reproduce:** `python -m benchmarks.gpu --config={report['config']}{flag} --out=...`. Device: "
           f"{dev['kind']} ({dev['backend']}), jax {report['jax']}; {report.get('dtype')} weights, wall "
           f"{report.get('wall_s')} s.", ""]
  gib = lambda m: round(m.get("peak_bytes_in_use", 0) / 2**30, 1) if m else None
  if "prefill" in report:
    lines += [common.table([[f"{r['batch']}x{r['length']}", r["tok_per_s"], r["tflop_per_s"], r["mfu"], r["cold_s"],
                             gib(r["memory"])] for r in report["prefill"]],
                           ["prefill B x T", "tok/s", "TFLOP/s", "MFU", "cold s", "peak GiB"]), ""]
  if "probe" in report:
    p = report["probe"]
    lines += [common.table([[p["questions"], p["shared_prefix_tokens"], p["extract"]["warm_s"], p["extract"]["cold_s"],
                             p["heads"]["hybrid"]["warm_s"], p["probe_warm_s"], gib(p["memory"])]],
                           ["GSM8K questions", "shared prefix", "extract s", "extract cold s", "hybrid head s",
                            "probe a checkpoint s", "peak GiB"]), ""]
  if "sampler" in report:
    lines += [common.table([[r["rows"], r.get("useful_tok_per_s", r.get("skipped")), r.get("warm_s"), r.get("cold_s"),
                             r.get("kv_cache_gib"), gib(r.get("memory"))] for r in report["sampler"]],
                           ["decode slots", "useful tok/s", "s", "cold s", "KV caches GiB", "peak GiB"]), ""]
  if "compile_only" in report:
    c = report["compile_only"]
    lines += [common.table([[k, v["lower_s"], v["compile_s"]] for k, v in c.items() if isinstance(v, dict)
                            and "compile_s" in v], ["program (abstract shapes)", "lower s", "compile s"]), ""]
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  if not FLAGS.out:
    raise app.UsageError("--out is required")
  s = dict(SETTINGS[FLAGS.config])
  n = FLAGS.questions or s["questions"]
  rows_list = [int(r) for r in (FLAGS.sampler_rows or s["sampler_rows"])]
  md_path = FLAGS.md or os.path.splitext(FLAGS.out)[0] + ".md"
  dev = jax.devices()[0]
  report = {"config": FLAGS.config, "jax": jax.__version__, "device": {"kind": dev.device_kind,
                                                                       "backend": jax.default_backend()}}
  start = time.perf_counter()

  def save():
    report["wall_s"] = round(time.perf_counter() - start, 1)
    common.write_json(FLAGS.out, report)
    with open(md_path, "w") as f:
      f.write(markdown(report))

  if FLAGS.compile_only:
    report["dtype"] = model_config(FLAGS.config).param_dtype
    report["compile_only"] = compile_only(FLAGS.config, s)
    save()
    return
  model = random_model(model_config(FLAGS.config))
  report["dtype"] = model.config.param_dtype
  report["init_s"] = round(time.perf_counter() - start, 1)
  for section in FLAGS.sections:
    if section == "prefill":
      report["prefill"] = prefill_section(model, s)
    elif section == "probe":
      report["probe"] = probe_section(model, s, n)
    elif section == "sampler":
      report["sampler"] = sampler_section(model, s, n, rows_list)
    else:
      raise app.UsageError(f"unknown section {section!r}")
    save()
  print(f"wrote {FLAGS.out} and {md_path} ({report['wall_s']} s)")


if __name__ == "__main__":
  app.run(main)
