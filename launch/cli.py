"""Command-line handling shared by the launchers: `--help`/`--config_help` list the config's fields,
an unknown `--config.<field>` names the nearest one, and every user error is one line, exit 1."""
from __future__ import annotations

import re
import sys

from absl import flags, logging

from configs import fields

flags.DEFINE_boolean("config_help", False, "Print the --config file's fields (defaults and meanings) and exit.")


def fail(message: str) -> None:
  """The one line a user error ends with, and exit status 1."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(1)


def _config_spec(args: list[str], default: str | None) -> str | None:
  spec = default
  for i, a in enumerate(args):
    if a.startswith("--config="):
      spec = a.split("=", 1)[1]
    elif a == "--config" and i + 1 < len(args):
      spec = args[i + 1]
  return spec


def flags_parser(default_config: str | None = None):
  """The `flags_parser` of `app.run` for every launcher: `--help` and `--config_help` list the
  config's fields with defaults and meanings; an unknown `--config.<field>` names the nearest
  field; a bad flag, config file or value is one line on stderr and exit status 1."""
  def parse(argv: list[str]) -> list[str]:
    args = argv[1:]
    spec = _config_spec(args, default_config)
    if any(a in ("--help", "-h", "-?", "--helpshort", "--config_help") for a in args):
      if "--config_help" not in args:
        print(flags.FLAGS.main_module_help() + "\n")
      if "config" in flags.FLAGS:
        print(fields.config_help(spec) if spec else "--config_help with --config=<config file> lists that file's "
              "fields (defaults and meanings)")
      sys.exit(0)
    if spec and "config" in flags.FLAGS:
      try:
        config = fields.load_config(spec)
      except ValueError as e:
        fail(str(e))
      for a in args:
        m = re.match(r"--(?:no)?config\.([\w.]+)", a)
        problem = m and fields.unknown_field(config, m.group(1))
        if problem:
          fail(problem)
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      fail(str(e).splitlines()[0])
    except Exception as e:  # pylint: disable=broad-except  (a config file that fails to load)
      fail(f"--config={spec}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
  return parse


def quiet_orbax_logs() -> None:
  """Drops orbax's per-save INFO chatter and JAX's backend probing lines (they log through absl)
  so progress lines stay readable; `--verbosity=1` (or higher) keeps them."""
  import logging as std_logging  # pylint: disable=import-outside-toplevel
  if flags.FLAGS.is_parsed() and flags.FLAGS.verbosity >= 1:
    return

  class _Filter(std_logging.Filter):
    def filter(self, record):
      return record.levelno >= std_logging.WARNING or not any(s in record.pathname for s in _NOISY)

  logging.get_absl_handler().addFilter(_Filter())


_NOISY = ("orbax", "xla_bridge")
