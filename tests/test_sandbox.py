"""The sandbox runs programs and contains attacks; after each attack the evaluator carries on.

An attack test skips, naming what is missing, where `active_protections()` says this machine
lacks the protection it needs: it never passes silently.
"""
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from probing.tasks import sandbox

OK = "print(sum(range(5)))"
REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prot():
  return sandbox.active_protections()


def _require(prot, *keys):
  missing = [k for k in keys if not prot.get(k)]
  if missing:
    pytest.skip(f"this machine lacks {', '.join(missing)} (sandbox mode: {prot['mode']})")


@pytest.fixture
def canary():
  """A process of the test's own uid that signal attacks must not reach."""
  proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
  yield proc
  proc.kill()
  proc.wait()


def _attack(source, timeout=3.0, **kw):
  """Runs an attack, then checks that a normal program still passes; returns the attack's result."""
  result = sandbox.run_program(textwrap.dedent(source), timeout=timeout, **kw)
  after = sandbox.run_program(OK, timeout=10)
  assert after.passed and after.stdout == "10\n", after
  assert not result.passed, result
  return result


def test_runs_a_program():
  r = sandbox.run_program(OK)
  assert (r.passed, r.status, r.returncode, r.stdout, r.stderr) == (True, "passed", 0, "10\n", "")
  assert 0 < r.wall_seconds < 10


@pytest.mark.parametrize("source, rc, needle", [
    ("assert 1 + 1 == 3", 1, "AssertionError"),
    ("def f(:\n  pass", 1, "SyntaxError"),
    ("raise SystemExit(3)", 3, ""),
    ("import numpy_that_does_not_exist", 1, "ModuleNotFoundError"),
])
def test_failures_are_reported(source, rc, needle):
  r = sandbox.run_program(source)
  assert (r.passed, r.status, r.returncode) == (False, "failed", rc)
  assert needle in r.stderr


def test_run_programs_keeps_order():
  results = sandbox.run_programs([f"raise SystemExit({i % 3})" for i in range(7)], max_workers=3)
  assert [r.returncode for r in results] == [i % 3 for i in range(7)]
  assert [r.passed for r in results] == [i % 3 == 0 for i in range(7)]


def test_protections_are_reported(prot):
  assert prot["separate_process"] and prot["rlimits"] and prot["scrubbed_env"]
  text = sandbox.describe_protections()
  assert prot["mode"] in text and "\n" not in text
  assert all(k in text for k, v in prot.items() if isinstance(v, bool))


def test_program_has_its_own_writable_dir():
  r = sandbox.run_program("""
import os, tempfile
open("out.txt", "w").write("x" * 1000)
with tempfile.NamedTemporaryFile() as f:
  f.write(b"y")
print(os.path.getsize("out.txt"))
""")
  assert r.passed and r.stdout == "1000\n", r


@pytest.mark.parametrize("source", ["while True: pass", "import time; time.sleep(60)"])
def test_infinite_loop_times_out(source):
  r = _attack(source, timeout=1.5)
  assert r.status == "timeout" and r.wall_seconds < 6, r


def test_fork_bomb(prot):
  _require(prot, "process_limit", "timeout_kills_all")
  r = _attack("""
import os
while True:
  try:
    os.fork()
  except OSError:
    pass
""", timeout=2.0)
  assert r.status == "timeout", r


@pytest.mark.parametrize("source", [
    "x = bytearray(1 << 36)",
    "x = []\nwhile True: x.append(bytearray(1 << 24))",
])
def test_memory_bomb(source):
  r = _attack(source, timeout=10.0)
  assert r.status == "failed" and "MemoryError" in r.stderr, r


def test_huge_output():
  limits = sandbox.Limits(file_bytes=1 << 20, tail_bytes=1000)
  r = _attack("import sys\nwhile True: sys.stdout.write('x' * 65536)", timeout=10.0,
              limits=limits)
  assert r.status in ("failed", "output_limit") and r.wall_seconds < 8, r
  assert len(r.stdout) <= 1000 and len(r.stderr) <= 1000


def test_disk_filling(prot):
  _require(prot, "private_tmpfs_workdir")
  r = _attack("""
i = 0
while True:
  open(f"f{i}", "wb").write(b"x" * (1 << 20))
  i += 1
""", timeout=10.0)
  assert "No space left" in r.stderr, r


def test_cannot_write_outside_its_dir(prot, tmp_path):
  _require(prot, "readonly_filesystem")
  victim = tmp_path / "victim.txt"
  victim.write_text("original")
  _attack(f"""
open({str(victim)!r}, "w").write("overwritten")
open({str(tmp_path / 'new.txt')!r}, "w").write("created")
""")
  _attack(f"open({str(tmp_path / 'new.txt')!r}, 'w').write('created')")
  assert victim.read_text() == "original"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["victim.txt"]


def test_cannot_regain_privileges(prot):
  _require(prot, "no_capabilities", "no_nested_userns", "readonly_filesystem")
  r = _attack("""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
nested = libc.unshare(0x10000000 | 0x20000) == 0  # CLONE_NEWUSER | CLONE_NEWNS
remount = libc.mount(None, b"/", None, 32 | 4096, None) == 0  # MS_REMOUNT | MS_BIND, rw
print(nested, remount)
assert nested or remount
""")
  assert r.stdout == "False False\n", r


def test_cannot_connect_to_the_network(prot):
  _require(prot, "network_namespace")
  with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port = server.getsockname()[1]
    r = _attack(f"""
import socket
socket.create_connection(("127.0.0.1", {port}), timeout=2).sendall(b"hello")
""")
    assert "OSError" in r.stderr or "Error" in r.stderr, r
    with pytest.raises(socket.timeout):
      server.accept()


def test_environment_is_scrubbed(monkeypatch):
  secret = f"s3cret-{uuid.uuid4().hex}"
  monkeypatch.setenv("SANDBOX_TEST_SECRET", secret)
  r = sandbox.run_program("import os, json; print(json.dumps(dict(os.environ)))")
  assert r.passed, r
  assert secret not in r.stdout
  assert set(json.loads(r.stdout)) <= {"PATH", "HOME", "TMPDIR", "LANG"}


def test_cannot_read_the_parent_environment(prot, monkeypatch):
  _require(prot, "parent_env_hidden")
  secret = f"s3cret-{uuid.uuid4().hex}"
  monkeypatch.setenv("SANDBOX_TEST_SECRET", secret)
  r = _attack(f"""
import glob, os
found = [k for k, v in os.environ.items() if v == {secret!r}]
for path in glob.glob("/proc/*/environ") + ["/proc/%d/environ" % os.getppid()]:
  try:
    if {secret!r}.encode() in open(path, "rb").read():
      found.append(path)
  except OSError:
    pass
print(found)
assert found
""")
  assert r.stdout.strip() == "[]", r


def test_killing_the_parent_is_contained(prot, canary):
  _require(prot, "signals_contained")
  r = _attack("""
import os, time
parent = os.getppid()
os.kill(parent, 9)
time.sleep(0.5)
assert os.getppid() != parent  # reparented: the parent died
""")
  assert r.status in ("failed", "killed"), r
  assert canary.poll() is None


def test_killing_every_process_is_contained(prot, canary):
  _require(prot, "signals_contained")
  _attack("import os, time\nos.kill(-1, 9)\ntime.sleep(0.5)")
  _attack("import os\nos.kill(0, 9)")  # its process group
  assert canary.poll() is None


def test_no_process_outlives_its_run(prot):
  _require(prot, "timeout_kills_all")
  r = sandbox.run_program("""
import os, sys, time
print(sys.argv[0], flush=True)
if os.fork() == 0:
  os.setsid()  # leave the process group
  time.sleep(60)
""")
  marker = r.stdout.strip().encode()
  time.sleep(0.2)
  alive = []
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      if marker in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes():
        alive.append(pid)
    except OSError:
      pass
  assert marker and alive == []


def _python_for(uid):
  """An interpreter that `uid` may run (the venv's may live in a private home)."""
  for cand in (sys.executable, os.path.realpath(sys.executable), shutil.which("python3"),
               "/usr/bin/python3"):
    if not cand:
      continue
    try:
      out = subprocess.run([cand, "-I", "-S", "-c", "import sys; print(sys.version_info >= (3, 9))"],
                           user=uid, group=uid, extra_groups=[], capture_output=True, text=True,
                           timeout=30, cwd="/")
    except OSError:
      continue
    if out.stdout.strip() == "True":
      return cand
  return None


def test_works_as_a_non_root_user():
  if os.geteuid() != 0:
    pytest.skip("the tests already run as a non-root user: every test above covers it")
  nobody = 65534
  python = _python_for(nobody)
  if python is None:
    pytest.skip("no Python interpreter here that the nobody user may run")
  script = textwrap.dedent(f"""
  import json, sys
  sys.path.insert(0, {str(REPO)!r})
  from probing.tasks import sandbox
  prot = sandbox.active_protections()
  runs = [sandbox.run_program("print(6 * 7)"), sandbox.run_program("assert False"),
          sandbox.run_program("while True: pass", timeout=1.0)]
  if prot["signals_contained"]:
    runs.append(sandbox.run_program("import os; os.kill(-1, 9); os.kill(os.getppid(), 9)"))
    runs.append(sandbox.run_program("print(6 * 7)"))
  print(json.dumps({{"prot": prot, "runs": [[r.status, r.stdout] for r in runs]}}))
  """)
  out = subprocess.run([python, "-I", "-c", script], user=nobody, group=nobody, extra_groups=[],
                       env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, cwd="/",
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  got = json.loads(out.stdout.strip().splitlines()[-1])
  runs = got["runs"]
  assert runs[:3] == [["passed", "42\n"], ["failed", ""], ["timeout", ""]]
  if got["prot"]["signals_contained"]:
    assert runs[3][0] != "passed" and runs[4] == ["passed", "42\n"]
  assert not got["prot"]["separate_uid"]  # non-root: no uid of its own, namespaces instead
