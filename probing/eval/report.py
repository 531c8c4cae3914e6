"""Figures (PNG, Agg) and the markdown report of a probing experiment.

Every function takes plain Python/numpy data, so reports can be rebuilt from saved JSON
without the model. Figures are drawn on a bare `Figure` with the Agg canvas (no pyplot
global state, no display needed) and written atomically: a reader never sees half a file.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from models import io

# Substrings that mark a family as a baseline (drawn hatched and grey-toned).
_BASELINE_MARKERS = ("baseline", "prior", "nll", "tfidf", "tf-idf", "length", "random", "chance")


def new_figure(width: float, height: float, **subplots: Any) -> tuple[Figure, Any]:
  fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
  FigureCanvasAgg(fig)
  return fig, fig.subplots(**subplots)


def save_png(fig: Figure, path: str | os.PathLike) -> Path:
  """Writes PNG to a temporary name in the same directory, then renames over `path`."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  io.replace_from_tmp(path, lambda f: fig.savefig(f, format="png"), mode="wb")
  return path


def _floats(xs: Iterable[Any]) -> np.ndarray:
  """None -> NaN, so missing points leave gaps instead of raising."""
  return np.asarray([np.nan if x is None else float(x) for x in xs], dtype=np.float64)


def _is_baseline(name: str, baselines: Iterable[str] | None) -> bool:
  if baselines is not None:
    return name in set(baselines)
  low = name.lower()
  return any(m in low for m in _BASELINE_MARKERS)


def plot_auroc_by_family(auroc: Mapping[str, Mapping[str, float]], path: str | os.PathLike,
                         title: str = "AUROC by probe family", *,
                         baselines: Iterable[str] | None = None) -> Path:
  """Grouped bars: one group per task, one bar per family; baselines hatched, probes solid.

  `baselines` names the baseline families; by default a family is a baseline when its name
  contains e.g. 'baseline', 'prior' or 'nll'.
  """
  families = list(auroc)
  tasks = sorted({t for v in auroc.values() for t in v})
  if not families or not tasks:
    raise ValueError("auroc: no values to plot")
  fig, ax = new_figure(max(5.0, 1.2 + 0.35 * len(tasks) * len(families)), 4.0)
  width = 0.8 / len(families)
  x = np.arange(len(tasks))
  probe_colors = iter(f"C{i}" for i in range(100))
  greys = iter(["0.35", "0.55", "0.7", "0.8", "0.45", "0.6"] * 10)
  for i, fam in enumerate(families):
    vals = _floats(auroc[fam].get(t) for t in tasks)
    base = _is_baseline(fam, baselines)
    ax.bar(x - 0.4 + width * (i + 0.5), np.nan_to_num(vals, nan=0.0), width,
           label=fam + (" (baseline)" if base and "baseline" not in fam.lower() else ""),
           color=next(greys) if base else next(probe_colors),
           hatch="//" if base else None, edgecolor="black" if base else None, linewidth=0.5)
  ax.axhline(0.5, color="black", linestyle=":", linewidth=1, label="chance")
  ax.set_xticks(x, tasks, rotation=30 if len(tasks) > 4 else 0, ha="right" if len(tasks) > 4 else "center")
  ax.set_ylim(0.0, 1.0)
  ax.set_ylabel("AUROC")
  ax.set_title(title)
  ax.legend(fontsize="small", ncols=min(3, len(families) + 1))
  return save_png(fig, path)


def plot_accuracy_curves(steps: Sequence[int], measured: Mapping[str, Sequence[float]],
                         predicted: Mapping[str, Mapping[str, Sequence[float]]],
                         path: str | os.PathLike, train_upto_step: int | None = None,
                         ci: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]] | None = None,
                         *, monitor: Mapping[str, tuple[Sequence[int], Sequence[float]]] | None = None,
                         title: str = "Task accuracy across checkpoints") -> Path:
  """One subplot per task: measured (solid) and predicted (dashed) accuracy against step.

  The checkpoints whose labels trained the probes (steps <= train_upto_step) are shaded.
  `ci[task][source] = (lo, hi)` adds a band (source may be 'measured'); `monitor[task] =
  (steps, values)` overlays the in-training monitor, which runs at its own steps.
  """
  tasks = list(measured) or list(predicted)
  if not tasks:
    raise ValueError("measured: no tasks to plot")
  x = _floats(steps)
  ncols = min(3, len(tasks))
  nrows = math.ceil(len(tasks) / ncols)
  fig, axes = new_figure(4.2 * ncols, 3.2 * nrows, nrows=nrows, ncols=ncols, squeeze=False)
  flat = axes.ravel()
  for ax, task in zip(flat, tasks):
    if train_upto_step is not None:
      ax.axvspan(np.nanmin(x), float(train_upto_step), color="0.85", alpha=0.6,
                 label="training checkpoints")
    bands = (ci or {}).get(task, {})
    if task in measured:
      y = _floats(measured[task])
      if len(y) != len(x):
        raise ValueError(f"measured[{task!r}]: {len(y)} values for {len(x)} steps")
      ax.plot(x, y, "-o", color="black", markersize=3, label="measured")
      if "measured" in bands:
        ax.fill_between(x, _floats(bands["measured"][0]), _floats(bands["measured"][1]),
                        color="black", alpha=0.12)
    for i, (src, vals) in enumerate((predicted.get(task) or {}).items()):
      y = _floats(vals)
      if len(y) != len(x):
        raise ValueError(f"predicted[{task!r}][{src!r}]: {len(y)} values for {len(x)} steps")
      ax.plot(x, y, "--s", color=f"C{i}", markersize=3, label=f"predicted: {src}")
      if src in bands:
        ax.fill_between(x, _floats(bands[src][0]), _floats(bands[src][1]), color=f"C{i}", alpha=0.15)
    if monitor and task in monitor:
      ms, mv = monitor[task]
      ax.plot(_floats(ms), _floats(mv), ":", color="C3", linewidth=1.5, label="monitor")
    ax.set_title(task)
    ax.set_xlabel("checkpoint step")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
  for ax in flat[len(tasks):]:
    ax.set_visible(False)
  flat[0].legend(fontsize="x-small")
  fig.suptitle(title)
  return save_png(fig, path)


def plot_cross_checkpoint_heatmap(matrix: Any, train_steps: Sequence[int], test_steps: Sequence[int],
                                  path: str | os.PathLike,
                                  title: str = "Earlier predicts later: AUROC") -> Path:
  """Heatmap of a cross-checkpoint AUROC matrix; undefined (NaN) entries stay blank."""
  m = np.asarray(matrix, dtype=np.float64)
  if m.shape != (len(train_steps), len(test_steps)):
    raise ValueError(f"matrix: shape {m.shape} does not match "
                     f"({len(train_steps)} train_steps, {len(test_steps)} test_steps)")
  fig, ax = new_figure(max(4.0, 1.5 + 0.6 * m.shape[1]), max(3.0, 1.2 + 0.45 * m.shape[0]))
  finite = m[np.isfinite(m)]
  lo = min(0.5, float(finite.min())) if finite.size else 0.5
  im = ax.imshow(np.ma.masked_invalid(m), cmap="viridis", vmin=lo, vmax=1.0, aspect="auto")
  for (i, j), v in np.ndenumerate(m):
    if np.isfinite(v):
      ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
              color="white" if v < lo + 0.6 * (1.0 - lo) else "black")
  ax.set_xticks(range(len(test_steps)), [str(s) for s in test_steps], rotation=45, ha="right")
  ax.set_yticks(range(len(train_steps)), [str(s) for s in train_steps])
  ax.set_xlabel("test checkpoint step")
  ax.set_ylabel("probe trained up to step")
  ax.set_title(title, fontsize="medium")
  fig.colorbar(im, ax=ax, label="mean within-task AUROC")
  return save_png(fig, path)


def plot_reliability(curves: Mapping[str, tuple[Any, Any, Any]], path: str | os.PathLike,
                     title: str = "Reliability") -> Path:
  """Reliability diagram (top) and the outcomes per bin (bottom) for each named predictor."""
  if not curves:
    raise ValueError("curves: nothing to plot")
  fig, (ax, axc) = new_figure(5.0, 5.5, nrows=2, sharex=True, height_ratios=[3, 1])
  ax.plot([0, 1], [0, 1], ":", color="black", linewidth=1, label="perfect")
  for i, (name, (mean_pred, frac_pos, counts)) in enumerate(curves.items()):
    mp, fp, n = _floats(mean_pred), _floats(frac_pos), _floats(counts)
    if not len(mp) == len(fp) == len(n):
      raise ValueError(f"curves[{name!r}]: mean_pred, frac_pos and counts differ in length")
    ax.plot(mp, fp, "-o", color=f"C{i}", markersize=4, label=name)
    axc.plot(mp, n, "o-", color=f"C{i}", markersize=3)
  ax.set_ylabel("observed frequency")
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1)
  ax.set_title(title)
  ax.legend(fontsize="small")
  axc.set_yscale("log")
  axc.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
  axc.yaxis.set_minor_formatter(NullFormatter())
  axc.set_xlabel("mean predicted p")
  axc.set_ylabel("outcomes")
  return save_png(fig, path)


def plot_latency(latency: Mapping[str, Mapping[str, float]], path: str | os.PathLike,
                 title: str = "Wall time: generative evaluation vs probe") -> Path:
  """Log-scale bars per setting, annotated with how many times faster the probe is."""
  names = list(latency)
  if not names:
    raise ValueError("latency: nothing to plot")
  kinds = ["generative_eval", "probe"]
  kinds += sorted({k for v in latency.values() for k in v} - set(kinds))
  fig, ax = new_figure(max(4.5, 1.5 + 1.3 * len(names)), 4.0)
  width = 0.8 / len(kinds)
  x = np.arange(len(names))
  for i, kind in enumerate(kinds):
    vals = _floats(latency[n].get(kind) for n in names)
    if np.any(vals[np.isfinite(vals)] <= 0):
      raise ValueError(f"latency[...][{kind!r}]: seconds must be > 0 on a log scale")
    ax.bar(x - 0.4 + width * (i + 0.5), vals, width, label=kind, color=f"C{i}")
  for j, n in enumerate(names):
    gen, probe = latency[n].get("generative_eval"), latency[n].get("probe")
    if gen and probe:
      ratio = gen / probe
      if ratio >= 1:
        label = f"probe {ratio:,.0f}x faster" if ratio >= 10 else f"probe {ratio:.1f}x faster"
      else:
        label = f"probe {1 / ratio:.1f}x slower"
      ax.annotate(label,
                  (x[j], max(gen, probe)), textcoords="offset points", xytext=(0, 4),
                  ha="center", fontsize="small", fontweight="bold")
  ax.set_yscale("log")
  ax.set_xticks(x, names)
  ax.set_ylabel("seconds (log)")
  ax.set_title(title)
  ax.margins(y=0.15)
  ax.legend(fontsize="small")
  return save_png(fig, path)


def _cell(v: Any, floatfmt: str) -> str:
  if v is None or (isinstance(v, (float, np.floating)) and math.isnan(v)):
    return "–"
  if isinstance(v, (bool, np.bool_)):
    return str(bool(v))
  if isinstance(v, (float, np.floating)):
    return format(float(v), floatfmt)
  if isinstance(v, tuple) and len(v) == 2 and all(isinstance(a, (float, np.floating)) for a in v):
    return f"[{format(float(v[0]), floatfmt)}, {format(float(v[1]), floatfmt)}]"  # a CI
  return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], floatfmt: str = ".3f") -> str:
  """A GitHub-style table; floats use `floatfmt`, None/NaN show as '–', (lo, hi) as a CI."""
  if not columns:
    raise ValueError("columns: need at least one")
  lines = ["| " + " | ".join(_cell(c, floatfmt) for c in columns) + " |",
           "|" + "|".join("---" for _ in columns) + "|"]
  for r in rows:
    lines.append("| " + " | ".join(_cell(r.get(c), floatfmt) for c in columns) + " |")
  return "\n".join(lines) + "\n"


def write_markdown_report(path: str | os.PathLike, *, title: str,
                          sections: Sequence[tuple[str, str]],
                          figures: Sequence[tuple[str, str | os.PathLike]] = ()) -> Path:
  """Writes `# title`, the sections, then a Figures section; links are relative to the report.

  An absolute figure path is rewritten relative to the report's directory, so the report
  stays valid when its folder is moved.
  """
  path = Path(path)
  parts = [f"# {title}\n"]
  for heading, text in sections:
    parts.append(f"## {heading}\n\n{text.strip()}\n")
  if figures:
    parts.append("## Figures\n")
    for caption, fig_path in figures:
      rel = Path(fig_path)
      if rel.is_absolute():
        rel = Path(os.path.relpath(rel, path.parent.resolve()))
      parts.append(f"![{caption}]({rel.as_posix()})\n\n*{caption}*\n")
  path.parent.mkdir(parents=True, exist_ok=True)
  io.write_text(path, "\n".join(parts))
  return path


__all__ = ["plot_auroc_by_family", "plot_accuracy_curves", "plot_cross_checkpoint_heatmap",
           "plot_reliability", "plot_latency", "markdown_table", "write_markdown_report"]
