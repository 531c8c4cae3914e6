"""Benchmarks of our JAX OLMo3 against HF transformers; see BENCHMARKS.md for results."""
