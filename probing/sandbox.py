"""Runs untrusted, model-generated Python programs, each in a fresh and fenced-in process.

A run is a new `python -I -S` in its own session, with a wall-clock timeout, rlimits (CPU,
address space, file size, processes, open files), a private working directory and an
environment holding nothing of the evaluator's. Where the kernel allows (detected once, on
first use), it also gets namespaces: no network, its own PID space (so `kill(-1)` and
`kill(getppid())` cannot reach the evaluator), a read-only view of the filesystem whose only
writable place is a small tmpfs, no capabilities and no nested user namespaces. As root, each
run also gets a uid of its own, so process limits and signals never cross between runs.
`describe_protections()` says what this machine provides.

The namespaces are entered by `_launcher`, which runs in the fresh interpreter (one thread, as
unshare(CLONE_NEWUSER) requires) and forks an init (PID 1 of the new PID namespace) that runs
the program; the evaluator itself never forks from Python, so thread pools are safe.
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
import textwrap
import threading
import time
from typing import Sequence

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


# ---------------------------------------------------------------- inside the fresh interpreter


def _launcher(cfg_hex):
  """Enters namespaces, sets up mounts, forks init, which runs the program.

  Only cheap imports (no json, re, enum or signal): they would double the start-up time.
  """
  import ctypes
  import marshal
  import os
  import resource
  import select

  cfg = marshal.loads(bytes.fromhex(cfg_hex))
  sigkill = 9
  meta, work, own_uid = cfg["meta_fd"], cfg["work"], cfg["own_uid"]
  libc = ctypes.CDLL(None, use_errno=True)
  newns, newuts, newipc, newuser, newpid, newnet = (
      0x20000, 0x4000000, 0x8000000, 0x10000000, 0x20000000, 0x40000000)
  ms_nosuid, ms_nodev, ms_noexec, ms_bind, ms_rec, ms_private = 2, 4, 8, 4096, 16384, 1 << 18
  pr_set_pdeathsig, pr_set_dumpable, pr_set_securebits, pr_set_no_new_privs = 1, 4, 28, 38
  # SECBIT_NOROOT(+LOCKED), KEEP_CAPS_LOCKED, NO_CAP_AMBIENT_RAISE(+LOCKED): exec grants no caps.
  securebits = 0x1 | 0x2 | 0x20 | 0x40 | 0x80

  def report(**kw):
    os.write(meta, (repr(kw) + "\n").encode())  # plain literals, read with ast.literal_eval

  def check(ret, what):
    if ret != 0:
      err = ctypes.get_errno()
      raise OSError(err, f"{what}: {os.strerror(err)}")

  def mount(src, target, fstype, flags, data=None):
    enc = lambda s: s.encode() if s is not None else None
    check(libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
          f"mount {target}")

  def write(path, text):
    with open(path, "w") as f:
      f.write(text)

  def map_self(uid, gid):
    """After unshare(CLONE_NEWUSER): be root of it, mapped to our old ids, and allow no nesting."""
    write("/proc/self/setgroups", "deny")
    write("/proc/self/uid_map", f"0 {uid} 1")
    write("/proc/self/gid_map", f"0 {gid} 1")
    try:
      write("/proc/sys/user/max_user_namespaces", "0")
    except OSError:
      pass

  def readonly_root():
    class MountAttr(ctypes.Structure):
      _fields_ = [(n, ctypes.c_uint64) for n in ("set", "clr", "propagation", "userns_fd")]
    attr = MountAttr(1, 0, 0, 0)  # MOUNT_ATTR_RDONLY, on every mount below / (AT_RECURSIVE)
    check(libc.syscall(442, -100, b"/", 0x8000, ctypes.byref(attr), ctypes.sizeof(attr)),
          "mount_setattr")

  def exec_program():
    os.closerange(3, 1 << 16)
    lim = cfg["limits"]
    for res, val in ((resource.RLIMIT_CPU, lim["cpu"]), (resource.RLIMIT_AS, lim["memory"]),
                     (resource.RLIMIT_FSIZE, lim["file"]), (resource.RLIMIT_NOFILE, lim["files"]),
                     (resource.RLIMIT_NPROC, lim["processes"]), (resource.RLIMIT_CORE, 0)):
      hard = val + 1 if res == resource.RLIMIT_CPU else val  # SIGXCPU first, then SIGKILL
      resource.setrlimit(res, (val, hard))
    if own_uid is not None:
      os.setgroups([])
      os.setgid(own_uid)
      os.setuid(own_uid)
      libc.prctl(pr_set_dumpable, 1, 0, 0, 0)  # the uid change cleared it; uid_map needs it
      if libc.unshare(newuser) == 0:  # no caps over our namespaces; none can be nested in it
        map_self(own_uid, own_uid)
    libc.prctl(pr_set_securebits, securebits, 0, 0, 0)
    libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0)
    os.chdir(work)
    os.execve(cfg["python"], [cfg["python"], "-I", "-S", cfg["program"]], cfg["env"])

  def wait_exit(pid, timeout):
    """Whether child `pid` exits within `timeout` seconds (it is left to reap)."""
    try:
      poller = select.poll()
      poller.register(os.pidfd_open(pid), select.POLLIN)  # readable once it has exited
      return bool(poller.poll(int(timeout * 1000)))
    except (AttributeError, OSError):  # no pidfd (Linux < 5.3): poll every 10 ms
      for _ in range(int(timeout * 100) + 1):
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
          return True
        select.select([], [], [], 0.01)
      return False

  def init(ready):
    """PID 1 of the new PID namespace: runs the program, reaps, reports its exit status."""
    libc.prctl(pr_set_pdeathsig, sigkill, 0, 0, 0)
    if select.select([ready], [], [], 0)[0]:  # the launcher is already gone
      return
    if ns and os.getpid() == 1:  # PID 1: surely in a new PID namespace
      os.setsid()  # so the program's kill(0, ...) reaches neither the launcher nor its group
      try:
        mount("proc", "/proc", "proc", ms_nosuid | ms_nodev | ms_noexec)
      except OSError as e:
        report(warning=str(e))
    prog = os.fork()
    if prog == 0:
      try:
        exec_program()
      except BaseException as e:  # pylint: disable=broad-except
        os.write(2, f"sandbox: cannot start the program: {e!r}\n".encode())
      os._exit(126)
    while True:
      pid, status = os.waitpid(-1, 0)
      if pid == prog:
        report(returncode=os.waitstatus_to_exitcode(status))
        return

  def namespaces():
    return [os.stat(f"/proc/self/ns/{n}").st_ino for n in ("mnt", "net", "ipc", "uts")]

  os.umask(0o022)
  uid, gid = os.geteuid(), os.getegid()
  flags = newns | newuts | newipc | newpid | newnet
  before = namespaces()
  userns = bool(cfg["userns"]) and libc.unshare(flags | newuser) == 0
  if userns:
    map_self(uid, gid)
  ns = userns or libc.unshare(flags) == 0
  # Never mount anything unless verifiably in new namespaces: in the evaluator's own mount
  # namespace these mounts would hide or freeze the host's files.
  ns = ns and all(x != y for x, y in zip(before, namespaces()))
  readonly = tmpfs = False
  if ns:
    try:
      mount(None, "/", None, ms_rec | ms_private)
      for top, prefix in cfg["expose"]:  # a private dir hides the interpreter from the run's uid
        fd = os.open(prefix, os.O_PATH | os.O_DIRECTORY)
        mount("tmpfs", top, "tmpfs", ms_nosuid | ms_nodev, "size=64k,mode=0755")
        os.makedirs(prefix, exist_ok=True)
        mount(f"/proc/self/fd/{fd}", prefix, None, ms_bind | ms_rec)
        os.close(fd)
      readonly_root()
      readonly = True
    except OSError as e:
      report(warning=str(e))
    try:
      opts = f"size={cfg['limits']['disk']},nr_inodes=4096,mode=0700"
      if own_uid is not None:
        opts += f",uid={own_uid},gid={own_uid}"
      mount("tmpfs", work, "tmpfs", ms_nosuid | ms_nodev, opts)
      tmpfs = True
    except OSError as e:
      report(warning=str(e))
  report(protections={"namespaces": ns, "launcher_userns": userns, "readonly_root": readonly,
                      "tmpfs_workdir": tmpfs})
  ready, alive = os.pipe()
  child = os.fork()
  if child == 0:
    try:
      os.close(alive)
      init(ready)
    finally:
      os._exit(0)
  os.close(ready)

  if not wait_exit(child, cfg["timeout"]):
    report(timeout=True)
    os.kill(child, sigkill)  # init's death takes its whole PID namespace with it
  os.waitpid(child, 0)
  os._exit(0)


# ---------------------------------------------------------------- in the evaluator

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
  return textwrap.dedent(inspect.getsource(_launcher)) + "\nimport sys\n_launcher(sys.argv[1])\n"


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


def _execute(source: str, timeout: float, limits: Limits, mode: _Mode) -> tuple[ExecResult, dict]:
  """One run under `mode`; returns the result and what the launcher reported."""
  root = tempfile.mkdtemp(prefix="sandbox-")
  uid = _run_uids.get() if mode.own_uid else None
  try:
    work, program = os.path.join(root, "work"), os.path.join(root, "main.py")
    os.mkdir(work, 0o700)
    with open(program, "w", encoding="utf-8") as f:
      f.write(source)
    if uid is not None:
      os.chmod(root, 0o711)
      os.chmod(program, 0o644)
      os.chown(work, uid, uid)
    python = _python()
    cpu = limits.cpu_seconds if limits.cpu_seconds is not None else timeout
    cfg = {"work": work, "program": program, "python": python, "timeout": timeout,
           "userns": mode.userns, "own_uid": uid,
           "expose": _expose(python) if uid is not None else [],
           "env": {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8"},
           "limits": {"cpu": max(1, int(cpu + 0.999)), "memory": limits.memory_bytes,
                      "file": limits.file_bytes, "disk": limits.disk_bytes,
                      "files": limits.open_files, "processes": limits.processes}}
    # Streams and the status channel are open files with no name: nothing can write them by path.
    out, err, meta = (tempfile.TemporaryFile(dir=root) for _ in range(3))
    with out, err, meta:
      cfg["meta_fd"] = meta.fileno()
      start = time.monotonic()
      command = [python, "-I", "-S", "-c", _source(), marshal.dumps(cfg).hex()]
      proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                              pass_fds=(meta.fileno(),), env=_LAUNCHER_ENV, cwd=root,
                              start_new_session=True)
      try:
        exited = _wait(proc, timeout + _GRACE_SECONDS)
      finally:
        try:
          os.killpg(proc.pid, signal.SIGKILL)  # whatever is left in the launcher's group
        except (ProcessLookupError, PermissionError):
          pass
        proc.wait()
      wall = time.monotonic() - start
      meta.seek(0)
      info = _read_reports(meta.read())
      status, rc = _status(info, proc.returncode, backstop=not exited)
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
