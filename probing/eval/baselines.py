"""Baselines on the same splits as the probes, prediction records, and their evaluation.

The cheap signals a skeptic would run instead of a probe, all fitted on training rows only:
the task prior (mean training pass@1 of the task), the task x difficulty prior, the gold-answer
NLL (no training; p = exp(-NLL), a monotone map of the score -NLL, from the mean or the sum over
reference tokens), a metadata LR (per task, on the question's content features: carries,
number of solutions, ...) and a surface LR (per task, on prompt length and character 1-3-grams,
the TF-IDF baseline of the probing-for-success literature). sklearn's LogisticRegression on the
probe's own features is a second trainer of a probe, a reference, not a cheap baseline
(`references`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from probing.eval import metrics

if TYPE_CHECKING:  # rows and splits of probing.probes.data (which trains on these evaluations)
  from probing.probes.data import ProbeData, Split


def baselines(data: ProbeData, split: Split, *, questions: Mapping[tuple[str, str], Any] | None = None
              ) -> dict[str, np.ndarray]:
  """Predicted p per row for each cheap baseline, fitted on split.train only. `questions`
  ((task, question_id) -> Question) enables the metadata and surface baselines."""
  tr = np.asarray(split.train, bool)
  y = data.y
  overall = float(np.mean(y[tr]))
  task_p = {t: float(np.mean(y[tr & (data.task == t)])) for t in set(data.task[tr])}
  out = {"task_prior": np.asarray([task_p.get(t, overall) for t in data.task])}
  diff_p: dict[tuple, list] = {}
  for t, d, v in zip(data.task[tr], data.difficulty[tr], y[tr]):
    if not np.isnan(d):
      diff_p.setdefault((t, d), []).append(v)
  out["task_difficulty_prior"] = np.asarray([
      float(np.mean(diff_p[(t, d)])) if (t, d) in diff_p else task_p.get(t, overall)
      for t, d in zip(data.task, data.difficulty)])
  if "nll" in data.inputs:  # no training: a monotone map of -NLL into (0, 1]
    out["gold_nll_mean"] = np.exp(-data.inputs["nll"][:, 0])
    out["gold_nll_sum"] = np.exp(-data.inputs["nll"][:, 1])
  if questions is not None:
    rows = [questions[(t, q)] for t, q in zip(data.task, data.question_id)]
    out["metadata_lr"] = _per_task_lr(data, tr, _metadata_features(rows, data.task), out["task_prior"])
    out["surface_lr"] = _per_task_lr(data, tr, _surface_features(rows, data.task, tr), out["task_prior"])
  return out


def references(data: ProbeData, split: Split, *, sklearn_c: float = 0.1) -> dict[str, np.ndarray]:
  """Other trainers of a probe on the same activations (not cheap baselines)."""
  if "x" not in data.inputs:
    return {}
  return {"sklearn_logreg": sklearn_logreg(data.inputs["x"].reshape(len(data), -1), data.y,
                                           np.asarray(split.train, bool), c=sklearn_c)}


def _metadata_features(rows: list, tasks: np.ndarray) -> dict[str, np.ndarray]:
  """task -> (rows of that task x features): numeric metadata (the level included), with the
  level also one-hot, so the LR can at least reproduce the task x level prior."""
  out = {}
  for task in sorted(set(tasks)):
    idx = np.flatnonzero(tasks == task)
    keys = sorted({k for i in idx for k, v in (rows[i].metadata or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)})
    levels = sorted({rows[i].difficulty for i in idx if rows[i].difficulty is not None})
    feats = [[float((rows[i].metadata or {}).get(k, 0.0)) for k in keys]
             + [float(rows[i].difficulty == lv) for lv in levels] for i in idx]
    out[task] = np.asarray(feats, np.float64).reshape(len(idx), -1)
  return out


def _surface_features(rows: list, tasks: np.ndarray, train: np.ndarray) -> dict[str, np.ndarray]:
  """task -> prompt length (characters) and TF-IDF of character 1-3-grams (vocabulary from the
  task's training prompts)."""
  from sklearn.feature_extraction.text import TfidfVectorizer
  out = {}
  for task in sorted(set(tasks)):
    idx = np.flatnonzero(tasks == task)
    prompts = [rows[i].prompt for i in idx]
    fit_on = [p for p, t in zip(prompts, train[idx]) if t] or prompts
    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, max_features=2000).fit(fit_on)
    tfidf = vec.transform(prompts).toarray()
    out[task] = np.concatenate([np.asarray([[len(p)] for p in prompts], np.float64), tfidf], axis=1)
  return out


def _per_task_lr(data: ProbeData, train: np.ndarray, features: dict[str, np.ndarray], fallback: np.ndarray,
                 c: float = 1.0) -> np.ndarray:
  """One standardized LogisticRegression per task on soft labels (each row twice, weights y and 1-y)."""
  out = np.array(fallback, np.float64)
  for task, x in features.items():
    idx = np.flatnonzero(data.task == task)
    tr = train[idx]
    if x.shape[1] == 0 or not tr.any() or np.ptp(data.y[idx][tr]) == 0:
      continue
    out[idx] = sklearn_logreg(x, data.y[idx], tr, c=c)
  return out


def sklearn_logreg(x: np.ndarray, y: np.ndarray, train: np.ndarray, *, c: float = 0.1,
                   max_iter: int = 1000) -> np.ndarray:
  """StandardScaler + LogisticRegression on training rows (each row twice: weights y, 1 - y)."""
  from sklearn.linear_model import LogisticRegression
  mean, std = x[train].mean(0), x[train].std(0)
  xs = (x - mean) / np.where(std < 1e-6, 1.0, std)
  n = int(train.sum())
  model = LogisticRegression(C=c, max_iter=max_iter)
  model.fit(np.concatenate([xs[train], xs[train]]), np.r_[np.ones(n), np.zeros(n)],
            sample_weight=np.r_[y[train], 1 - y[train]])
  return model.predict_proba(xs)[:, 1]


def to_records(data: ProbeData, p: np.ndarray, rows=None) -> list[dict]:
  """Prediction records keyed by (checkpoint, task, question_id), with labels where known."""
  idx = np.arange(len(data)) if rows is None else np.flatnonzero(np.asarray(rows, bool))
  nan = lambda v: None if np.isnan(v) else float(v)  # noqa: E731
  return [{"checkpoint": str(data.checkpoint[i]), "checkpoint_step": int(data.step[i]),
           "task": str(data.task[i]), "question_id": str(data.question_id[i]), "p": float(p[i]),
           "c": nan(data.c[i]), "k": nan(data.k[i]), "greedy": nan(data.greedy[i]),
           "difficulty": nan(data.difficulty[i])} for i in idx]


def evaluate(data: ProbeData, p: np.ndarray, rows=None) -> dict:
  """Primary/greedy/threshold AUROC, Brier, ECE and task-accuracy error on labeled rows."""
  rows = np.ones(len(data), bool) if rows is None else np.asarray(rows, bool)
  if not rows.any():
    return {"n_rows": 0}
  sub, ps = data.subset(rows), np.asarray(p)[rows]
  recs = to_records(sub, ps)
  out = {"auroc": metrics.auroc_summary(recs), "n_rows": int(rows.sum())}
  for summary in out["auroc"].values():
    summary["cells"] = {f"{t}@{s}": v for (t, s), v in summary["cells"].items()}
  out["brier"] = metrics.brier(ps, sub.y, k=sub.k)
  out["ece"] = metrics.ece(ps, sub.c, sub.k)
  errs = [abs(ps[m].mean() - sub.y[m].mean()) for t, s in set(zip(sub.task, sub.step))
          for m in [(sub.task == t) & (sub.step == s)]]
  out["task_accuracy_mae"] = float(np.mean(errs))
  return out


def cell_accuracy(data: ProbeData, p: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict:
  """Per (checkpoint, task): predicted accuracy (mean p) with a 95% bootstrap CI over questions,
  and the measured accuracy with its error where labels are known."""
  out = {}
  for ck, task in sorted(set(zip(data.checkpoint, data.task))):
    m = (data.checkpoint == ck) & (data.task == task)
    qs, pm, y = data.question_id[m], np.asarray(p)[m], data.y[m]
    if np.isnan(y).any():
      rng = np.random.default_rng(seed)
      boot = pm[rng.integers(0, len(pm), size=(n_boot, len(pm)))].mean(axis=1)
      res = {"predicted": float(pm.mean()), "predicted_ci": [float(v) for v in np.percentile(boot, [2.5, 97.5])],
             "n_questions": int(m.sum())}
    else:
      res = metrics.task_accuracy(dict(zip(qs, pm)), dict(zip(qs, y)), n_boot=n_boot, seed=seed)
    out[f"{ck}/{task}"] = res
  return out
