"""Runs untrusted, model-generated Python programs, each in a fresh and fenced-in process.

A run is a new `python -I -S` in its own session, with a wall-clock timeout, rlimits (CPU,
address space, file size, processes, open files), a private working directory and an
environment holding nothing of the evaluator's. Where the kernel allows (detected once, on
first use), it also gets namespaces: no network, its own PID space (so `kill(-1)` and
`kill(getppid())` cannot reach the evaluator), a read-only view of the filesystem whose only
writable place is a small tmpfs, no capabilities and no nested user namespaces. As root, each
run also gets a uid of its own, so process limits and signals never cross between runs.
`describe_protections()` says what this machine provides.

The namespaces are entered by the launcher, `probing.tasks.jail`, whose source runs in the fresh
interpreter (one thread, as unshare(CLONE_NEWUSER) requires) and forks an init (PID 1 of the new
PID namespace) that runs the program; the evaluator itself never forks from Python, so thread
pools are safe.
"""
from __future__ import annotations

import ast
import concurrent.futures
import dataclasses
import functools
import inspect
import json
import marshal
import os
import queue
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from typing import Sequence

from probing.tasks import jail

# uids given to runs when the evaluator is root: no account has them; one per concurrent run.
_FIRST_RUN_UID = 2_146_435_072  # 2**31 - 2**20
_RUN_UIDS = 4096
_LAUNCHER_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
_GRACE_SECONDS = 5.0  # the launcher enforces the timeout; this backstop only covers its failure


@dataclasses.dataclass(frozen=True)
class Limits:
  """Resource limits of one run."""
  cpu_seconds: float | None = None  # None: the wall-clock timeout
  memory_bytes: int = 1 << 30  # address space
  file_bytes: int = 8 << 20  # any one file the program writes, stdout and stderr included
  disk_bytes: int = 64 << 20  # the private tmpfs working directory, where there is one
  processes: int = 64  # processes and threads
  open_files: int = 64
  tail_bytes: int = 4096  # how much of stdout and stderr a result keeps


@dataclasses.dataclass(frozen=True)
class ExecResult:
  """Outcome of one run; `status` is passed|failed|timeout|killed|output_limit|error."""
  passed: bool
  status: str
  returncode: int | None  # the program's exit code; -N when signal N ended it
  stdout: str  # the last `Limits.tail_bytes` of each stream
  stderr: str
  wall_seconds: float


@dataclasses.dataclass(frozen=True)
class _Mode:
  name: str
  userns: bool  # the launcher enters a user namespace (needed to get the others as non-root)
  own_uid: bool  # root only: run the program under a uid of its own

_PROBE = r"""
import ctypes, json, os, re, socket
r = {"ppid": os.getppid(), "env": sorted(os.environ)}
try:
  r["ifaces"] = sorted(name for _, name in socket.if_nameindex())
except OSError:
  r["ifaces"] = None
r["root_ro"] = bool(os.statvfs("/").f_flag & os.ST_RDONLY)
try:
  with open("probe.txt", "w") as f:
    f.write("x")
  r["cwd_writable"] = True
except OSError:
  r["cwd_writable"] = False
kuid, r["userns"] = os.getuid(), False
with open("/proc/self/uid_map") as f:
  for line in f:
    inner, outer, n = map(int, line.split())
    r["userns"] = r["userns"] or (inner, outer, n) != (0, 0, 4294967295)
    if inner <= os.getuid() < inner + n:
      kuid = outer + os.getuid() - inner
r["kuid"] = kuid
with open("/proc/self/status") as f:
  r["cap_eff"] = int(re.search(r"CapEff:\s*(\w+)", f.read()).group(1), 16)
r["nested_userns_blocked"] = ctypes.CDLL(None, use_errno=True).unshare(0x10000000) != 0
print(json.dumps(r))
"""
_KEY_PROTECTIONS = ("pid_namespace", "separate_uid", "network_namespace", "readonly_filesystem",
                    "private_tmpfs_workdir", "process_limit", "no_capabilities",
                    "no_nested_userns")

_setup_lock = threading.Lock()
_setup: tuple[_Mode, dict] | None = None


# Free uids for runs under root; a run takes one and gives it back (blocking if none is free).
_run_uids: queue.SimpleQueue = queue.SimpleQueue()
for _uid in range(_FIRST_RUN_UID, _FIRST_RUN_UID + _RUN_UIDS):
  _run_uids.put(_uid)
del _uid


@functools.cache
def _python() -> str:
  """The base interpreter: the program runs with -I -S, so a venv adds nothing."""
  return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


@functools.cache
def _expose(python: str) -> list[list[str]]:
  """[[hidden dir, interpreter prefix]] when a dir others cannot enter holds the interpreter."""
  prefix = os.path.realpath(sys.base_prefix)
  if os.path.commonpath([prefix, python]) != prefix:
    return []
  path = "/"
  for part in prefix.strip("/").split("/"):
    path = os.path.join(path, part)
    if not os.stat(path).st_mode & stat.S_IXOTH:
      return [[path, prefix]]
  return []


@functools.cache
def _source() -> str:
  """The launcher program: all of `jail`, shipped as `-c` source (its imports are cheap)."""
  return inspect.getsource(jail)


def _tail(f, n: int) -> str:
  f.seek(max(0, os.fstat(f.fileno()).st_size - n))
  return f.read().decode("utf-8", errors="replace")


def _wait(proc: subprocess.Popen, timeout: float) -> bool:
  """Waits for exit without reaping (so killpg cannot hit a reused pid); False on timeout."""
  try:
    fd = os.pidfd_open(proc.pid)
  except (AttributeError, OSError):
    try:
      proc.wait(timeout)
      return True
    except subprocess.TimeoutExpired:
      return False
  try:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000))))
  finally:
    os.close(fd)


def _read_reports(data: bytes) -> dict:
  """The launcher's report lines, merged; a garbled line (never expected) is skipped."""
  info = {}
  for line in data.decode("utf-8", errors="replace").splitlines():
    try:
      value = ast.literal_eval(line)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
      continue
    if isinstance(value, dict):
      info.update(value)
  return info


def _status(meta: dict, launcher_rc: int, backstop: bool) -> tuple[str, int | None]:
  rc = meta.get("returncode")
  if backstop or meta.get("timeout"):
    return "timeout", rc
  if rc is None:
    return ("killed" if launcher_rc < 0 else "error"), rc
  if rc == 0:
    return "passed", rc
  if rc == -signal.SIGXCPU:
    return "timeout", rc
  if rc == -signal.SIGXFSZ:
    return "output_limit", rc
  return ("killed" if rc < 0 else "failed"), rc


def _make_run_dir(root: str, source: str, uid: int | None) -> tuple[str, str]:
  """Writes the program beside an empty work dir; a run uid may read the one and owns the other."""
  work, program = os.path.join(root, "work"), os.path.join(root, "main.py")
  os.mkdir(work, 0o700)
  with open(program, "w", encoding="utf-8") as f:
    f.write(source)
  if uid is not None:
    os.chmod(root, 0o711)
    os.chmod(program, 0o644)
    os.chown(work, uid, uid)
  return work, program


def _launcher_config(work: str, program: str, timeout: float, limits: Limits, mode: _Mode,
                     uid: int | None) -> dict:
  """All the launcher needs, as plain values: marshal carries them into the fresh interpreter."""
  python = _python()
  cpu = limits.cpu_seconds if limits.cpu_seconds is not None else timeout
  return {"work": work, "program": program, "python": python, "timeout": timeout,
          "userns": mode.userns, "own_uid": uid,
          "expose": _expose(python) if uid is not None else [],
          "env": {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8"},
          "limits": {"cpu": max(1, int(cpu + 0.999)), "memory": limits.memory_bytes,
                     "file": limits.file_bytes, "disk": limits.disk_bytes,
                     "files": limits.open_files, "processes": limits.processes}}


def _run_launcher(cfg: dict, root: str, out, err, timeout: float) -> tuple[int, bool]:
  """Runs the launcher in its own session, whose leftovers die either way; (rc, exited in time)."""
  command = [cfg["python"], "-I", "-S", "-c", _source(), marshal.dumps(cfg).hex()]
  proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                          pass_fds=(cfg["meta_fd"],), env=_LAUNCHER_ENV, cwd=root,
                          start_new_session=True)
  try:
    exited = _wait(proc, timeout + _GRACE_SECONDS)
  finally:
    try:
      os.killpg(proc.pid, signal.SIGKILL)  # whatever is left in the launcher's group
    except (ProcessLookupError, PermissionError):
      pass
    proc.wait()
  return proc.returncode, exited


def _execute(source: str, timeout: float, limits: Limits, mode: _Mode) -> tuple[ExecResult, dict]:
  """One run under `mode`; returns the result and what the launcher reported."""
  root = tempfile.mkdtemp(prefix="sandbox-")
  uid = _run_uids.get() if mode.own_uid else None
  try:
    work, program = _make_run_dir(root, source, uid)
    cfg = _launcher_config(work, program, timeout, limits, mode, uid)
    # Streams and the status channel are open files with no name: nothing can write them by path.
    out, err, meta = (tempfile.TemporaryFile(dir=root) for _ in range(3))
    with out, err, meta:
      cfg["meta_fd"] = meta.fileno()
      start = time.monotonic()
      launcher_rc, exited = _run_launcher(cfg, root, out, err, timeout)
      wall = time.monotonic() - start
      meta.seek(0)
      info = _read_reports(meta.read())
      status, rc = _status(info, launcher_rc, backstop=not exited)
      result = ExecResult(passed=status == "passed", status=status, returncode=rc,
                          stdout=_tail(out, limits.tail_bytes),
                          stderr=_tail(err, limits.tail_bytes), wall_seconds=wall)
    return result, info
  finally:
    shutil.rmtree(root, ignore_errors=True)
    if uid is not None:
      _run_uids.put(uid)


def _probe(mode: _Mode) -> dict | None:
  """Runs the probe under `mode`; what it measured, or None if nothing ran."""
  try:
    result, info = _execute(_PROBE, 20.0, Limits(), mode)
  except (OSError, RuntimeError):
    return None
  if not result.passed:
    return None
  r = json.loads(result.stdout.strip().splitlines()[-1])
  launched = info.get("protections", {})
  pidns = r["ppid"] == 1
  own = r["kuid"] != os.geteuid()
  env_ok = set(r["env"]) <= {"PATH", "HOME", "TMPDIR", "LANG", "LC_CTYPE"}
  return {
      "mode": mode.name, "interpreter": _python(), "separate_process": True, "rlimits": True,
      "scrubbed_env": env_ok, "timeout_kills_all": pidns, "user_namespace": r["userns"],
      "pid_namespace": pidns, "network_namespace": r["ifaces"] == ["lo"],
      "readonly_filesystem": r["root_ro"] and r["cwd_writable"],
      "private_tmpfs_workdir": bool(launched.get("tmpfs_workdir")), "separate_uid": own,
      "process_limit": r["kuid"] != 0, "no_capabilities": r["cap_eff"] == 0,
      "no_nested_userns": r["nested_userns_blocked"],
      "signals_contained": pidns or own, "parent_env_hidden": env_ok and (pidns or own),
  }


def _score(prot: dict) -> int:
  return sum(bool(prot[k]) for k in _KEY_PROTECTIONS)


def _choose() -> tuple[_Mode, dict]:
  global _setup
  with _setup_lock:
    if _setup is None:
      if os.geteuid() == 0:
        modes = [_Mode("root: namespaces, a uid per run", userns=False, own_uid=True),
                 _Mode("root: user namespaces", userns=True, own_uid=False)]
      else:
        modes = [_Mode("user namespaces", userns=True, own_uid=False)]
      best = None
      for mode in modes:
        prot = _probe(mode)
        if prot is not None and (best is None or _score(prot) > _score(best[1])):
          best = (mode, prot)
        if best and _score(best[1]) == len(_KEY_PROTECTIONS):
          break
      if best is None:
        raise RuntimeError("the sandbox cannot run a program on this machine")
      _setup = best
    return _setup


def active_protections() -> dict[str, bool | str]:
  """Which protections work here, measured once by running a probe program in the sandbox."""
  return dict(_choose()[1])


def describe_protections() -> str:
  """One paragraph for the evaluator's log: how programs are run and what is missing."""
  prot = active_protections()
  on = [k for k, v in prot.items() if v is True]
  off = [k for k, v in prot.items() if v is False]
  return (f"Sandbox ({prot['mode']}): every program runs in a fresh `{prot['interpreter']} -I -S` "
          f"with a wall-clock timeout, rlimits and a scrubbed environment. Active: "
          f"{', '.join(on)}. Missing: {', '.join(off) or 'none'}.")


def run_program(source: str, *, timeout: float = 10.0, limits: Limits | None = None
                ) -> ExecResult:
  """Runs `source` as a Python program in the sandbox; passed means exit status 0."""
  mode, _ = _choose()
  try:
    return _execute(source, timeout, limits or Limits(), mode)[0]
  except (OSError, RuntimeError) as e:
    return ExecResult(False, "error", None, "", f"sandbox error: {e}", 0.0)


def run_programs(sources: Sequence[str], *, max_workers: int | None = None,
                 timeout: float = 10.0, limits: Limits | None = None) -> list[ExecResult]:
  """Runs many programs, at most `max_workers` (default: the CPU count) at a time, in order."""
  _choose()  # probe once, before the threads start
  workers = max_workers or os.cpu_count() or 1
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    return list(pool.map(lambda s: run_program(s, timeout=timeout, limits=limits), sources))
