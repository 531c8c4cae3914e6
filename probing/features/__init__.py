"""Activation features: one prefill pass per batch, pooled inside the jit, and their on-disk store.

`extract` (one task's questions, optionally persisted and resumable) and `extract_tasks` (several
tasks in one length-sorted pass) live in `probing.features.extract`; the store format and its
readers in `probing.features.store`.
"""
from probing.features.extract import ExtractSpec, extract, extract_tasks, spec_from_config
from probing.features.store import (FORMAT, POOLINGS, SIDECAR, FeatureError, FeatureSet, code_version,
                                    find_stores, load_feature_sets, load_features, store_dir)

__all__ = ["ExtractSpec", "FORMAT", "FeatureError", "FeatureSet", "POOLINGS", "SIDECAR", "code_version",
           "extract", "extract_tasks", "find_stores", "load_feature_sets", "load_features",
           "spec_from_config", "store_dir"]
