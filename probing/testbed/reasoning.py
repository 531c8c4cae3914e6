"""Testbed skills with many valid answers: a trace then a final answer, or an object a verifier checks.

On such skills one reference's probability says little about pass@1 (many completions are
correct), as on GSM8K or code with chain of thought; gold-answer NLL stops being an oracle.
Training data shows a random valid trace; a question's `reference` is one valid answer drawn
from the question's own random stream, so it is not systematically the model's favourite.

Each generator returns `(prompt, answer, metadata)`: `metadata` holds what makes a question
hard within its declared level (carries, number of solutions, distance, ...), which feeds the
metadata baseline and never the `difficulty` field. Verifiers take `(prompt, reference,
completion)` and say whether the completion is correct.
"""
from __future__ import annotations

import itertools
import random
import string

LETTERS = string.ascii_lowercase


def count_carries(a: int, b: int) -> int:
  """Carries when adding a and b in decimal (content difficulty of a sum)."""
  n, carry = 0, 0
  while a or b:
    carry = int(a % 10 + b % 10 + carry >= 10)
    n += carry
    a, b = a // 10, b // 10
  return n


def final_answer(text: str) -> str:
  """The text after the last `|` (the whole text when there is none)."""
  return text.rsplit("|", 1)[-1].strip()


def verify_final(prompt: str, reference: str, completion: str) -> bool:
  """Trace skills: only the final answer counts, whatever the trace."""
  return "|" in completion and final_answer(completion) == final_answer(reference)


# ----------------------------------------------------------------------------- sum


def gen_sum(rng: random.Random, level: int):
  """`s:47,18,5=` -> `47+5=52;52+18=70|70`: `level` operands in 1..49, added in a random order."""
  ops = [rng.randint(1, 49) for _ in range(level)]
  order = rng.sample(ops, len(ops))
  steps, total = [], order[0]
  carries = 0
  for x in order[1:]:
    carries += count_carries(total, x)
    steps.append(f"{total}+{x}={total + x}")
    total += x
  meta = {"carries": carries, "total": total, "two_digit_operands": sum(x >= 10 for x in ops),
          "orders": len(set(itertools.permutations(ops)))}
  return "s:" + ",".join(map(str, ops)) + "=", ";".join(steps) + f"|{total}", meta


# ----------------------------------------------------------------------------- mul


def gen_mul(rng: random.Random, level: int):
  """`37*6=` -> `7*6=42;6*30=180|222`: a `level`-digit number times one digit, partial products
  in a random order, each with its factors in a random order, then their sum."""
  a = int("".join(str(rng.randint(1, 9)) for _ in range(level)))  # no zero digit: level! 2^level traces
  b = rng.randint(2, 9)
  parts = [(int(d) * 10 ** i) for i, d in enumerate(reversed(str(a)))]
  order = rng.sample(parts, len(parts))
  trace = ";".join(f"{p}*{b}={p * b}" if rng.random() < 0.5 else f"{b}*{p}={p * b}" for p in order)
  products = [p * b for p in parts]
  carries = 0
  acc = 0
  for p in products:
    carries += count_carries(acc, p)
    acc += p
  meta = {"carries": carries, "nonzero_digits": len(parts), "product_digits": len(str(a * b)), "b": b}
  return f"{a}*{b}=", f"{trace}|{a * b}", meta


# ----------------------------------------------------------------------------- path


def _parse_graph(prompt: str) -> tuple[set[frozenset], str, str]:
  body = prompt[2:-1]  # g:EDGES;s>t=
  edges, query = body.split(";")
  src, dst = query.split(">")
  return {frozenset(e) for e in edges.split(",")}, src, dst


def _simple_paths(edges: set[frozenset], src: str, dst: str, limit: int = 200) -> list[str]:
  adj: dict[str, list[str]] = {}
  for e in edges:
    u, v = sorted(e)
    adj.setdefault(u, []).append(v)
    adj.setdefault(v, []).append(u)
  out: list[str] = []

  def walk(path: str) -> None:
    if len(out) >= limit:
      return
    if path[-1] == dst:
      out.append(path)
      return
    for n in sorted(adj.get(path[-1], ())):
      if n not in path:
        walk(path + n)

  walk(src)
  return out


def gen_path(rng: random.Random, level: int):
  """`g:ab,bc,cd,ae,ed;a>d=` -> `aed`: any simple path between two nodes of an undirected graph
  with `level` edges over up to 6 nodes (a verifier checks it)."""
  nodes = rng.sample(LETTERS[:8], 6)
  while True:
    pairs = [frozenset(p) for p in itertools.combinations(nodes, 2)]
    edges = set(rng.sample(pairs, level))
    src, dst = rng.sample(sorted({n for e in edges for n in e}), 2)
    paths = _simple_paths(edges, src, dst)
    if paths:
      break
  edge_text = ",".join("".join(rng.sample(sorted(e), 2)) for e in rng.sample(sorted(edges, key=sorted), len(edges)))
  degree = sum(src in e for e in edges)
  meta = {"paths": len(paths), "distance": min(len(p) for p in paths) - 1, "source_degree": degree,
          "longest_path": max(len(p) for p in paths) - 1}
  return f"g:{edge_text};{src}>{dst}=", rng.choice(paths), meta


def verify_path(prompt: str, reference: str, completion: str) -> bool:
  edges, src, dst = _parse_graph(prompt)
  p = completion.strip()
  return (len(p) >= 2 and p[0] == src and p[-1] == dst and len(set(p)) == len(p)
          and all(frozenset(p[i:i + 2]) in edges for i in range(len(p) - 1)))


# ----------------------------------------------------------------------------- change


def _subsets_summing(items: list[int], target: int) -> list[tuple[int, ...]]:
  return [s for r in range(1, len(items) + 1) for s in itertools.combinations(items, r) if sum(s) == target]


def gen_change(rng: random.Random, level: int):
  """`c:3,5,8,9>17=` -> `9+8`: any subset of `level` distinct digits that sums to the target, in any
  order (a verifier checks it)."""
  items = rng.sample(range(1, 10), level)
  chosen = rng.sample(items, rng.randint(2, level))
  target = sum(chosen)
  solutions = _subsets_summing(items, target)
  answer = rng.choice(solutions)
  meta = {"solutions": len(solutions), "target": target,
          "smallest_solution": min(len(s) for s in solutions)}
  return "c:" + ",".join(map(str, items)) + f">{target}=", "+".join(map(str, rng.sample(answer, len(answer)))), meta


def verify_change(prompt: str, reference: str, completion: str) -> bool:
  items_text, target = prompt[2:-1].split(">")
  items = set(int(x) for x in items_text.split(","))
  parts = completion.strip().split("+")
  if not all(p.isdigit() for p in parts):
    return False
  nums = [int(p) for p in parts]
  return len(set(nums)) == len(nums) and set(nums) <= items and sum(nums) == int(target)


# ----------------------------------------------------------------------------- nodup


def _arrangement(letters: list[str], rng: random.Random) -> str:
  """A uniformly drawn arrangement of `letters` with no two equal neighbours (rejection sampling;
  callers keep the largest count <= ceil(n/2), so one exists and at least 1 in 70 draws succeeds)."""
  while True:
    a = rng.sample(letters, len(letters))
    if all(x != y for x, y in zip(a, a[1:])):
      return "".join(a)


def gen_nodup(rng: random.Random, level: int):
  """`n:aabbc=` -> `abcab`: the `level` letters rearranged so that no two neighbours are equal."""
  while True:
    s = [rng.choice("abcde") for _ in range(level)]
    counts = {c: s.count(c) for c in sorted(set(s))}
    if max(counts.values()) <= (level + 1) // 2 and len(counts) > 1:
      break
  answer = _arrangement(s, rng)
  meta = {"max_share": max(counts.values()) / level, "distinct": len(counts),
          "repeats": sum(a == b for a, b in zip(s, s[1:]))}
  return "n:" + "".join(s) + "=", answer, meta


def verify_nodup(prompt: str, reference: str, completion: str) -> bool:
  s, a = prompt[2:-1], completion.strip()
  return sorted(a) == sorted(s) and all(x != y for x, y in zip(a, a[1:]))
