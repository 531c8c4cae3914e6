"""What the demo runs on when given real checkpoints: which ones, at which monotone steps, with
which tokenizer and tasks; everything checked before any weights are read or any label is paid for."""
from __future__ import annotations

import os

from probing import checkpoints as checkpoints_lib
from probing import tasks as task_registry
from probing import tokenizer as tokenizer_lib


def external_checkpoints(cfg) -> list[tuple[int, str]]:
  """(step, dir) of `cfg.data.checkpoints` (comma-separated dirs), by step. Steps come from
  `cfg.data.checkpoint_steps`, or else from each checkpoint (metadata, or an OLMo3 revision name
  such as `stage2-step2000`, which `probing.checkpoints` maps to a monotone step with
  `cfg.data.stage_lengths`). Two checkpoints with one step, or steps against their names' order,
  are an error naming both."""
  d = cfg.data
  dirs = [p.strip() for p in (d.checkpoints or "").split(",") if p.strip()]
  if not dirs:
    return []
  missing = [p for p in dirs if not os.path.isdir(p)]
  if missing:
    raise FileNotFoundError(f"--config.data.checkpoints: not found: {missing}")
  try:
    steps = [int(s) for s in (d.checkpoint_steps or "").split(",") if s.strip()]
  except ValueError as e:
    raise ValueError(f"--config.data.checkpoint_steps: {e}") from e
  if steps and len(steps) != len(dirs):
    raise ValueError(f"--config.data.checkpoint_steps: {len(steps)} steps for {len(dirs)} checkpoints (give one "
                     "monotone training step per checkpoint: OLMo3 stage counters restart)")
  ids = [checkpoints_lib.checkpoint_id(p, step=steps[i] if steps else None, stage_lengths=tuple(d.stage_lengths))
         for i, p in enumerate(dirs)]
  unknown = [p for p, (_, s) in zip(dirs, ids) if s is None]
  if unknown:
    raise ValueError(f"checkpoints {unknown}: their steps cannot be told from their names; set "
                     "--config.data.checkpoint_steps (monotone training steps)")
  checkpoints_lib.check_step_order(ids)
  return sorted((s, os.path.abspath(p)) for p, (_, s) in zip(dirs, ids))


def checked_inputs(cfg, external, families) -> tuple[tokenizer_lib.Tokenizer, list[str]]:
  """(tokenizer, task names) of a real-checkpoint run, after every check that needs no weights:
  task names, the tokenizer against each model's embedding rows, each family's layers."""
  first = external[0][1]
  tokenizer = tokenizer_lib.from_spec(cfg.data.tokenizer, first, checkpoints_lib.metadata_of(first))
  try:
    names = task_registry.expand(cfg.data.tasks or "")
  except KeyError as e:
    raise ValueError(f"{e.args[0]} (--config.data.tasks)") from e
  if not names:
    raise ValueError("real checkpoints need tasks: set --config.data.tasks")
  for _, path in external:
    ck = checkpoints_lib.inspect_checkpoint(path, tokenizer=tokenizer, require_step=False)
    for f, fcfg in families.items():
      checkpoints_lib.check_layers(ck, list(fcfg.extract.layers) + [fcfg.extract.token_layer or 0],
                                   flag=f"--config.families.{f}.extract.layers / .token_layer")
      checkpoints_lib.check_layers(ck, fcfg.head.layers, flag=f"--config.families.{f}.head.layers")
  return tokenizer, names
