"""probing.eval.report: each plot writes a valid non-empty PNG; the markdown holds tables and links."""
import numpy as np
import pytest

from probing.eval import report

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
  data = path.read_bytes()
  assert data.startswith(_PNG_MAGIC) and len(data) > 1000
  assert not list(path.parent.glob("*.tmp*"))  # the temporary file (models.io naming) was renamed away


def test_plots_write_png(tmp_path):
  steps = [100, 200, 300, 400]
  paths = [
      report.plot_auroc_by_family(
          {"linear": {"gsm8k": 0.71, "arc": 0.66}, "mlp": {"gsm8k": 0.74, "arc": 0.69},
           "baseline: task prior": {"gsm8k": 0.5, "arc": 0.5}, "nll_gold": {"gsm8k": 0.8}},
          tmp_path / "auroc.png", "AUROC"),
      report.plot_accuracy_curves(
          steps, {"gsm8k": [0.1, 0.2, 0.3, 0.35], "arc": [0.3, 0.4, 0.45, 0.5]},
          {"gsm8k": {"linear": [None, None, 0.28, 0.33]}, "arc": {"linear": [0.3, 0.4, 0.4, 0.55]}},
          tmp_path / "sub" / "acc.png", train_upto_step=200,
          ci={"gsm8k": {"linear": ([0.0, 0.0, 0.25, 0.3], [0.0, 0.0, 0.31, 0.36])}},
          monitor={"gsm8k": ([150, 250, 350], [0.15, 0.25, 0.3])}),
      report.plot_cross_checkpoint_heatmap(
          np.array([[np.nan, 0.7, 0.68], [np.nan, np.nan, 0.72]]), [100, 200], [100, 200, 300],
          tmp_path / "heat.png"),
      report.plot_reliability(
          {"linear": ([0.05, 0.5, 0.9], [0.1, 0.45, 0.8], [30, 10, 5]),
           "mlp": (np.array([0.2, 0.7]), np.array([0.25, 0.6]), np.array([20, 25]))},
          tmp_path / "rel.png"),
      report.plot_latency({"7B": {"generative_eval": 7200.0, "probe": 95.0},
                           "testbed": {"generative_eval": 30.0, "probe": 2.0, "probe_cold": 9.0}},
                          tmp_path / "lat.png"),
  ]
  for p in paths:
    _assert_png(p)


def test_plot_errors_name_the_input(tmp_path):
  with pytest.raises(ValueError, match="matrix"):
    report.plot_cross_checkpoint_heatmap(np.zeros((2, 2)), [1], [1, 2], tmp_path / "x.png")
  with pytest.raises(ValueError, match=r"measured\['t'\]"):
    report.plot_accuracy_curves([1, 2], {"t": [0.1]}, {}, tmp_path / "x.png")


def test_markdown_report(tmp_path):
  rows = [{"family": "linear", "auroc": 0.71234, "ci": (0.6, 0.8), "n": 3},
          {"family": "a|b", "auroc": float("nan"), "ci": None, "n": 4}]
  table = report.markdown_table(rows, ["family", "auroc", "ci", "n"], floatfmt=".2f")
  assert table.splitlines()[0] == "| family | auroc | ci | n |"
  assert "| linear | 0.71 | [0.60, 0.80] | 3 |" in table
  assert "a\\|b" in table and "–" in table
  fig = report.plot_latency({"x": {"generative_eval": 10.0, "probe": 1.0}}, tmp_path / "figs" / "lat.png")
  out = report.write_markdown_report(
      tmp_path / "report.md", title="Probe report",
      sections=[("AUROC", table), ("Notes", "Earlier predicts later.")],
      figures=[("Latency", "figs/lat.png"), ("Latency again", fig)])
  text = out.read_text()
  assert text.startswith("# Probe report\n")
  assert "## AUROC" in text and table.strip() in text and "Earlier predicts later." in text
  assert text.count("![Latency") == 2 and text.count("(figs/lat.png)") == 2  # absolute made relative
