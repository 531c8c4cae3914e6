"""olmo-probe: predict downstream pass@1 of in-training OLMo3 checkpoints from activations."""
from setuptools import find_packages, setup

setup(
    name="olmo-probe",
    version="0.1.0",
    description=("Flax NNX OLMo3 with HF parity, generative pass@1 labels, and probe heads "
                 "that predict per-question pass@1 of in-training checkpoints."),
    python_requires=">=3.11",
    packages=find_packages(include=["models", "models.*", "probing", "probing.*",
                                    "configs", "configs.*", "launch", "launch.*"]),
    install_requires=[
        "jax>=0.10,<0.12",
        "flax>=0.12",
        "optax",
        "orbax-checkpoint",
        "etils[epath]",  # local and gs:// paths (orbax uses it too)
        "numpy",
        "scikit-learn",
        "absl-py",
        "ml-collections",
        "safetensors",
        "tokenizers",
        "ml_dtypes",
        "pyarrow",
        "matplotlib",
        "tensorboardX",  # TensorBoard event files for the monitor and the watcher, without TensorFlow
    ],
    extras_require={
        # lm-eval: its real runs and its output schema are the importer's and exporter's reference.
        # pytest < 9: pytest-xdist 3.8 marks a test's xdist_group by rewriting `item._nodeid`, which
        # pytest 9 no longer reads, so `--dist loadgroup` would split files across workers.
        "test": ["pytest>=8.3,<9", "pytest-xdist>=3.8", "torch==2.13.0", "transformers>=5.13", "ppi-python",
                 "lm-eval[hf]>=0.4.8",
                 # TensorBoard's own event reader reads back what the writer wrote
                 "tensorboard"],
    },
)
