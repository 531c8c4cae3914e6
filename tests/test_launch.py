"""Launch-script plumbing: config files as given, discoverable fields, one-line user errors."""
import os
import subprocess
import sys

import pytest

from configs import fields
from launch import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHERS_WITH_CONFIG = {"label": "configs/experiments/label.py", "extract": "configs/probes/linear.py",
                         "train_probes": "configs/probes/hybrid.py", "predict": "configs/probes/mlp.py",
                         "demo": "configs/experiments/olmo3_7b.py", "pretrain": "configs/experiments/testbed.py"}


def _launch(*args, timeout=120):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, env=env,
                        timeout=timeout)


@pytest.mark.parametrize("spec", sorted(set(LAUNCHERS_WITH_CONFIG.values()) | {
    "configs/experiments/demo.py:smoke", "configs/experiments/label.py:real", "configs/probes/submodel.py:testbed"}))
def test_every_config_field_has_a_default_and_a_meaning(spec):
  lines = fields.config_help(spec).splitlines()[1:]
  assert len(lines) >= 10
  assert [line for line in lines if "  # " not in line] == []


def test_unknown_fields_name_the_nearest_one():
  probe, label = fields.load_config("configs/probes/linear.py"), fields.load_config("configs/experiments/label.py")
  assert fields.unknown_field(probe, "data.checkpoint") is None
  assert fields.unknown_field(probe, "tokenizer") == ("--config.tokenizer: no such config field; did you mean "
                                                      "--config.data.tokenizer?")
  assert "did you mean --config.data.checkpoint?" in fields.unknown_field(probe, "data.chekpoint")
  assert "did you mean --config.data.limit?" in fields.unknown_field(label, "limit")
  assert "did you mean --config.out?" in fields.unknown_field(label, "out_dir")
  # The same concept has the same key in every launcher.
  demo = fields.load_config("configs/experiments/olmo3_7b.py")
  for key in ("data.tasks", "data.limit", "data.tokenizer", "data.stage_lengths"):
    for config in (probe, label, demo):
      assert fields.unknown_field(config, key) is None, key
  assert fields.unknown_field(probe, "data.checkpoint") is None and fields.unknown_field(label, "data.checkpoint") is None
  with pytest.raises(ValueError, match="no such config file 'configs/nope.py'"):
    fields.load_config("configs/nope.py")
  with pytest.raises(ValueError, match="olmo3_7b.py:smoke: .*has no preset 'smoke'"):
    fields.load_config("configs/experiments/olmo3_7b.py:smoke")


def test_the_given_config_file_is_the_config_that_runs():
  """The 7B experiment is not silently the testbed's: its dtype, mesh, tasks, probe preset and k."""
  from absl import flags
  from launch import demo
  parse = common.flags_parser(demo.DEFAULT_CONFIG)
  saved = sys.argv
  argv = ["demo", "--config=configs/experiments/olmo3_7b.py", "--config.labels.num_samples=4"]
  try:
    sys.argv = argv  # config_flags reads overrides from sys.argv
    parse(argv)
    c = demo.CONFIG.value
  finally:
    sys.argv = saved
    flags.FLAGS.unparse_flags()
  assert (c.preset, c.dtype, c.mesh, c.labels.num_samples) == ("olmo3_7b", "bfloat16", "fsdp=-1", 4)
  assert c.data.tasks.startswith("gsm8k,") and c.families.linear.extract.layers == (8, 12, 16, 20, 24, 28, 32)


def test_user_errors_are_one_line_and_help_lists_fields(tmp_path):
  proc = _launch("launch.extract", "--config=configs/probes/linear.py", "--config.tokenizer=t.json",
                 f"--config.data.features={tmp_path}")
  assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
      "error: --config.tokenizer: no such config field; did you mean --config.data.tokenizer?"]
  assert not os.listdir(tmp_path)
  proc = _launch("launch.train_probes", "--help")
  assert proc.returncode == 0 and "--config_help" in proc.stdout
  assert "data.labels = None  # label JSONL file(s)" not in proc.stdout  # no --config given: no fields
  proc = _launch("launch.label", "--config_help")
  assert proc.returncode == 0
  assert "  data.checkpoint = None  # our orbax checkpoint dir (launch.convert) or a HF dir" in proc.stdout


def test_two_real_processes_initialize_from_flags():
  """`--coordinator_address/--num_processes/--process_id` start a real 2-process JAX runtime on
  localhost (each process logs its index of 2), and a missing setting fails in one line."""
  import os
  import socket
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  procs = [subprocess.Popen([sys.executable, "-m", "launch.predict", f"--coordinator_address=127.0.0.1:{port}",
                             "--num_processes=2", f"--process_id={i}", "--compilation_cache_dir="], cwd=root,
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
  outs = [p.communicate(timeout=180) for p in procs]
  for i, (p, (_, err)) in enumerate(zip(procs, outs)):
    assert f"process {i}/2, 2 local / 4 global devices (cpu); compilation cache off" in err, err[-3000:]
    assert p.returncode == 1 and err.strip().splitlines()[-1].startswith("error: pass --config="), err[-3000:]
  proc = subprocess.run([sys.executable, "-m", "launch.predict", "--num_processes=2"], cwd=root, env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1 and "also set --coordinator_address, --process_id" in proc.stderr.strip().splitlines()[-1]
