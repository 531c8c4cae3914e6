"""Test set-up: 8 fake CPU devices for the sharding tests (must precede any jax import)."""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

pytest_plugins = ["run_fixtures"]  # session fixtures: a tiny testbed run and a probe trained on it

# `make test` runs on two workers (pytest-xdist, --dist loadgroup). Each worker builds the session
# fixtures it needs, so every test that reads one of the expensive runs goes to the same worker as
# the others that read it; every other test stays with its file (module fixtures built once).
# The marks must be on the items before xdist's own collection hook turns them into scope names,
# and a worker registers that hook after this file: hence tryfirst.
_SHARED_RUNS = ("smoke_run", "testbed_run", "testbed_probe")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    names = set(getattr(item, "fixturenames", ()))
    if "smoke_run" in names:
      group = "smoke_run"
    elif names & set(_SHARED_RUNS):
      group = "testbed_run"
    else:
      group = item.nodeid.split("::")[0]
    item.add_marker(pytest.mark.xdist_group(group))
