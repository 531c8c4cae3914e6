"""Bring your own evaluations: other tools' per-document results in, our predictions out.

  lm_eval.py   lm-eval `--log_samples` files -> outcomes (filters re-applied to every repeat)
  olmes.py     OLMES per-instance predictions -> outcomes
  matching.py  which of our questions a document is (the task's ids, else a question-text hash)
  rows.py      strict JSONL reading (file and line in every error), the per-document outcome
  importer.py  `import_labels`: outcomes -> label records + provenance, idempotent, all or nothing
  export.py    `write_lm_eval`: predicted pass@1 as lm-eval `results_<date>.json` and samples files
"""
from probing.interop.export import write_lm_eval
from probing.interop.importer import import_labels, label_stem
from probing.interop.rows import InteropError

__all__ = ["InteropError", "import_labels", "label_stem", "write_lm_eval"]
