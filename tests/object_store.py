"""A `gs://` object store for tests: etils.epath's own mock backend, keeping objects in a local
directory and refusing what object stores cannot do (append, read-write).

Code that bypasses epath with a plain `open("gs://...")` writes under the working directory
instead; `fake_bucket` runs in an empty one and fails the test if anything appears there.
"""
import contextlib
import os

from etils.epath import testing as epath_testing

SCHEME = "gs://"


@contextlib.contextmanager
def fake_bucket(root, monkeypatch):
  """`gs://...` paths live under `root` while the block runs."""
  root = os.fspath(root)

  def local(p):
    s = os.fspath(p)
    return os.path.join(root, s[len(SCHEME):]) if s.startswith(SCHEME) else s

  def redirect(fn, path, *args, **kwargs):
    return fn(local(path), *[local(a) if isinstance(a, (str, os.PathLike)) else a for a in args], **kwargs)

  def open_(fn, path, mode="r"):
    if os.fspath(path).startswith(SCHEME) and ("a" in mode or "+" in mode):
      raise OSError(f"{path}: an object store cannot open mode {mode!r}")
    return fn(local(path), mode)

  cwd = os.path.join(root, ".cwd")
  os.makedirs(cwd)
  monkeypatch.chdir(cwd)
  names = ("copy", "exists", "glob", "isdir", "listdir", "makedirs", "mkdir", "remove", "rename", "replace",
           "rmtree", "stat", "walk")
  with epath_testing.mock_epath(open=open_, **{n: redirect for n in names}):
    yield
  assert not os.listdir(cwd), f"written past etils.epath: {os.listdir(cwd)}"
