"""Device meshes and the one table that maps logical axis names to mesh axes.

Every param of `models.olmo3` carries `logical_axes` metadata (`vocab, embed, heads, kv_heads,
head_dim, mlp, norm`); activations use `batch` and `length`. `LOGICAL_RULES` below is the only
place that decides how they land on the `('data', 'fsdp', 'tensor')` mesh.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import jax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axis (or tuple of axes, or None = replicated). Read top to bottom.
#
# Layout: Megatron-style tensor parallelism over heads and MLP hidden units, plus FSDP over
# the embedding dim of the *column-parallel* kernels (q/k/v, gate/up, LM head, embedding
# table), whose contraction runs over `embed`. The *row-parallel* kernels (o: [heads, head_dim,
# embed], down: [mlp, embed]) name their output dim `embed_out`, which is replicated. Reason: on
# jax 0.10 (both Shardy and GSPMD), `x + o @ W` with `o` batch-sharded over ('data', 'fsdp')
# and feature-sharded over 'tensor', and `W` sharded ('tensor', 'fsdp'), returns swapped batch
# tiles (wrong values for half the batch). Keeping `fsdp` off the output dim of row-parallel
# kernels avoids that layout; `tests/test_sharding.py` checks every supported mesh shape
# against the single-device forward. The cost is that those two kernels are sharded only
# over 'tensor' (about a third of a block's params).
LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("embed_out", None),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
)


def parse_mesh_spec(spec: str | Mapping[str, int] | None, num_devices: int | None = None) -> dict[str, int]:
  """"data=2,fsdp=2,tensor=2" -> sizes per axis; one size may be -1 (= the rest); missing = 1."""
  n = jax.device_count() if num_devices is None else num_devices
  if spec is None or spec == "":
    sizes = {"data": -1}
  elif isinstance(spec, Mapping):
    sizes = dict(spec)
  else:
    sizes = {}
    for part in str(spec).split(","):
      part = part.strip()
      if not part:
        continue
      if "=" not in part:
        raise ValueError(f"mesh spec {spec!r}: expected 'axis=size' items, got {part!r}")
      name, value = part.split("=", 1)
      name = name.strip()
      try:
        sizes[name] = int(value)
      except ValueError:
        raise ValueError(f"mesh spec {spec!r}: size of axis {name!r} is not an integer: {value!r}") from None
  unknown = [a for a in sizes if a not in MESH_AXES]
  if unknown:
    raise ValueError(f"mesh spec {spec!r}: unknown axis {unknown}; axes are {MESH_AXES}")
  full = {a: sizes.get(a, 1) for a in MESH_AXES}
  fill = [a for a, s in full.items() if s == -1]
  if len(fill) > 1:
    raise ValueError(f"mesh spec {spec!r}: at most one axis may be -1")
  bad = [a for a, s in full.items() if s != -1 and s < 1]
  if bad:
    raise ValueError(f"mesh spec {spec!r}: sizes must be positive (or -1), bad: {bad}")
  known = math.prod(s for s in full.values() if s != -1)
  if fill:
    if n % known:
      raise ValueError(f"mesh spec {spec!r}: {n} devices are not divisible by {known}")
    full[fill[0]] = n // known
  if math.prod(full.values()) != n:
    raise ValueError(f"mesh spec {spec!r} needs {math.prod(full.values())} devices, {n} are available")
  return full


def make_mesh(spec: str | Mapping[str, int] | None = None, *, devices: Sequence[Any] | None = None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh with Auto axis types (the logical-rules style needs Auto)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = parse_mesh_spec(spec, len(devices))
  shape = tuple(sizes[a] for a in MESH_AXES)
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def logical_to_spec(logical_axes: Iterable[str | None], rules=LOGICAL_RULES, *, mesh: Mesh | None = None,
                    shape: Sequence[int] | None = None) -> P:
  """Maps logical names to a PartitionSpec; a mesh axis is used at most once per array.

  With `mesh` and `shape`, an axis whose size does not divide the dim is dropped (replicated),
  so e.g. 2 KV heads on tensor=4 still work.
  """
  table = dict(rules)
  used: set[str] = set()
  out = []
  for i, name in enumerate(logical_axes):
    if name is not None and name not in table:
      raise KeyError(f"logical axis {name!r} has no rule in LOGICAL_RULES")
    target = None if name is None else table[name]
    axes = () if target is None else ((target,) if isinstance(target, str) else tuple(target))
    axes = tuple(a for a in axes if a not in used and (mesh is None or mesh.shape[a] > 1))
    if mesh is not None and shape is not None:
      while axes and shape[i] % math.prod(mesh.shape[a] for a in axes):
        axes = axes[:-1]
    used.update(axes)
    out.append(None if not axes else (axes[0] if len(axes) == 1 else axes))
  return P(*out)


def param_specs(state: nnx.State, mesh: Mesh | None = None) -> nnx.State:
  """PartitionSpec for every Variable of an (abstract) NNX state, from its `logical_axes`."""
  def spec(v):
    axes = v.get_metadata().get("logical_axes")
    if axes is None:
      return P()
    return logical_to_spec(axes, mesh=mesh, shape=v.get_value().shape)
  return jax.tree.map(spec, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def param_shardings(state: nnx.State, mesh: Mesh | None) -> nnx.State:
  """NamedSharding per Variable (SingleDeviceSharding of the first device when mesh is None)."""
  if mesh is None:
    single = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda v: single, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return jax.tree.map(lambda s: NamedSharding(mesh, s), param_specs(state, mesh),
                      is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh, ndim: int = 2, *, batch_size: int | None = None) -> NamedSharding:
  """Activations/inputs: leading dim over the batch axes, the rest replicated."""
  spec = logical_to_spec(("batch",) + (None,) * (ndim - 1), mesh=mesh,
                         shape=None if batch_size is None else (batch_size,) + (1,) * (ndim - 1))
  return NamedSharding(mesh, spec)


def shard_model(model: nnx.Module, mesh: Mesh) -> nnx.Module:
  """Moves a materialized model's params onto the mesh per the rules table (in place)."""
  graphdef, state = nnx.split(model)
  shardings = param_shardings(state, mesh)
  state = jax.tree.map(lambda v, s: v.replace(jax.device_put(v.get_value(), s)), state, shardings,
                       is_leaf=lambda x: isinstance(x, nnx.Variable))
  nnx.update(model, state)
  return model


def describe(mesh: Mesh) -> str:
  return ", ".join(f"{a}={mesh.shape[a]}" for a in mesh.axis_names) + f" ({mesh.devices.size} devices)"

