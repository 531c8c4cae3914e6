"""Generated tokens/s: our samplers (continuous and static) vs HF `generate` (PyTorch CPU), same weights.

  python benchmarks/generate.py --out=generate.json [--repeats=5] [--sizes=tiny,small]
  python benchmarks/generate.py --out=/tmp/generate.json --quick   # seconds: does it run end to end

One random `Olmo3ForCausalLM` per size is saved once and loaded by every side. Each side runs in
its own worker process (torch's and XLA's thread pools never share a process), and the sides
alternate call by call, so a shared machine's load hits all alike; `paired_ratio_median` is the
median of the per-call-pair ratios (ours static vs HF).
Equal-length cases (no stop tokens: every row makes N tokens): greedy (B prompts -> N new
tokens) and sampled (k=8, temperature 1, no top-k/top-p; HF: num_return_sequences=8, do_sample=True,
top_k=0). `continuous` runs them with as many slots as static decodes rows at once (same memory).
The mixed case (`workload: gsm8k_lengths`, benchmarks/workloads.py; `--mixed_sizes`, default tiny):
`--mixed_rows` greedy rows whose lengths are GSM8K reference answers' (a `--long_frac` of rows run to
`--mixed_new_tokens`), EOS and a stop sequence active, on a countdown model (same compute as a random
one, known lengths; every side's rows are checked against them on the cold call). Continuous decodes
them in `--slots` slots; static and HF in batches of `--slots` rows (the same concurrency and KV
memory). `useful_tok_per_s` counts each row's tokens up to its stop.
The first (cold) call is reported beside the median of the warm repeats; `ratio` is ours / HF
of the medians, `ratio_best` of the best runs (closest to a quiet machine: on a shared 2-core
box torch's two OpenMP threads thrash when another job takes a core, JAX much less so).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from benchmarks import common, workloads  # noqa: E402

flags.DEFINE_string("out", None, "Where to write the JSON results.")
flags.DEFINE_integer("repeats", 5, "Warm timed runs per case (median reported).")
flags.DEFINE_string("sizes", "tiny,small", "Comma-separated model sizes.")
flags.DEFINE_list("cases", ["greedy", "sampled", "mixed"], "Cases to run.")
flags.DEFINE_integer("batch", 16, "Prompts per batch (equal-length cases).")
flags.DEFINE_integer("prompt_len", 64, "Prompt tokens.")
flags.DEFINE_integer("new_tokens", 32, "New tokens per sequence (equal-length cases).")
flags.DEFINE_integer("k", 8, "Samples per prompt in the sampled case.")
flags.DEFINE_integer("mixed_rows", 1319, "Rows of the mixed-length workload (1319: one per GSM8K answer).")
flags.DEFINE_string("mixed_sizes", "tiny", "Sizes that run the mixed case (it is long: static and HF decode "
                    "every batch to its longest row).")
flags.DEFINE_integer("mixed_new_tokens", 256, "Token budget of the mixed workload (GSM8K answers <= 235).")
flags.DEFINE_float("long_frac", 0.1, "Fraction of mixed rows that never stop (run to the budget).")
flags.DEFINE_integer("slots", 64, "Mixed workload: continuous decode slots = static/HF batch rows.")
flags.DEFINE_integer("chunk", 256, "Continuous sampler: most decode steps per jitted call.")
flags.DEFINE_integer("refill", 0, "Continuous sampler: free slots that end a chunk and are refilled at once "
                     "(0: the engine's default, an eighth of the slots).")
flags.DEFINE_bool("quick", False, "Tiny settings (tiny size, 1 repeat, short runs): checks it runs end to end.")
flags.DEFINE_string("_worker", None, "Internal: 'framework:size:ckpt_dir:countdown_dir'.")
FLAGS = flags.FLAGS

SIZES = {  # the benchmark models (BENCHMARKS.md)
    "tiny": dict(num_hidden_layers=4, hidden_size=128, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=384, vocab_size=1024),
    "small": dict(num_hidden_layers=8, hidden_size=512, num_attention_heads=8, num_key_value_heads=8,
                  intermediate_size=1536, vocab_size=8192),
}
QUICK = dict(sizes="tiny", repeats=1, batch=4, new_tokens=8, k=2, mixed_rows=24, mixed_new_tokens=64, slots=8)
FRAMEWORKS = ("hf", "ours", "cont")  # HF generate, our static sampler, our continuous sampler
_WORKLOAD_FLAGS = ("batch", "prompt_len", "new_tokens", "k", "mixed_rows", "mixed_new_tokens", "long_frac",
                   "slots", "chunk", "refill")


def _save_model(size: str, path: str, countdown: bool = False) -> int:
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  cfg = transformers.Olmo3Config(**SIZES[size], max_position_embeddings=1024, rms_norm_eps=1e-6,
                                 sliding_window=64, pad_token_id=0, eos_token_id=1, bos_token_id=None,
                                 tie_word_embeddings=False)
  torch.manual_seed(0)
  model = transformers.Olmo3ForCausalLM(cfg).eval()
  if countdown:
    workloads.countdown_hf(model)
  model.save_pretrained(path)
  return sum(p.numel() for p in model.parameters())


def _prompts(vocab: int):
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  return rng.integers(3, vocab, size=(FLAGS.batch, FLAGS.prompt_len)).astype(np.int64)


def _mixed_workload(size: str) -> workloads.Workload:
  return workloads.gsm8k_workload(FLAGS.mixed_rows, max_new_tokens=FLAGS.mixed_new_tokens, long_frac=FLAGS.long_frac,
                                  prompt_len=FLAGS.prompt_len, vocab=SIZES[size]["vocab_size"])


def _check_mixed(rows, w: workloads.Workload) -> None:
  got = [workloads.useful_length(r, w) for r in rows]
  if got != w.lengths.tolist():
    bad = [i for i, (a, b) in enumerate(zip(got, w.lengths)) if a != b]
    raise RuntimeError(f"mixed workload: rows {bad[:5]} made {[got[i] for i in bad[:5]]} useful tokens, "
                       f"expected {[int(w.lengths[i]) for i in bad[:5]]}")


def _hf_runner(size: str, path: str, mixed_path: str):
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  load = lambda p: transformers.Olmo3ForCausalLM.from_pretrained(p, dtype=torch.float32,
                                                                 attn_implementation="sdpa").eval()
  model, countdown, w = load(path), load(mixed_path), _mixed_workload(size)
  model.generation_config.eos_token_id = None
  ids = torch.as_tensor(_prompts(SIZES[size]["vocab_size"]))
  b, n, k = FLAGS.batch, FLAGS.new_tokens, FLAGS.k

  class StopSequence(transformers.StoppingCriteria):
    def __call__(self, input_ids, scores, **kwargs):
      return (input_ids[:, -2] == w.stop_sequence[0]) & (input_ids[:, -1] == w.stop_sequence[1])

  def run(case):
    if case == "mixed":
      rows, s = [], FLAGS.slots
      for a in range(0, len(w.prompts), s):
        x = torch.as_tensor(w.prompts[a:a + s])
        with torch.inference_mode():
          out = countdown.generate(x, attention_mask=torch.ones_like(x), do_sample=False,
                                   max_new_tokens=w.max_new_tokens, eos_token_id=workloads.EOS, pad_token_id=0,
                                   stopping_criteria=transformers.StoppingCriteriaList([StopSequence()]))
        rows += out[:, x.shape[1]:].tolist()
      return rows
    sampled = case == "sampled"
    kw = (dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, num_return_sequences=k)
          if sampled else dict(do_sample=False))
    with torch.inference_mode():
      out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                           pad_token_id=0, use_cache=True, **kw)
    assert out.shape == ((b * k) if sampled else b, ids.shape[1] + n), out.shape
    return None
  return run, w


def _runner(framework: str, size: str, path: str, mixed_path: str):
  """fn(case) for 'greedy' / 'sampled' / 'mixed' on one side; returns mixed rows (checked on the cold call)."""
  if framework == "hf":
    return _hf_runner(size, path, mixed_path)
  from models import continuous, convert, sampling  # pylint: disable=import-outside-toplevel
  model, countdown, w = convert.load_hf(path), convert.load_hf(mixed_path), _mixed_workload(size)
  prompts = _prompts(SIZES[size]["vocab_size"])
  b, n, k = FLAGS.batch, FLAGS.new_tokens, FLAGS.k
  rows, qids = prompts.tolist(), [f"q{i}" for i in range(b)]
  mixed_params = sampling.SamplingParams(max_new_tokens=w.max_new_tokens, stop_sequences=(w.stop_sequence,))
  mixed_ids = [f"m{i}" for i in range(len(w.prompts))]

  def run(case):
    if case == "mixed":
      kw = dict(pad_id=0, eos_id=workloads.EOS)
      if framework == "cont":
        out = continuous.generate(countdown, w.prompts, mixed_ids, mixed_params, rows=FLAGS.slots,
                                  chunk=FLAGS.chunk, refill=FLAGS.refill or None, **kw)
      else:
        s = FLAGS.slots
        out = [o for a in range(0, len(w.prompts), s)
               for o in sampling.generate(countdown, w.prompts[a:a + s], mixed_ids[a:a + s], mixed_params,
                                          batch_multiple=s, **kw)]
      return [o[0] for o in out]
    sampled = case == "sampled"
    params = sampling.SamplingParams(temperature=1.0 if sampled else 0.0, num_samples=k if sampled else 1,
                                     max_new_tokens=n, seed=0)
    if framework == "cont":
      out = continuous.generate(model, rows, qids, params, pad_id=0, rows=b * params.num_samples, chunk=FLAGS.chunk)
    else:
      out = sampling.generate(model, rows, qids, params, pad_id=0)
    assert all(len(s) == n for o in out for s in o)
    return None
  return run, w


def _serve(framework: str, size: str, path: str, mixed_path: str) -> None:
  """Worker loop: reads a case name per line, runs it once, answers with wall and CPU seconds."""
  run, w = _runner(framework, size, path, mixed_path)
  print("READY", flush=True)
  for line in sys.stdin:
    case, check = line.split()
    t, c = time.perf_counter(), time.process_time()
    rows = run(case)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    if rows is not None and check == "1":
      _check_mixed(rows, w)
    print("RESULT " + json.dumps({"wall": wall, "cpu": cpu}), flush=True)


class _Worker:
  """One side in its own process, driven over stdin/stdout."""

  def __init__(self, framework, size, path, mixed_path):
    cmd = [sys.executable, os.path.abspath(__file__), f"--_worker={framework}:{size}:{path}:{mixed_path}"]
    cmd += [f"--{f}={getattr(FLAGS, f)}" for f in _WORKLOAD_FLAGS]
    self.name = f"{framework}/{size}"
    self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    self._read("READY")

  def _read(self, tag):
    for line in self.proc.stdout:
      if line.startswith(tag):
        return line[len(tag):].strip()
    raise RuntimeError(f"{self.name} worker died (exit {self.proc.wait()})")

  def run(self, case, check=False):
    self.proc.stdin.write(f"{case} {int(check)}\n")
    self.proc.stdin.flush()
    return json.loads(self._read("RESULT"))

  def close(self):
    self.proc.stdin.close()
    self.proc.wait()


def _side(runs, cold, tokens) -> dict:
  walls = [r["wall"] for r in runs]
  return {"cold_s": round(cold, 3), "median_s": round(statistics.median(walls), 4),
          "tok_per_s": round(tokens / statistics.median(walls), 1), "tok_per_s_best": round(tokens / min(walls), 1),
          "tok_per_s_all": [round(tokens / t, 1) for t in walls],
          "cpu_util": round(statistics.median(r["cpu"] / r["wall"] for r in runs), 2)}


def _measure(size: str, path: str, mixed_path: str, cases) -> dict:
  """Alternates the sides call by call, so shared-machine load hits them alike."""
  workers = {fw: _Worker(fw, size, path, mixed_path) for fw in FRAMEWORKS}
  useful = _mixed_workload(size).useful_tokens
  try:
    res = {}
    for case in cases:
      cold = {fw: w.run(case, check=True)["wall"] for fw, w in workers.items()}
      runs = {fw: [] for fw in workers}
      for _ in range(FLAGS.repeats):
        for fw, w in workers.items():
          time.sleep(0.3)  # let the other sides' thread pools go idle
          runs[fw].append(w.run(case))
      tokens = useful if case == "mixed" else FLAGS.batch * FLAGS.new_tokens * (FLAGS.k if case == "sampled" else 1)
      res[case] = {"tokens": tokens, "paired_ratio_median": round(statistics.median(
          h["wall"] / o["wall"] for h, o in zip(runs["hf"], runs["ours"])), 2)}
      res[case].update({fw: _side(runs[fw], cold[fw], tokens) for fw in workers})
    return res
  finally:
    for w in workers.values():
      w.close()


def _case_row(size, params, case, r) -> dict:
  cont, ours, hf = r["cont"], r["ours"], r["hf"]
  row = {"size": size, "params": params, "case": case, "tokens": r["tokens"], "hf": hf, "ours": ours,
         "continuous": cont, "ratio": round(ours["tok_per_s"] / hf["tok_per_s"], 2),
         "ratio_best": round(ours["tok_per_s_best"] / hf["tok_per_s_best"], 2),
         "paired_ratio_median": r["paired_ratio_median"],
         "ratio_continuous_vs_static": round(cont["tok_per_s"] / ours["tok_per_s"], 2),
         "ratio_continuous_vs_hf": round(cont["tok_per_s"] / hf["tok_per_s"], 2)}
  if case == "mixed":
    row.update(workload="gsm8k_lengths", rows=FLAGS.mixed_rows, slots=FLAGS.slots,
               max_new_tokens=FLAGS.mixed_new_tokens, long_frac=FLAGS.long_frac, useful_tokens=r["tokens"],
               useful_tok_per_s={"continuous": cont["tok_per_s"], "static": ours["tok_per_s"], "hf": hf["tok_per_s"]})
  return row


def main(argv):
  del argv
  if FLAGS._worker:
    _serve(*FLAGS._worker.split(":", 3))
    return
  if not FLAGS.out:
    raise app.UsageError("--out is required")
  if FLAGS.quick:
    for name, value in QUICK.items():
      setattr(FLAGS, name, value)
  report = {"machine": {"load_before": os.getloadavg(), "cpus": os.cpu_count()},
            "setup": {f: getattr(FLAGS, f) for f in _WORKLOAD_FLAGS} | {
                "repeats": FLAGS.repeats, "dtype": "float32", "hf_attn": "sdpa", "mixed_sizes": FLAGS.mixed_sizes},
            "cases": []}
  with tempfile.TemporaryDirectory() as tmp:
    for size in FLAGS.sizes.split(","):
      path, mixed_path = os.path.join(tmp, size), os.path.join(tmp, size + "-countdown")
      params = _save_model(size, path)
      _save_model(size, mixed_path, countdown=True)
      cases = [c for c in FLAGS.cases if c != "mixed" or size in FLAGS.mixed_sizes.split(",")]
      res = _measure(size, path, mixed_path, cases)
      report["cases"] += [_case_row(size, params, case, res[case]) for case in cases]
  report["machine"]["load_after"] = os.getloadavg()
  common.write_json(FLAGS.out, report)
  print(f"{'size':6} {'case':8} {'HF tok/s':>10} {'static tok/s':>13} {'cont tok/s':>11} {'cont/static':>12} "
        f"{'cont/HF':>8} {'cont cold s':>12}")
  for c in report["cases"]:
    print(f"{c['size']:6} {c['case']:8} {c['hf']['tok_per_s']:>10} {c['ours']['tok_per_s']:>13} "
          f"{c['continuous']['tok_per_s']:>11} {c['ratio_continuous_vs_static']:>12} {c['ratio_continuous_vs_hf']:>8} "
          f"{c['continuous']['cold_s']:>12}")
  print(f"load average before/after: {report['machine']['load_before']} / {report['machine']['load_after']}")


if __name__ == "__main__":
  app.run(main)
