"""Figures of the audit and pass@k summaries (PNG, bare Agg `Figure`, no pyplot state).

Both read only the dicts `audit_summary` and `pass_at_k_summary` return, so a figure can be
redrawn from summary.json.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from probing.eval.report import new_figure, save_png

__all__ = ["plot_audited_accuracy", "plot_pass_at_k"]


def _split_key(key: str) -> tuple[str, int]:
  task, step = key.rsplit("@", 1)
  return task, int(step)


def plot_audited_accuracy(audit: Mapping, path: str | os.PathLike, *,
                          title: str = "Task accuracy at later checkpoints: probe, audit, PPI++") -> Path:
  """One subplot per task over later checkpoints: measured accuracy (all questions), the probe's
  mean p, and one audit of n questions as audit-only and PPI++ estimates with 95% intervals
  (`audit['per_cell']`, the representative draw), the two offset a little to be told apart."""
  by_task: dict[str, list] = {}
  for key, c in audit["per_cell"].items():
    task, step = _split_key(key)
    by_task.setdefault(task, []).append((step, c))
  if not by_task:
    raise ValueError("audit: no cells to plot")
  tasks = sorted(by_task)
  ncols = min(3, len(tasks))
  nrows = math.ceil(len(tasks) / ncols)
  fig, axes = new_figure(4.2 * ncols, 3.2 * nrows, nrows=nrows, ncols=ncols, squeeze=False)
  flat = axes.ravel()
  for ax, task in zip(flat, tasks):
    rows = sorted(by_task[task], key=lambda r: r[0])
    x = np.asarray([s for s, _ in rows], np.float64)
    dx = 0.08 * (np.min(np.diff(x)) if len(x) > 1 else 1.0)
    ax.plot(x, [c["truth"] for _, c in rows], "-o", color="black", markersize=3, label="measured (all questions)")
    ax.plot(x, [c["probe_only"]["estimate"] for _, c in rows], "--s", color="C1", markersize=3,
            label="probe only (mean p)")
    for name, color, off in (("audit_only", "0.55", -dx), ("ppi", "C0", dx)):
      est = np.asarray([c[name]["estimate"] for _, c in rows])
      lo = np.asarray([c[name]["ci"][0] for _, c in rows])
      hi = np.asarray([c[name]["ci"][1] for _, c in rows])
      ax.errorbar(x + off, est, yerr=[est - lo, hi - est], fmt="o", color=color, markersize=3, capsize=2,
                  label=("audit only" if name == "audit_only" else "PPI++ (probe + audit)") + f", n={rows[0][1]['n']}")
    ax.set_title(task)
    ax.set_xlabel("checkpoint step")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.05, 1.05)
  for ax in flat[len(tasks):]:
    ax.set_visible(False)
  flat[0].legend(fontsize="x-small")
  cov = audit.get("coverage")
  fig.suptitle(title + (f" (PPI++ 95% CI coverage over draws: {cov:.2f})" if cov is not None else ""))
  return save_png(fig, path)


def plot_pass_at_k(pass_at_k: Mapping, path: str | os.PathLike, *,
                   title: str = "Predicted vs measured pass@k (held-out questions, later checkpoints)") -> Path:
  """Predicted against measured pass@k, one point per (task, later checkpoint) and k: the probe
  as trained (1 - (1 - p)^k), with the Beta spread, through the previous audit's offset (one
  pass), and through this checkpoint's and the previous audit's (on the test questions outside
  this audit; the draw-based panels show draw 0, their error is the mean over draws); the
  diagonal is perfect."""
  ks = sorted(pass_at_k, key=int)
  if not ks:
    raise ValueError("pass_at_k: no k to plot")
  fig, axes = new_figure(17.0, 4.4, nrows=1, ncols=4, squeeze=False)
  panels = (("measured", "predicted", "probe_alone", "probe as trained: 1 - (1 - p)^k"),
            ("measured", "calibrated", "calibrated", "probe as trained, Beta spread"),
            ("held_out_measured", "one_pass", "one_pass", "one pass: previous audit's offset"),
            ("held_out_measured", "audit_calibrated", None, "this and the previous audit's offset"))
  for ax, (x_field, field, block_name, name) in zip(axes[0], panels):
    for i, k in enumerate(ks):
      cells = [c for c in pass_at_k[k]["per_cell"].values() if field in c]
      block = pass_at_k[k] if block_name is None else pass_at_k[k].get(block_name) or {}
      err = block.get("abs_error_mean")
      ax.scatter([c[x_field] for c in cells], [c[field] for c in cells], s=12, color=f"C{i}",
                 label=f"k={k}" + (f" (|err| {err:.3f})" if err is not None else ""))
    ax.plot([0, 1], [0, 1], ":", color="black", linewidth=1)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("measured pass@k (unbiased, from c of k samples)")
    ax.set_ylabel("predicted pass@k")
    ax.set_title(name, fontsize="small")
    ax.legend(fontsize="x-small")
  fig.suptitle(title)
  return save_png(fig, path)
