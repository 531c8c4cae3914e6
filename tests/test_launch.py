"""Launch-script plumbing that needs no model: the demo's --preset shorthand."""
import pytest

from launch import demo


def test_preset_is_shorthand_for_the_config_variant():
  smoke = "--config=configs/experiments/demo.py:smoke"
  assert demo.preset_as_config(["demo", "--preset=smoke", "--workdir=w"]) == ["demo", smoke, "--workdir=w"]
  assert demo.preset_as_config(["demo", "--preset", "smoke", "--config.seed=1"]) == ["demo", smoke, "--config.seed=1"]
  assert demo.preset_as_config(["demo", "--preset=default"]) == ["demo", "--config=configs/experiments/demo.py"]
  assert demo.preset_as_config(["demo", "--workdir=w"]) == ["demo", "--workdir=w"]
  with pytest.raises(SystemExit, match="either --preset or --config"):
    demo.preset_as_config(["demo", "--preset=smoke", "--config=configs/experiments/olmo3_7b.py"])
  with pytest.raises(SystemExit, match="expected 'default' or 'smoke'"):
    demo.preset_as_config(["demo", "--preset=big"])


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
