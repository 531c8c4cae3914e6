"""Sharded forward == single-device forward; 7B shapes and shardings via jax.eval_shape."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AbstractMesh, AxisType, PartitionSpec as P

from models import olmo3, sharding

MESHES = ["data=2,fsdp=2,tensor=2", "fsdp=8", "tensor=8", "data=2,tensor=4", "fsdp=2,tensor=4", "data=8",
          "data=-1,tensor=2"]


@pytest.fixture(scope="module")
def reference():
  config = olmo3.tiny(vocab_size=250, num_key_value_heads=2)
  model = olmo3.init_model(config, seed=1)
  ids = jnp.asarray(np.random.default_rng(0).integers(2, 250, (8, 24)))
  mask = np.ones((8, 24), np.int32)
  mask[3, :5] = 0
  mask[6, 20:] = 0
  return config, ids, jnp.asarray(mask), model(ids, jnp.asarray(mask))


@pytest.mark.parametrize("spec", MESHES)
def test_sharded_forward_equals_single_device(spec, reference):
  config, ids, mask, want = reference
  mesh = sharding.make_mesh(spec)
  assert all(t == AxisType.Auto for t in mesh.axis_types)
  model = sharding.shard_model(olmo3.init_model(config, seed=1), mesh)
  graphdef, state = nnx.split(model)

  @jax.jit
  def forward(state, ids, mask):
    return nnx.merge(graphdef, state)(ids, mask)

  data = sharding.batch_sharding(mesh)
  got = forward(state, jax.device_put(ids, data), jax.device_put(mask, data))
  for a, b in zip(got.hidden_states + (got.logits,), want.hidden_states + (want.logits,)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=5e-5, rtol=0)
  spec_q = model.blocks[0].attn.q_kernel[...].sharding.spec
  assert spec_q == sharding.logical_to_spec(("embed", "heads", "head_dim"), mesh=mesh, shape=(64, 4, 16))


def test_mesh_spec_errors():
  with pytest.raises(ValueError, match="unknown axis"):
    sharding.make_mesh("model=8")
  with pytest.raises(ValueError, match="needs 16 devices"):
    sharding.make_mesh("data=4,tensor=4")
  with pytest.raises(ValueError, match="at most one axis"):
    sharding.make_mesh("data=-1,fsdp=-1")
  assert sharding.parse_mesh_spec("fsdp=-1,tensor=2", 8) == {"data": 1, "fsdp": 4, "tensor": 2}


def test_olmo3_7b_eval_shape_params_and_shardings():
  config = olmo3.olmo3_7b()
  model = olmo3.abstract_model(config)
  state = nnx.state(model, nnx.Param)
  leaves = jax.tree.leaves(state)
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)  # nothing materialized
  padding = 2 * (config.padded_vocab_size - config.vocab_size) * config.hidden_size
  total = sum(int(np.prod(x.shape)) for x in leaves)
  assert total - padding == config.num_params() == 7_298_011_136
  # 32 devices (fsdp=8, tensor=4) need no real devices: an abstract mesh.
  mesh = AbstractMesh((1, 8, 4), sharding.MESH_AXES, axis_types=(AxisType.Auto,) * 3)
  specs = sharding.param_specs(state, mesh)
  expected = {
      "embedding": P("tensor", "fsdp"), "lm_head": P("fsdp", "tensor"), "final_norm": P(None),
      "q_kernel": P("fsdp", "tensor", None), "k_kernel": P("fsdp", "tensor", None),
      "v_kernel": P("fsdp", "tensor", None), "o_kernel": P("tensor", None, None),
      "q_norm": P("tensor", None), "k_norm": P("tensor", None),
      "gate_kernel": P("fsdp", "tensor"), "up_kernel": P("fsdp", "tensor"), "down_kernel": P("tensor", None),
      "post_attention_norm": P(None), "post_feedforward_norm": P(None),
  }
  seen = set()
  for (path, spec), (_, var) in zip(nnx.to_flat_state(specs), nnx.to_flat_state(state)):
    name = path[-1]
    seen.add(name)
    assert spec == expected[name], (path, spec)
    shape = var.get_value().shape
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
      size = 1 if axes is None else int(np.prod([mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes)]))
      assert dim % size == 0, (path, shape, spec)
  assert seen == set(expected)


def test_olmo3_7b_forward_eval_shape():
  model = olmo3.abstract_model(olmo3.olmo3_7b(yarn=True))
  out = nnx.eval_shape(lambda m: m(jnp.zeros((2, 16), jnp.int32)), model)
  assert out.logits.shape == (2, 16, 100278)
  assert len(out.hidden_states) == 33 and out.hidden_states[5].shape == (2, 16, 4096)


def test_layers_selection_runs_no_deeper_block(monkeypatch):
  config = olmo3.tiny()
  model = olmo3.init_model(config)
  ids = jnp.asarray(np.random.default_rng(0).integers(2, 256, (2, 12)))
  full = model(ids)
  calls = []
  original = olmo3.Block.__call__
  monkeypatch.setattr(olmo3.Block, "__call__", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
  out = model(ids, layers=(0, 2), return_logits=False)
  assert out.logits is None and set(out.hidden_states) == {0, 2} and len(calls) == 2
  np.testing.assert_array_equal(np.asarray(out.hidden_states[2]), np.asarray(full.hidden_states[2]))
  with pytest.raises(ValueError, match="out of range"):
    model(ids, layers=(7,), return_logits=False)
