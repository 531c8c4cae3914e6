"""Activation features: one prefill pass per batch, pooled inside the jit, and their on-disk store.

`extract` (one task's questions, optionally persisted and resumable) and `extract_tasks` (several
tasks in one length-sorted pass) live in `probing.features.extraction`; the store format and its
readers in `probing.features.store`.
"""
from probing.features.extraction import ExtractSpec, extract, extract_tasks, spec_from_config
from probing.features.store import (FORMAT, POOLINGS, SIDECAR, FeatureError, FeatureSet, extraction_code_version,
                                    find_stores, load_feature_sets, load_features, store_dir)

__all__ = ["ExtractSpec", "FORMAT", "FeatureError", "FeatureSet", "POOLINGS", "SIDECAR", "extraction_code_version",
           "extract", "extract_tasks", "find_stores", "load_feature_sets", "load_features",
           "spec_from_config", "store_dir"]
