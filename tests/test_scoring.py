"""Answer extraction and comparison, on hand-written completions in each task's style."""
import pytest

from probing.tasks import scoring as S

# ---------------------------------------------------------------------------- GSM8K


@pytest.mark.parametrize("completion,expected", [
    (" She makes 9 * 2 = $18 every day. So the answer is 18.", "18"),
    (" So the answer is $1,450,000.", "1450000"),
    (" It was - 3 degrees. So the answer is - 3.", "-3"),  # the shipped gold writes "- 3"
    (" The answer is: 0.5", "0.5"),
    (" 5 + 4 = 9.\n#### 9", "9"),
    (" He has 3 apples and 4 pears, 7 fruits", "7"),  # last number
    (" So the answer is 12. Then 5 more", "12"),  # the stated answer wins over later numbers
    (" no numbers here", None),
    ("", None),
])
def test_extract_gsm8k_answer(completion, expected):
  assert S.extract_gsm8k_answer(completion) == expected


def test_score_gsm8k():
  assert S.score_gsm8k(" So the answer is 2,125.", "2125") == 1
  assert S.score_gsm8k(" So the answer is 18.00.", "18") == 1
  assert S.score_gsm8k(" So the answer is 17.", "18") == 0
  assert S.score_gsm8k(" So the answer is 10.", "-10") == 0
  assert S.score_gsm8k(" Janet sells 16 - 3 - 4 = 9 duck eggs a day.", "18") == 0  # truncated
  assert S.score_gsm8k("", "18") == 0


# ---------------------------------------------------------------------------- MATH


@pytest.mark.parametrize("text,expected", [
    ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    ("first \\boxed{1} then \\boxed{\\{1,2\\}}", "\\{1,2\\}"),
    ("nested \\boxed{\\sqrt{\\frac{a}{b}}}", "\\sqrt{\\frac{a}{b}}"),
    ("space form \\boxed 5$ done", "5"),
    ("\\fbox{7}", "7"),
    ("cut inside \\boxed{\\frac{1}{", None),
    ("no box", None),
])
def test_extract_boxed(text, expected):
  assert S.extract_boxed(text) == expected


@pytest.mark.parametrize("raw,normalized", [
    ("10\\text{ inches}", "10"),
    ("\\$100,000", "100000"),
    ("x = \\dfrac{3}{4}", "\\dfrac{3}{4}"),
    ("\\frac12", "\\frac{1}{2}"),
    ("\\sqrt3", "\\sqrt{3}"),
    ("90^\\circ", "90"),
    ("\\text{(A)}", "(A)"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\le(3,\\frac{\\pi}{2}\\right)"),  # Minerva's quirk
    ("\\boxed{5}", "5"),
    ("x \\text{ and } y", "x,y"),
    ("1,000", "1000"),
])
def test_normalize_final_answer(raw, normalized):
  assert S.normalize_final_answer(raw) == normalized


@pytest.mark.parametrize("pred,gold", [
    ("\\dfrac{3}{4}", "\\frac{3}{4}"),
    ("\\tfrac34", "\\frac{3}{4}"),
    ("0.5", "\\frac{1}{2}"),
    ("-\\frac{2}{3}", "-\\frac{2}{3}"),
    ("\\left(3,\\frac{\\pi}{2}\\right)", "\\le(3,\\frac{\\pi}{2}\\right)"),
    ("(3, \\frac{\\pi}{2})", "\\le(3,\\frac{\\pi}{2}\\right)"),
    ("x=5", "5"),
    ("50\\%", "50"),
    ("\\$ 12.50", "12.50"),
])
def test_math_equiv(pred, gold):
  assert S.math_equiv(pred, gold)


@pytest.mark.parametrize("pred,gold", [
    ("\\frac{3}{5}", "\\frac{3}{4}"), ("5", "-5"), ("x \\le 3", "x<3"), ("", "0"), ("12", "2"),
])
def test_math_not_equiv(pred, gold):
  assert not S.math_equiv(pred, gold)


def test_score_math():
  good = (" So $x=\\boxed{\\dfrac{2}{3}}$.\nFinal Answer: The final answer is $\\frac{2}{3}$. "
          "I hope it is correct.")
  assert S.score_math(good, "\\frac{2}{3}") == 1
  two_boxes = " The answer is $\\boxed{2/3}$... wait, so $\\boxed{\\frac23}$."
  assert S.score_math(two_boxes, "\\frac{2}{3}") == 1  # the last box counts
  assert S.score_math(" Final Answer: The final answer is $\\frac{2}{3}$", "\\frac{2}{3}") == 1
  unclosed = " Final Answer: The final answer is $\\frac{2}{3}$.\nmore"
  assert S.score_math(unclosed, "\\frac{2}{3}") == 1
  assert S.score_math(" Final Answer: The final answer is $\\frac{3}{2}$.", "\\frac{2}{3}") == 0
  assert S.score_math(" so $x=\\boxed{\\frac{3}{2}}$.", "\\frac{2}{3}") == 0
  assert S.score_math(" We have $x = \\frac{2}{3}$ so far, and", "\\frac{2}{3}") == 0  # truncated
  assert S.score_math(" so $\\boxed{\\frac{2}{", "\\frac{2}{3}") == 0  # cut inside the box
  assert S.score_math("", "0") == 0


# ---------------------------------------------------------------------------- multiple choice


@pytest.mark.parametrize("completion,letter", [
    (" B", "B"), ("B", "B"), (" B.", "B"), (" (B)", "B"), (" B) dry palms", "B"),
    (" The answer is B", "B"), (" the answer is (C).", "C"), (" Answer: D", "D"),
    ("\n E", "E"), (" I think C", "C"), (" B. wet palms", "B"),
    ("", None), (" none of these", None), (" F", None), (" AB", None), (" b", None),
])
def test_extract_choice_letter(completion, letter):
  assert S.extract_choice_letter(completion) == letter


def test_score_choice():
  assert S.score_choice(" B", "B") == 1
  assert S.score_choice(" B", " B") == 1
  assert S.score_choice(" C", "B") == 0
  assert S.score_choice("", "B") == 0
