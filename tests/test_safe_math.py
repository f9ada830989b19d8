"""utils/safe_math.py: the ast-only evaluator accepts plain arithmetic and refuses everything else."""

from fractions import Fraction

import pytest

from utils.safe_math import UnsafeExpression, exact_value, safe_eval, step_values


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("( 24 - 9 )", 15),
        ("( ( 24 - 9 ) * 3 )", 45),
        ("( 84.0 / 2.0 )", 42),
        ("( 7 - ( 2 + 3 ) )", 2),
        ("-3 + 5", 2),
        ("-(2 * 3)", -6),
        ("+4", 4),
        ("((((1 + 2))))", 3),
        ("1 / 3", 1 / 3),
        ("0.5 * 4", 2),
        ("10 / 4", 2.5),
        ("42", 42),
    ],
)
def test_safe_eval_valid(expr, value):
    result = safe_eval(expr)
    assert isinstance(result, float)
    assert result == pytest.approx(value)


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('id')",
        "2**99999999",
        "9**9**9",
        "(1).__class__",
        "[1,2]",
        "lambda: 1",
        "a + 1",
        "1 if 1 else 2",
        '"a" * 5',
        "True + 1",
        "1e400",
        "1" + "+1" * 5000,
        "(" * 5000 + "1" + ")" * 5000,
        "(" * 25 + "1" + ")" * 25,
        "-" * 50 + "1",
        "1/0",
        "1 / (2 - 2)",
        "10000000000000",
        "999999999999 * 999999999999 * 999999999999",
        "2 % 3",
        "7 // 2",
        "1 < 2",
        "not 1",
        "~1",
        "1j",
        "",
        " ",
        " 1 + 2",
        "1 + 2\n",
        "1 +",
        "1 = 1",
        "x\x00",
        "The answer is 5",
        "( 24 - 9 ).",
    ],
)
def test_safe_eval_rejects(expr):
    with pytest.raises(UnsafeExpression):
        safe_eval(expr)


def test_safe_eval_rejects_non_strings():
    with pytest.raises(UnsafeExpression):
        safe_eval(5)  # type: ignore[arg-type]


def test_unsafe_expression_is_a_value_error_with_a_clear_message():
    assert issubclass(UnsafeExpression, ValueError)
    with pytest.raises(UnsafeExpression, match="division by zero"):
        safe_eval("1/0")
    with pytest.raises(UnsafeExpression, match="Pow"):
        safe_eval("2 ** 3")
    with pytest.raises(UnsafeExpression, match="Call"):
        safe_eval("__import__('os').system('id')")
    with pytest.raises(UnsafeExpression, match="characters long"):
        safe_eval("1+" * 200 + "1")


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("( 84.0 / 2.0 )", Fraction(42)),
        ("1 / 3", Fraction(1, 3)),
        ("0.3333333", Fraction(3333333, 10_000_000)),
        ("( 0.1 + 0.2 )", Fraction(3, 10)),
        ("-( 2 * 3 )", Fraction(-6)),
        ("( ( 24 - 9 ) * 3 )", Fraction(45)),
    ],
)
def test_exact_value_counts_literals_as_written(expr, value):
    assert exact_value(expr) == value


@pytest.mark.parametrize("expr", ["1/0", "2 ** 3", "a + 1", "1e400", " 1", "(" * 25 + "1" + ")" * 25])
def test_exact_value_refuses_what_safe_eval_refuses(expr):
    with pytest.raises(UnsafeExpression):
        exact_value(expr)


def test_step_values_lists_every_operation_before_its_users():
    assert step_values("( ( 24 - 9 ) * 3 )") == [15.0, 45.0]
    assert step_values("( 7 - ( 2 + 3 ) )") == [5.0, 2.0]
    assert step_values("42") == []
    with pytest.raises(UnsafeExpression, match="division by zero"):
        step_values("( 4 / ( 2 - 2 ) )")
