"""Generated tokens/s: our jitted KV-cache sampler vs HF `generate` (PyTorch CPU), same weights.

  python benchmarks/generate.py --out=generate.json [--repeats=5] [--sizes=tiny,small]

One random `Olmo3ForCausalLM` per size is saved once and loaded by both sides. Each side runs
in its own worker process (torch's and XLA's thread pools never share a process), and the two
alternate call by call, so a shared machine's load hits both alike; `paired_ratio_median` is the
median of the per-call-pair ratios.
Cases: greedy (B prompts -> N new tokens) and sampled (k=8, temperature 1, no top-k/top-p;
HF: num_return_sequences=8, do_sample=True, top_k=0). No stop tokens: every row makes N tokens.
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

from benchmarks import common  # noqa: E402

flags.DEFINE_string("out", None, "Where to write the JSON results.")
flags.DEFINE_integer("repeats", 5, "Warm timed runs per case (median reported).")
flags.DEFINE_string("sizes", "tiny,small", "Comma-separated model sizes.")
flags.DEFINE_list("cases", ["greedy", "sampled"], "Cases to run.")
flags.DEFINE_integer("batch", 16, "Prompts per batch.")
flags.DEFINE_integer("prompt_len", 64, "Prompt tokens.")
flags.DEFINE_integer("new_tokens", 32, "New tokens per sequence.")
flags.DEFINE_integer("k", 8, "Samples per prompt in the sampled case.")
flags.DEFINE_string("_worker", None, "Internal: 'framework:size:ckpt_dir'.")
FLAGS = flags.FLAGS

SIZES = {  # the benchmark models (BENCHMARKS.md)
    "tiny": dict(num_hidden_layers=4, hidden_size=128, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=384, vocab_size=1024),
    "small": dict(num_hidden_layers=8, hidden_size=512, num_attention_heads=8, num_key_value_heads=8,
                  intermediate_size=1536, vocab_size=8192),
}


def _save_model(size: str, path: str) -> int:
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  cfg = transformers.Olmo3Config(**SIZES[size], max_position_embeddings=1024, rms_norm_eps=1e-6,
                                 sliding_window=64, pad_token_id=0, eos_token_id=1, bos_token_id=None,
                                 tie_word_embeddings=False)
  torch.manual_seed(0)
  model = transformers.Olmo3ForCausalLM(cfg).eval()
  model.save_pretrained(path)
  return sum(p.numel() for p in model.parameters())


def _prompts(vocab: int):
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  return rng.integers(3, vocab, size=(FLAGS.batch, FLAGS.prompt_len)).astype(np.int64)


def _runner(framework: str, size: str, path: str):
  """fn(case) for 'greedy' / 'sampled' on one side, weights from `path`."""
  prompts = _prompts(SIZES[size]["vocab_size"])
  b, n, k = FLAGS.batch, FLAGS.new_tokens, FLAGS.k
  if framework == "hf":
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel
    model = transformers.Olmo3ForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                          attn_implementation="sdpa").eval()
    model.generation_config.eos_token_id = None
    ids = torch.as_tensor(prompts)
    mask = torch.ones_like(ids)

    def run(case):
      sampled = case == "sampled"
      kw = (dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, num_return_sequences=k)
            if sampled else dict(do_sample=False))
      with torch.inference_mode():
        out = model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, pad_token_id=0,
                             use_cache=True, **kw)
      assert out.shape == ((b * k) if sampled else b, ids.shape[1] + n), out.shape
    return run
  from models import convert, sampling  # pylint: disable=import-outside-toplevel
  model = convert.load_hf(path)
  rows, qids = prompts.tolist(), [f"q{i}" for i in range(b)]

  def run(case):
    sampled = case == "sampled"
    params = sampling.SamplingParams(temperature=1.0 if sampled else 0.0, num_samples=k if sampled else 1,
                                     max_new_tokens=n, seed=0)
    out = sampling.generate(model, rows, qids, params, pad_id=0)
    assert all(len(s) == n for o in out for s in o)
  return run


def _serve(framework: str, size: str, path: str) -> None:
  """Worker loop: reads a case name per line, runs it once, answers with wall and CPU seconds."""
  run = _runner(framework, size, path)
  print("READY", flush=True)
  for line in sys.stdin:
    t, c = time.perf_counter(), time.process_time()
    run(line.strip())
    print("RESULT " + json.dumps({"wall": time.perf_counter() - t, "cpu": time.process_time() - c}), flush=True)


class _Worker:
  """One side in its own process, driven over stdin/stdout."""

  def __init__(self, framework, size, path):
    cmd = [sys.executable, os.path.abspath(__file__), f"--_worker={framework}:{size}:{path}",
           f"--batch={FLAGS.batch}", f"--prompt_len={FLAGS.prompt_len}", f"--new_tokens={FLAGS.new_tokens}",
           f"--k={FLAGS.k}"]
    self.name = f"{framework}/{size}"
    self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    self._read("READY")

  def _read(self, tag):
    for line in self.proc.stdout:
      if line.startswith(tag):
        return line[len(tag):].strip()
    raise RuntimeError(f"{self.name} worker died (exit {self.proc.wait()})")

  def run(self, case):
    self.proc.stdin.write(case + "\n")
    self.proc.stdin.flush()
    return json.loads(self._read("RESULT"))

  def close(self):
    self.proc.stdin.close()
    self.proc.wait()


def _measure(size: str, path: str) -> dict:
  """Alternates HF and ours call by call, so shared-machine load hits both sides alike."""
  workers = {fw: _Worker(fw, size, path) for fw in ("hf", "ours")}
  try:
    res = {}
    for case in FLAGS.cases:
      cold = {fw: w.run(case)["wall"] for fw, w in workers.items()}
      runs = {fw: [] for fw in workers}
      for _ in range(FLAGS.repeats):
        for fw, w in workers.items():
          time.sleep(0.3)  # let the other side's thread pool go idle
          runs[fw].append(w.run(case))
      tokens = FLAGS.batch * FLAGS.new_tokens * (FLAGS.k if case == "sampled" else 1)
      res[case] = {"tokens": tokens, "paired_ratio_median": round(statistics.median(
          h["wall"] / o["wall"] for h, o in zip(runs["hf"], runs["ours"])), 2)}
      for fw in workers:
        walls = [r["wall"] for r in runs[fw]]
        res[case][fw] = {"cold_s": round(cold[fw], 3), "median_s": round(statistics.median(walls), 4),
                         "tok_per_s": round(tokens / statistics.median(walls), 1),
                         "tok_per_s_best": round(tokens / min(walls), 1),
                         "tok_per_s_all": [round(tokens / t, 1) for t in walls],
                         "cpu_util": round(statistics.median(r["cpu"] / r["wall"] for r in runs[fw]), 2)}
    return res
  finally:
    for w in workers.values():
      w.close()


def main(argv):
  del argv
  if FLAGS._worker:
    _serve(*FLAGS._worker.split(":", 2))
    return
  if not FLAGS.out:
    raise app.UsageError("--out is required")
  report = {"machine": {"load_before": os.getloadavg(), "cpus": os.cpu_count()},
            "setup": {"batch": FLAGS.batch, "prompt_len": FLAGS.prompt_len, "new_tokens": FLAGS.new_tokens,
                      "k": FLAGS.k, "repeats": FLAGS.repeats, "dtype": "float32", "hf_attn": "sdpa"},
            "cases": []}
  with tempfile.TemporaryDirectory() as tmp:
    for size in FLAGS.sizes.split(","):
      path = os.path.join(tmp, size)
      params = _save_model(size, path)
      res = _measure(size, path)
      for case in FLAGS.cases:
        r = res[case]
        report["cases"].append({"size": size, "params": params, "case": case, "tokens": r["tokens"],
                                "hf": r["hf"], "ours": r["ours"],
                                "ratio": round(r["ours"]["tok_per_s"] / r["hf"]["tok_per_s"], 2),
                                "ratio_best": round(r["ours"]["tok_per_s_best"] / r["hf"]["tok_per_s_best"], 2),
                                "paired_ratio_median": r["paired_ratio_median"]})
  report["machine"]["load_after"] = os.getloadavg()
  common.write_json(FLAGS.out, report)
  print(f"{'size':6} {'case':8} {'HF tok/s':>10} {'ours tok/s':>11} {'ratio':>6} {'paired':>7} {'ours cold s':>12}")
  for c in report["cases"]:
    print(f"{c['size']:6} {c['case']:8} {c['hf']['tok_per_s']:>10} {c['ours']['tok_per_s']:>11} "
          f"{c['ratio']:>6} {c['paired_ratio_median']:>7} {c['ours']['cold_s']:>12}")
  print(f"load average before/after: {report['machine']['load_before']} / {report['machine']['load_after']}")


if __name__ == "__main__":
  app.run(main)
