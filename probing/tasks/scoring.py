"""Answer extraction and comparison for the real tasks (code execution lives in sandbox.py).

Each scorer follows the convention of the task's shipped metric, so labels agree with the
numbers OLMo's own evaluation reports:
- GSM8K: the number after "The answer is" (the few-shot's final phrase), else after "####",
  else the last number; `,` `$` and a trailing `.` are ignored (oe-eval's metric_kwargs).
- Minerva MATH: the answer after "Final Answer: The final answer is", else the last `\\boxed{}`,
  normalised with Minerva's `normalize_final_answer` and compared to the (pre-normalised) gold.
- Multiple choice: the first standalone letter A-E ("B", "B.", "(B)", "The answer is B").
"""
from __future__ import annotations

import re
from fractions import Fraction

# ----------------------------------------------------------------------------- GSM8K

_NUM = r"-?\s?\$?\s?(?:\d[\d,]*(?:\.\d+)?|\.\d+)"
_ANSWER_IS = re.compile(r"answer is\s*:?\s*(" + _NUM + ")", re.IGNORECASE)
_HASHES = re.compile(r"####\s*(" + _NUM + ")")
_ANY_NUM = re.compile(r"-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")


def normalize_number(text: str) -> str:
  """Drops what the GSM8K metric ignores: `,`, `$`, spaces, and a trailing `.`."""
  s = re.sub(r"[,$\s]", "", text)
  return s[:-1] if s.endswith(".") else s


def extract_gsm8k_answer(text: str) -> str | None:
  """The final number of a GSM8K completion, normalised; None when there is none."""
  for pattern in (_ANSWER_IS, _HASHES):
    m = pattern.search(text)
    if m:
      return normalize_number(m.group(1))
  nums = _ANY_NUM.findall(text)
  return normalize_number(nums[-1]) if nums else None


def numbers_equal(a: str, b: str) -> bool:
  """Exact match after normalisation, or equal values ("18.00" == "18")."""
  a, b = normalize_number(a), normalize_number(b)
  if a == b:
    return True
  try:
    return Fraction(a) == Fraction(b)
  except (ValueError, ZeroDivisionError):
    return False


def score_gsm8k(completion: str, gold: str) -> float:
  pred = extract_gsm8k_answer(completion)
  return float(pred is not None and numbers_equal(pred, gold))


# ----------------------------------------------------------------------------- Minerva MATH
# The rules below are Minerva's (Lewkowycz et al. 2022, appendix D.1), as used by oe-eval to
# pre-normalise the shipped `answer` field; they must stay verbatim so gold and prediction
# are normalised alike (e.g. "ft" is a removed unit, so "\left(" becomes "\le(").

SUBSTITUTIONS = [
    ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), (r"\ ", ""), (" ", ""),
    ("mbox", "text"), (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
]
REMOVED_EXPRESSIONS = [
    "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units",
    "\\ldots", "sue", "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm",
    "pounds", "meters", "meals", "edges", "students", "childrentickets", "multiples",
    "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}",
    r"\mathrm{th}", r"^\circ", r"^{\circ}", r"\;", r",\!", "{,}", '"', "\\dots",
]


def normalize_final_answer(final_answer: str) -> str:
  """Minerva's normaliser: strips units and text, unwraps $ \\text \\boxed, fixes \\frac."""
  final_answer = final_answer.split("=")[-1]
  for before, after in SUBSTITUTIONS:
    final_answer = final_answer.replace(before, after)
  for expr in REMOVED_EXPRESSIONS:
    final_answer = final_answer.replace(expr, "")
  final_answer = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", final_answer)
  final_answer = re.sub(r"(\\text\{)(.*?)(\})", "\\2", final_answer)
  final_answer = re.sub(r"(\\textbf\{)(.*?)(\})", "\\2", final_answer)
  final_answer = re.sub(r"(\\overline\{)(.*?)(\})", "\\2", final_answer)
  final_answer = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", final_answer)
  # Shorthand TeX: \fracab -> \frac{a}{b}, \sqrta -> \sqrt{a}.
  final_answer = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", final_answer)
  final_answer = re.sub(r"(sqrt)([^{])", "sqrt{\\2}", final_answer)
  final_answer = final_answer.replace("$", "")
  if final_answer.replace(",", "").isdigit():  # 100,000 -> 100000
    final_answer = final_answer.replace(",", "")
  return final_answer


def last_boxed_only_string(text: str) -> str | None:
  """The last `\\boxed{...}` (braces balanced) or `\\fbox{...}` in text, wrapper included."""
  idx = text.rfind("\\boxed")
  if idx >= 0 and text.startswith("\\boxed ", idx):
    return "\\boxed " + text[idx + len("\\boxed "):].split("$")[0]
  if idx < 0:
    idx = text.rfind("\\fbox")
    if idx < 0:
      return None
  depth = 0
  for i in range(idx, len(text)):
    if text[i] == "{":
      depth += 1
    elif text[i] == "}":
      depth -= 1
      if depth == 0:
        return text[idx:i + 1]
  return None  # unbalanced: the completion was cut inside the box


def remove_boxed(boxed: str) -> str | None:
  """`\\boxed{x}` -> `x`; None if the string is not a box."""
  for left in ("\\boxed ", "\\boxed{", "\\fbox{"):
    if boxed.startswith(left):
      inner = boxed[len(left):]
      if left.endswith("{"):
        if not inner.endswith("}"):
          return None
        inner = inner[:-1]
      return inner
  return None


def extract_boxed(text: str) -> str | None:
  """Contents of the last complete box in text."""
  boxed = last_boxed_only_string(text)
  return None if boxed is None else remove_boxed(boxed)


_FINAL = re.compile(r"Final Answer: The final answer is(.*?)\. I hope it is correct\.", re.S)
_FINAL_UNCLOSED = re.compile(r"Final Answer: The final answer is(.*)")


def extract_final_answer_phrase(text: str) -> str | None:
  """X of "Final Answer: The final answer is X. I hope it is correct." (Minerva's format).

  The closing "I hope it is correct." may be missing (generation stopped): X then runs to the
  end of the line.
  """
  m = _FINAL.search(text) or _FINAL_UNCLOSED.search(text)
  return m.group(1).strip() if m else None


def extract_math_answer(text: str) -> str | None:
  """The unnormalised answer: the final-answer phrase when present, else the last box."""
  phrase = extract_final_answer_phrase(text)
  if phrase:
    return phrase
  return extract_boxed(text)


def _canonical(ans: str) -> str:
  """Extra, symmetric clean-ups on top of Minerva's normaliser (applied to both sides)."""
  s = ans.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
  s = re.sub(r"\\(?:left|le)(?=[(\[|]|\\\{)", "", s)  # "\le(" is what Minerva leaves of "\left("
  s = re.sub(r"\\right(?=[)\]|.]|\\\})", "", s)
  s = s.replace("\\!", "").replace("\\,", "").replace("\\%", "").replace("%", "")
  s = s.rstrip(".")
  return s


def _as_number(s: str) -> Fraction | None:
  m = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", s)
  try:
    if m:
      return (-1 if m.group(1) else 1) * Fraction(int(m.group(2)), int(m.group(3)))
    if re.fullmatch(r"-?(\d+(\.\d*)?|\.\d+)", s):
      return Fraction(s)
  except ZeroDivisionError:
    return None
  return None


def math_equiv(pred: str, gold: str) -> bool:
  """Equivalence of two answers after Minerva normalisation (plus numeric equality)."""
  a = _canonical(normalize_final_answer(pred))
  b = _canonical(normalize_final_answer(gold))
  if a == b:
    return True
  na, nb = _as_number(a), _as_number(b)
  return na is not None and na == nb


def score_math(completion: str, gold: str) -> float:
  pred = extract_math_answer(completion)
  return float(pred is not None and math_equiv(pred, gold))


# ----------------------------------------------------------------------------- multiple choice

_LETTER_AFTER_ANSWER = re.compile(r"answer\s*(?:is|:)\s*:?\s*\(?([A-E])(?![A-Za-z0-9])", re.I)
_STANDALONE_LETTER = re.compile(r"(?<![A-Za-z0-9])\(?([A-E])(?![A-Za-z0-9])")


def extract_choice_letter(text: str) -> str | None:
  """The chosen letter: after "answer is" if stated, else the first standalone A-E."""
  m = _LETTER_AFTER_ANSWER.search(text)
  if m and m.group(1).isupper():
    return m.group(1)
  m = _STANDALONE_LETTER.search(text.strip())
  return m.group(1) if m else None


def score_choice(completion: str, gold_letter: str) -> float:
  return float(extract_choice_letter(completion) == gold_letter.strip())
