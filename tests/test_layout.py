"""The floor plan, enforced: who may import whom, no import cycles, short launch scripts and
modules, one public face per package. Read from the sources (ast), nothing is imported."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("models", "probing", "configs", "launch", "benchmarks")
FENCED = ("probing.testbed", "probing.demo")  # the experiment, fenced like big_vision's proj/
MAY_IMPORT_FENCED = ("probing.testbed", "probing.demo", "launch", "configs.experiments", "tests", "benchmarks")


def _modules() -> dict[str, str]:
  out = {}
  for pkg in PACKAGES + ("tests",):
    for d, _, files in os.walk(os.path.join(ROOT, pkg)):
      for f in files:
        if f.endswith(".py"):
          path = os.path.join(d, f)
          name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
          out[name] = path
  return out


MODULES = _modules()


def _imports(name: str, path: str) -> set[str]:
  """Project modules `name` imports (at any depth of the file), resolved to module names."""
  with open(path) as f:
    tree = ast.parse(f.read())
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      found.add(node.module)
      found.update(f"{node.module}.{a.name}" for a in node.names)
  return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _within(name: str, prefixes) -> bool:
  return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_core_never_imports_the_testbed_or_the_demo():
  bad = sorted((m, i) for m, imps in GRAPH.items() if not _within(m, MAY_IMPORT_FENCED)
               for i in imps if _within(i, FENCED))
  assert not bad, f"core modules import the fenced experiment: {bad}"


def test_models_never_imports_probing():
  bad = sorted((m, i) for m, imps in GRAPH.items() if _within(m, ("models",)) for i in imps
               if not _within(i, ("models",)))
  assert not bad, bad


def test_no_import_cycles():
  library = {m: {i for i in imps if _within(i, ("models", "probing"))} for m, imps in GRAPH.items()
             if _within(m, ("models", "probing"))}
  state: dict[str, int] = {}

  def visit(m, stack):
    state[m] = 1
    for i in sorted(library.get(m, ())):
      if i not in library:
        continue
      # A package's face may import its own submodules (they import siblings, not the face).
      if state.get(i) == 1 and not (m.startswith(i + ".") or i.startswith(m + ".")):
        pytest.fail("import cycle: " + " -> ".join(stack[stack.index(i):] + [i]))
      if not state.get(i):
        visit(i, stack + [i])
    state[m] = 2

  for m in sorted(library):
    if not state.get(m):
      visit(m, [m])


@pytest.mark.parametrize("prefix, limit", [("launch", 120), ("models", 420), ("probing", 420)])
def test_files_stay_short(prefix, limit):
  """Launch scripts are flags plus one call; a library module is one concern (about 400 lines)."""
  long = {m: n for m, p in MODULES.items() if _within(m, (prefix,))
          for n in [sum(1 for _ in open(p))] if n > limit}
  assert not long, long


def test_public_faces():
  for pkg in ("models", "probing"):
    with open(MODULES[pkg]) as f:
      tree = ast.parse(f.read())
    names = [n for node in tree.body if isinstance(node, ast.Assign)
             for t in node.targets if getattr(t, "id", None) == "__all__" for n in ast.literal_eval(node.value)]
    assert 10 <= len(names) <= 25, (pkg, names)
    assert ast.get_docstring(tree), pkg
