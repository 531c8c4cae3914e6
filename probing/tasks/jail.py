"""The launcher: the program that builds one run's jail and starts the run inside it.

`sandbox` does not import this file into the run: it ships the file's whole source to a fresh
`python -I -S -c SOURCE CFG_HEX`, whose `__main__` guard below calls `launch(CFG_HEX)`. So this
file must stay self-contained (the standard library only, nothing from this package) and
single-threaded (unshare(CLONE_NEWUSER) requires one thread). Only cheap imports (no json, re,
enum or signal): they would double the start-up time.

`launch` enters new namespaces, fences the filesystem, reports what it got on the status channel
(`cfg["meta_fd"]`, one Python literal a line) and forks an init (PID 1 of the new PID
namespace) that runs the program, reaps and reports its exit status; `launch` itself enforces
the timeout by killing init, which takes the whole PID namespace with it.
"""
import ctypes
import marshal
import os
import resource
import select

SIGKILL = 9
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x4000000, 0x8000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS = 1, 4, 28, 38
# SECBIT_NOROOT(+LOCKED), KEEP_CAPS_LOCKED, NO_CAP_AMBIENT_RAISE(+LOCKED): exec grants no caps.
SECUREBITS = 0x1 | 0x2 | 0x20 | 0x40 | 0x80
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 1

_libc = ctypes.CDLL(None, use_errno=True)


class _MountAttr(ctypes.Structure):
  _fields_ = [(n, ctypes.c_uint64) for n in ("set", "clr", "propagation", "userns_fd")]


# ---------------------------------------------------------------- small tools


def report(meta, **kw):
  """One line on the status channel: plain literals, so the evaluator can ast.literal_eval it."""
  os.write(meta, (repr(kw) + "\n").encode())


def check(ret, what):
  """Raises OSError when a libc call failed: ctypes itself only returns -1."""
  if ret != 0:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(src, target, fstype, flags, data=None):
  """mount(2), which the os module lacks."""
  enc = lambda s: s.encode() if s is not None else None
  check(_libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
        f"mount {target}")


def write(path, text):
  """Writes a /proc control file in one go."""
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


# ---------------------------------------------------------------- the jail, in the launcher


def namespace_ids():
  """Our mount, net, IPC and UTS namespaces' inodes: they change only where unshare worked."""
  return [os.stat(f"/proc/self/ns/{n}").st_ino for n in ("mnt", "net", "ipc", "uts")]


def enter_namespaces(want_userns):
  """Unshares mount, UTS, IPC, PID and net (in a new user namespace if wanted); (ns, userns)."""
  uid, gid = os.geteuid(), os.getegid()
  flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET
  before = namespace_ids()
  userns = bool(want_userns) and _libc.unshare(flags | CLONE_NEWUSER) == 0
  if userns:
    map_self(uid, gid)
  ns = userns or _libc.unshare(flags) == 0
  # Never mount anything unless verifiably in new namespaces: in the evaluator's own mount
  # namespace these mounts would hide or freeze the host's files.
  ns = ns and all(x != y for x, y in zip(before, namespace_ids()))
  return ns, userns


def expose_interpreter(expose):
  """Bind-mounts each interpreter prefix onto a tmpfs on its private top dir, for the run uid."""
  for top, prefix in expose:
    fd = os.open(prefix, os.O_PATH | os.O_DIRECTORY)
    mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
    os.makedirs(prefix, exist_ok=True)
    mount(f"/proc/self/fd/{fd}", prefix, None, MS_BIND | MS_REC)
    os.close(fd)


def readonly_root():
  """MOUNT_ATTR_RDONLY on every mount below / (mount_setattr, AT_RECURSIVE): nothing is writable."""
  attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
  check(_libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr),
                      ctypes.sizeof(attr)), "mount_setattr")


def mount_workdir(work, disk, own_uid):
  """A size-capped tmpfs on the work dir: the run's only writable place, gone with its namespace."""
  opts = f"size={disk},nr_inodes=4096,mode=0700"
  if own_uid is not None:
    opts += f",uid={own_uid},gid={own_uid}"
  mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV, opts)


def fence_filesystem(cfg, meta):
  """Read-only root, tmpfs work dir; (readonly, tmpfs), each failure reported as a warning."""
  readonly = tmpfs = False
  try:
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    expose_interpreter(cfg["expose"])  # a private dir hides the interpreter from the run's uid
    readonly_root()
    readonly = True
  except OSError as e:
    report(meta, warning=str(e))
  try:
    mount_workdir(cfg["work"], cfg["limits"]["disk"], cfg["own_uid"])
    tmpfs = True
  except OSError as e:
    report(meta, warning=str(e))
  return readonly, tmpfs


# ---------------------------------------------------------------- the program's process


def set_rlimits(lim):
  """Caps CPU, address space, file size, open files and processes; no core dumps."""
  for res, val in ((resource.RLIMIT_CPU, lim["cpu"]), (resource.RLIMIT_AS, lim["memory"]),
                   (resource.RLIMIT_FSIZE, lim["file"]), (resource.RLIMIT_NOFILE, lim["files"]),
                   (resource.RLIMIT_NPROC, lim["processes"]), (resource.RLIMIT_CORE, 0)):
    hard = val + 1 if res == resource.RLIMIT_CPU else val  # SIGXCPU first, then SIGKILL
    resource.setrlimit(res, (val, hard))


def drop_privileges(own_uid):
  """Takes the run's own uid (as root), then makes sure no exec can grant caps or privileges."""
  if own_uid is not None:
    os.setgroups([])
    os.setgid(own_uid)
    os.setuid(own_uid)
    _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # the uid change cleared it; uid_map needs it
    if _libc.unshare(CLONE_NEWUSER) == 0:  # no caps over our namespaces; none can be nested in it
      map_self(own_uid, own_uid)
  _libc.prctl(PR_SET_SECUREBITS, SECUREBITS, 0, 0, 0)
  _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def exec_program(cfg):
  """Becomes the program: no inherited fds, limits set, privileges dropped, in the work dir."""
  os.closerange(3, 1 << 16)
  set_rlimits(cfg["limits"])
  drop_privileges(cfg["own_uid"])
  os.chdir(cfg["work"])
  os.execve(cfg["python"], [cfg["python"], "-I", "-S", cfg["program"]], cfg["env"])


# ---------------------------------------------------------------- init and its supervisor


def take_pid_namespace(meta):
  """As PID 1: a session of its own and a /proc that shows the new PID namespace."""
  os.setsid()  # so the program's kill(0, ...) reaches neither the launcher nor its group
  try:
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
  except OSError as e:
    report(meta, warning=str(e))


def run_and_reap(cfg):
  """Forks the program, reaps every orphan handed to init until it exits; its exit code."""
  prog = os.fork()
  if prog == 0:
    try:
      exec_program(cfg)
    except BaseException as e:  # pylint: disable=broad-except
      os.write(2, f"sandbox: cannot start the program: {e!r}\n".encode())
    os._exit(126)
  while True:
    pid, status = os.waitpid(-1, 0)
    if pid == prog:
      return os.waitstatus_to_exitcode(status)


def init(ready, cfg, ns):
  """PID 1 of the new PID namespace: runs the program, reaps, reports its exit status."""
  meta = cfg["meta_fd"]
  _libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
  if select.select([ready], [], [], 0)[0]:  # the launcher is already gone
    return
  if ns and os.getpid() == 1:  # PID 1: surely in a new PID namespace
    take_pid_namespace(meta)
  report(meta, returncode=run_and_reap(cfg))


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


def supervise(cfg, ns):
  """Forks init and, past the timeout, kills it: its death takes the whole PID namespace along."""
  ready, alive = os.pipe()  # init sees `ready` readable once the launcher (holding `alive`) is gone
  child = os.fork()
  if child == 0:
    try:
      os.close(alive)
      init(ready, cfg, ns)
    finally:
      os._exit(0)
  os.close(ready)
  if not wait_exit(child, cfg["timeout"]):
    report(cfg["meta_fd"], timeout=True)
    os.kill(child, SIGKILL)  # init's death takes its whole PID namespace with it
  os.waitpid(child, 0)


def launch(cfg_hex):
  """The launcher's whole life: jail itself, report the protections it got, run the program."""
  cfg = marshal.loads(bytes.fromhex(cfg_hex))
  meta = cfg["meta_fd"]
  os.umask(0o022)
  ns, userns = enter_namespaces(cfg["userns"])
  readonly, tmpfs = fence_filesystem(cfg, meta) if ns else (False, False)  # only in new namespaces
  report(meta, protections={"namespaces": ns, "launcher_userns": userns, "readonly_root": readonly,
                            "tmpfs_workdir": tmpfs})
  supervise(cfg, ns)
  os._exit(0)


if __name__ == "__main__":  # `python -I -S -c SOURCE CFG_HEX`, as `sandbox` starts it
  import sys
  launch(sys.argv[1])
