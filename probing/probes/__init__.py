"""Probe heads and how they are trained and used.

  heads.py     the five families as Flax NNX modules (`ProbeSpec` rebuilds one from its card)
  data.py      feature sets joined with labels (`ProbeData`), leak-free splits, standardization
  config.py    typed settings: `ProbeConfig` (what a probe is), `TrainConfig` (how it is fitted)
  train.py     the jitted optax loop and `train_probe`
  trained.py   `TrainedProbe` (extract_spec, predict, predict_model, save) and `load_probe`
  submodel.py  the submodel probe's blocks, copied from a checkpoint
"""
from probing.probes.data import ProbeData, Split, build_data, make_split
from probing.probes.heads import FAMILIES, TOKEN_FAMILIES, Probe, ProbeError, ProbeSpec, build_probe
from probing.probes.config import ProbeConfig, TrainConfig, configs_from
from probing.probes.train import train_and_evaluate, train_probe
from probing.probes.trained import Prediction, TrainedProbe, load_probe

__all__ = ["FAMILIES", "Prediction", "Probe", "ProbeConfig", "ProbeData", "ProbeError", "ProbeSpec", "Split",
           "TOKEN_FAMILIES", "TrainConfig", "TrainedProbe", "build_data", "build_probe", "configs_from",
           "load_probe", "make_split", "train_and_evaluate", "train_probe"]
