"""What a trained probe is valid for: its card as a table (or JSON).

  python -m launch.card runs/probes/hybrid/probe
  python -m launch.card runs/probes/hybrid/probe --json

Family, layers and pooling, the checkpoint steps it was trained on, each task's prompt-format
hash and validation AUROC / ECE, the tokenizer hash, the drift threshold and the validity
window of checkpoint steps (predict and the monitor refuse other prompt formats and warn
outside the window). Reads only probe_card.json: no params, no JAX.
"""
from __future__ import annotations

import json

from absl import app, flags

from launch import common

_JSON = flags.DEFINE_boolean("json", False, "Print the card's summary as JSON instead of a table.")


def main(argv):
  with common.user_errors(ValueError, FileNotFoundError, OSError):
    if len(argv) != 2:
      raise ValueError("usage: python -m launch.card PROBE_DIR [--json]")
    from probing import cards
    c = cards.read_card(argv[1])
    print(json.dumps(cards.summary(c), indent=1) if _JSON.value else cards.table(c, argv[1]))


if __name__ == "__main__":
  app.run(main, flags_parser=common.flags_parser())
