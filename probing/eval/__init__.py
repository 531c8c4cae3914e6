"""Scoring predictions: metrics with intervals (`metrics`), baselines on the probes' own splits
(`baselines`), and report figures (`report`)."""
from probing.eval.baselines import baselines, cell_accuracy, evaluate, to_records

__all__ = ["baselines", "cell_accuracy", "evaluate", "to_records"]
