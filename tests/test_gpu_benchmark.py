"""benchmarks/: gpu.py runs end to end (its `--config=small` is the 7B script's code on a tiny model, CPU);
every script imports."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_benchmark_small_config_runs(tmp_path):
  out = tmp_path / "gpu.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--config=small", f"--out={out}"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(out.read_text())
  assert [r["length"] for r in report["prefill"]] == [64, 32] and all(r["tok_per_s"] > 0 for r in report["prefill"])
  probe = report["probe"]
  assert probe["questions"] == 8 and probe["shared_prefix_tokens"] > 500  # the 8-shot prefix ran once
  assert set(probe["heads"]) == {"linear", "mlp", "attention", "hybrid"}
  (sampler,) = report["sampler"]  # its rows stopped where the workload says, or the script would fail
  assert sampler["rows"] == 8 and sampler["useful_tok_per_s"] > 0 and sampler["shared_prefix_tokens"] > 500
  md = (tmp_path / "gpu.md").read_text()
  assert md.startswith("## OLMo3-7B shape on a GPU (small)") and "useful tok/s" in md


def test_every_benchmark_script_imports():
  """The benchmark scripts are not run by the suite (they time things), but none may rot at import:
  each is imported as `python -m benchmarks.X` would, from the repository root."""
  names = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "benchmarks"))
                 if f.endswith(".py") and f != "__init__.py")
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  procs = {n: subprocess.Popen([sys.executable, "-c", f"import benchmarks.{n}"], cwd=ROOT, env=env,  # absl flags:
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # one process each
           for n in names}
  failed = {n: p.communicate(timeout=300)[1][-2000:] for n, p in procs.items()}
  assert not {n: e for n, e in failed.items() if procs[n].returncode}, failed
