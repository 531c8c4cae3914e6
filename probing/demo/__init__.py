"""The paper's experiment end to end on the embedded testbed (or on real checkpoints): fenced
off from the library, as big_vision fences `proj/`. `pipeline.run(config, workdir)` is the
entry point (`python -m launch.demo`); `evaluate` scores it and `report` writes report.md."""
