"""JAX's persistent compilation cache: `launch.predict` in a first and a second process.

Usage: python -m benchmarks.compile_cache --workdir=runs/demo [--family=linear] [--limit=N] \
           [--out=benchmarks/out/compile_cache.json]

Runs the same `launch.predict` command (the testbed checkpoint of a demo work dir: its last
`pretrain/checkpoints/step_*`, the probe `probes/<family>`, the card's tasks) twice, each in a
fresh process sharing one fresh `--compilation_cache_dir`: the first compiles and fills the cache,
the second should compile nothing. Reports per run the process's wall time, the stage times
`launch.predict` prints (extract includes compilation), and the cache's file count and bytes
after it; with `--no_cache` a third run has the cache off, for comparison. Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cache_size(path: str) -> dict:
  files = [os.path.join(d, f) for d, _, names in os.walk(path) for f in names]
  return {"files": len(files), "bytes": sum(os.path.getsize(f) for f in files)}


def predict_command(workdir: str, family: str, limit: int | None, out: str, cache: str) -> list[str]:
  ckpts = os.path.join(workdir, "pretrain", "checkpoints")
  steps = sorted(d for d in os.listdir(ckpts) if d.startswith("step_"))
  if not steps:
    raise SystemExit(f"error: no step_* checkpoint under {ckpts}; run the demo first (make demo)")
  probe = os.path.join(workdir, "probes", family)
  with open(os.path.join(probe, "probe_card.json")) as f:
    tasks = ",".join(json.load(f)["tasks"])
  cmd = [sys.executable, "-m", "launch.predict", "--config=configs/probes/linear.py:testbed",
         f"--config.probe={probe}", f"--config.data.checkpoint={os.path.join(ckpts, steps[-1])}",
         f"--config.data.tasks={tasks}", f"--config.out={out}", f"--compilation_cache_dir={cache}"]
  return cmd + ([f"--config.data.limit={limit}"] if limit else [])


def timed_run(cmd: list[str]) -> dict:
  t = time.perf_counter()
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  wall = time.perf_counter() - t
  if proc.returncode:
    raise SystemExit(f"error: {' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
  printed = json.loads(proc.stdout.strip().splitlines()[-1])
  return {"wall_s": round(wall, 3), "stage_s": {k: round(v, 3) for k, v in printed["seconds"].items()}}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="runs/demo", help="A demo work dir (make demo).")
  parser.add_argument("--family", default="linear", help="Which trained probe (probes/<family>).")
  parser.add_argument("--limit", type=int, default=None, help="Questions per task (default: all).")
  parser.add_argument("--no_cache", action="store_true", help="Also time a run with the cache off.")
  parser.add_argument("--out", default=None, help="Also write the JSON here.")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory(prefix="bench-compile-cache-") as tmp:
    cache = os.path.join(tmp, "jax_cache")
    runs = {}
    for name in ("first", "second"):
      runs[name] = timed_run(predict_command(args.workdir, args.family, args.limit, os.path.join(tmp, name), cache))
      runs[name]["cache_after"] = cache_size(cache)
    if args.no_cache:
      runs["no_cache"] = timed_run(predict_command(args.workdir, args.family, args.limit,
                                                   os.path.join(tmp, "off"), ""))
  result = {"benchmark": "compile_cache", "command": "launch.predict", "workdir": args.workdir,
            "family": args.family, "limit": args.limit, "runs": runs,
            "new_cache_files_in_second_run": runs["second"]["cache_after"]["files"]
            - runs["first"]["cache_after"]["files"],
            "second_over_first_wall": round(runs["second"]["wall_s"] / runs["first"]["wall_s"], 3),
            "machine": common.machine()}
  text = json.dumps(result, indent=1)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  main()
