"""Converts a HF OLMo3 checkpoint (safetensors) into our orbax checkpoint, streamed.

  python -m launch.convert --hf_dir=/path/to/Olmo-3-1025-7B --out_dir=ckpts/olmo3-7b \
      --dtype=bfloat16 --mesh=fsdp=-1
"""
from __future__ import annotations

import time

from absl import app, flags, logging

from launch import common

FLAGS = flags.DEFINE_string("hf_dir", None, "HF checkpoint dir (config.json + safetensors).", required=True)
OUT = flags.DEFINE_string("out_dir", None, "Output orbax checkpoint dir (must not exist).", required=True)
DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16"], "Param dtype to store.")
MESH = flags.DEFINE_string("mesh", "", "Mesh spec, e.g. 'fsdp=-1' or 'data=2,fsdp=2,tensor=2'.")
REVISION = flags.DEFINE_string("revision", None, "Source revision to record, e.g. stage1-step1000.")


def main(argv):
  del argv
  common.init_runtime()
  import jax
  common.quiet_orbax_logs()
  from models import checkpoint, convert, sharding
  t0 = time.perf_counter()
  if checkpoint.is_checkpoint(OUT.value):  # a rerun after a kill that came once the save was done
    meta = checkpoint.read_metadata(OUT.value)
    if (meta.get("source"), meta.get("revision"), meta.get("dtype")) == (FLAGS.value, REVISION.value, DTYPE.value):
      print(f"already converted: {OUT.value} (from {FLAGS.value}); nothing to do")
      return
  with common.user_errors():
    # Several processes hold the params as global arrays (all devices), so orbax saves them once.
    mesh = sharding.make_mesh(MESH.value) if MESH.value or jax.process_count() > 1 else None
    progress = common.Progress(0, "convert", "tensors", every_s=1.0)

    def on_tensor(i, n, key, nbytes):
      progress.total = n
      progress.update(1, f"{key} ({nbytes / 2**20:.1f} MiB)")

    model = convert.load_hf(FLAGS.value, dtype=DTYPE.value, mesh=mesh, on_tensor=on_tensor)
    load_s = time.perf_counter() - t0
    checkpoint.save(OUT.value, model, {"source": FLAGS.value, "revision": REVISION.value},
                    files=convert.side_files(FLAGS.value))  # the tokenizer travels with the weights
  summary = convert.summarize(model)
  logging.info("converted %s -> %s: %s params, %.2f GiB, load %.1fs, total %.1fs", FLAGS.value, OUT.value,
               f"{summary['params']:,}", summary["bytes"] / 2**30, load_s, time.perf_counter() - t0)
  print(f"params={summary['params']} bytes={summary['bytes']} wall_s={time.perf_counter() - t0:.2f}")


if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser())
