"""The embedded testbed: synthetic skills and the small OLMo3 pretrained on them.

Importing this package registers the `syn_*` tasks with `probing.tasks` and the character
alphabet 'char' with `probing.tokenizer`. The library core never imports it (the rule
big_vision keeps for `proj/`): only `probing.demo`, launch scripts, tests and benchmarks do.
"""
from probing import tokenizer as _tokenizer
from probing.testbed import skills
from probing.testbed.skills import ALPHABET

_tokenizer.register_alphabet("char", ALPHABET)

__all__ = ["ALPHABET", "skills"]
