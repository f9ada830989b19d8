"""An evaluator for the arithmetic in equation labels and model outputs, such as ``( ( 24 - 9 ) * 3 )``.

Hand-written on purpose: Python's ``eval`` of model output would run whatever the model wrote,
so the input is parsed with ``ast.parse`` and only numbers, ``+ - * /``, signs and brackets are
evaluated. ``safe_eval`` gives a float (for scoring); ``exact_value`` gives a ``Fraction`` (for
votes, where ``1 / 3`` and ``0.333333`` must stay apart and ``( 84.0 / 2.0 )`` and ``42`` must not).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from fractions import Fraction

# Limits: generous for SVAMP-sized equations, small enough that no input can make the evaluator
# slow or huge (integer arithmetic on big literals is the classic way to hang).
MAX_EXPRESSION_CHARS = 200
MAX_NESTING = 20
MAX_LITERAL = 1e12
MAX_RESULT = 1e15

Number = int | float | Fraction


class UnsafeExpression(ValueError):
    """An expression that `safe_eval` refuses: not plain arithmetic, too big, or undefined."""


def _preview(expr: str) -> str:
    """A short repr of `expr` for error messages (inputs may be 10,000 characters long)."""
    return repr(expr if len(expr) <= 60 else expr[:57] + "...")


def _check_text(expr: object) -> None:
    """Reject, before any parsing, inputs that are not short plain strings."""
    if not isinstance(expr, str):
        raise UnsafeExpression(f"expected a string, got {type(expr).__name__}")
    if len(expr) > MAX_EXPRESSION_CHARS:
        raise UnsafeExpression(f"expression is {len(expr)} characters long; the limit is {MAX_EXPRESSION_CHARS}")
    if not expr.strip():
        raise UnsafeExpression("empty expression")
    if expr != expr.strip():
        raise UnsafeExpression(f"surrounding whitespace in {_preview(expr)}; strip it first")
    depth = 0
    for char in expr:
        depth += (char in "([{") - (char in ")]}")
        if depth > MAX_NESTING:
            raise UnsafeExpression(f"brackets nested deeper than {MAX_NESTING} levels")


def _literal(value: object, expr: str) -> int | float:
    """Return `value` if it is a finite int or float of sensible size, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UnsafeExpression(f"constant of type {type(value).__name__} is not allowed in {_preview(expr)}")
    if not math.isfinite(value) or abs(value) > MAX_LITERAL:
        raise UnsafeExpression(f"number out of range (|x| <= {MAX_LITERAL:g}) in {_preview(expr)}")
    return value


def _exact(value: int | float) -> Fraction:
    """The number a literal was written as: ``0.1`` is 1/10, not the binary float nearest to it.

    ``repr`` gives the shortest decimal that reads back as the same float, which is how it was written.
    """
    return Fraction(value) if isinstance(value, int) else Fraction(repr(value))


def _as_written(value: int | float) -> int | float:
    """Keep a literal's Python type: int arithmetic stays exact, as in Python itself."""
    return value


def _apply(op: ast.operator, left: Number, right: Number, expr: str) -> Number:
    """Apply one of + - * / to two numbers; reject every other operator."""
    if isinstance(op, ast.Add):
        return left + right
    if isinstance(op, ast.Sub):
        return left - right
    if isinstance(op, ast.Mult):
        return left * right
    if isinstance(op, ast.Div):
        if right == 0:
            raise UnsafeExpression(f"division by zero in {_preview(expr)}")
        return left / right
    raise UnsafeExpression(f"operator {type(op).__name__} is not allowed (only + - * /) in {_preview(expr)}")


def _eval_node(node: ast.AST, expr: str, depth: int, number: Callable[[int | float], Number]) -> Number:
    """Evaluate an arithmetic AST node, refusing anything but numbers, + - * / and signs.

    `number` turns each checked literal into the type the arithmetic runs in (float or Fraction).
    """
    if depth > MAX_NESTING:
        raise UnsafeExpression(f"expression nested deeper than {MAX_NESTING} levels")
    if isinstance(node, ast.Constant):
        return number(_literal(node.value, expr))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval_node(node.operand, expr, depth + 1, number)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left = _eval_node(node.left, expr, depth + 1, number)
        right = _eval_node(node.right, expr, depth + 1, number)
        value = _apply(node.op, left, right, expr)
        # Checked after every step, so no chain of operations can grow a huge number.
        if not math.isfinite(value) or abs(value) > MAX_RESULT:
            raise UnsafeExpression(f"result out of range (|x| <= {MAX_RESULT:g}) in {_preview(expr)}")
        return value
    kind = type(node.op).__name__ if isinstance(node, ast.UnaryOp) else type(node).__name__
    raise UnsafeExpression(f"{kind} is not allowed in an arithmetic expression: {_preview(expr)}")


def _parse(expr: str) -> ast.expr:
    """The expression tree of `expr`, after the text checks; any parse failure is an `UnsafeExpression`."""
    _check_text(expr)
    try:
        return ast.parse(expr, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError) as err:
        raise UnsafeExpression(f"not a valid arithmetic expression: {_preview(expr)}") from err


# Hand-written rather than eval(): model output is untrusted text, and only arithmetic may run.
def safe_eval(expr: str) -> float:
    """Evaluate a plain arithmetic expression such as `( ( 24 - 9 ) * 3 )` without running code.

    Allowed: int and float literals, + - * /, unary + and -, parentheses. Anything else (names,
    calls, attributes, `**`, booleans, strings, whitespace around the expression, over-long or
    over-nested input, huge numbers, division by zero) raises `UnsafeExpression`. The input is
    parsed with `ast.parse` and walked by hand; it is never passed to eval, exec or compile.
    """
    return float(_eval_node(_parse(expr), expr, 0, _as_written))


def exact_value(expr: str) -> Fraction:
    """The exact rational value of `expr` (same rules and errors as `safe_eval`).

    Literals count as written (``0.1`` is 1/10), so ``( 0.1 + 0.2 )`` equals ``0.3``, ``( 84.0 / 2.0 )``
    equals ``42``, and ``1 / 3`` differs from every finite decimal.
    """
    return Fraction(_eval_node(_parse(expr), expr, 0, _exact))


def step_values(expr: str) -> list[float]:
    """The value of every operation in `expr`, each listed before the operations that use it.

    The arith generator uses it to keep every intermediate result a positive whole number.
    """
    tree = _parse(expr)
    values = []
    for node in reversed(list(ast.walk(tree))):  # breadth-first, reversed: operands before their operation
        if isinstance(node, ast.BinOp):
            values.append(float(_eval_node(node, expr, 0, _as_written)))
    return values
