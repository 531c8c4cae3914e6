"""Launch-script plumbing that needs no model: the demo's --preset shorthand."""
import pytest

from launch import demo


def test_preset_is_shorthand_for_the_config_variant():
  smoke = "--config=configs/experiments/demo.py:smoke"
  assert demo.preset_as_config(["demo", "--preset=smoke", "--workdir=w"]) == ["demo", smoke, "--workdir=w"]
  assert demo.preset_as_config(["demo", "--preset", "smoke", "--config.seed=1"]) == ["demo", smoke, "--config.seed=1"]
  assert demo.preset_as_config(["demo", "--preset=default"]) == ["demo", "--config=configs/experiments/demo.py"]
  assert demo.preset_as_config(["demo", "--workdir=w"]) == ["demo", "--workdir=w"]
  with pytest.raises(SystemExit, match="either --preset or --config"):
    demo.preset_as_config(["demo", "--preset=smoke", "--config=configs/experiments/olmo3_7b.py"])
  with pytest.raises(SystemExit, match="expected 'default' or 'smoke'"):
    demo.preset_as_config(["demo", "--preset=big"])
