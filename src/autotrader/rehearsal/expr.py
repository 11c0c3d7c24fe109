"""The small part of the expr language (expr-lang/expr) that AnalysisTemplate conditions use.

Argo Rollouts evaluates ``successCondition`` / ``failureCondition`` with expr, the measurement bound to
``result`` (a list of floats for a Prometheus vector, a float for a scalar). The rehearsal evaluates the
SAME strings from the rendered manifests, so this implements that subset faithfully and safely (a
parser and a tree walk; nothing is ``eval``'d):

    literals 0.01, 1e-3, true, false · ``result`` · indexing ``result[0]`` · calls ``len``, ``isNaN``,
    ``isInf``, ``abs`` · unary ``!``/``not``/``-`` · ``* / %`` · ``+ -`` · ``< <= > >= == !=`` ·
    ``&&``/``and`` and ``||``/``or`` (short-circuit, as in expr) · parentheses.

Anything else is an ``ExprError`` (which Argo would report as a measurement Error too).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?)"
    r"|(?P<op>&&|\|\||<=|>=|==|!=|[-+*/%<>!()\[\],])"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*))"
)
_COMPARE = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
_FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "len": len,
    "isNaN": lambda x: isinstance(x, float) and math.isnan(x),
    "isInf": lambda x: isinstance(x, float) and math.isinf(x),
    "abs": abs,
}


class ExprError(ValueError):
    """The condition does not parse, or fails at run time (e.g. ``result[0]`` of an empty result)."""


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ExprError(f"cannot read {text[pos:]!r} in condition {text!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


class _Parser:
    """Recursive descent into nested tuples: ("num", v), ("var", n), ("call", f, arg), ("index", e, i)…"""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise ExprError(f"condition {self.text!r} ends too early")
        token = self.tokens[self.pos]
        if expected is not None and token[1] != expected:
            raise ExprError(f"expected {expected!r}, found {token[1]!r} in {self.text!r}")
        self.pos += 1
        return token

    def parse(self) -> tuple[Any, ...]:
        node = self.disjunction()
        if self.pos != len(self.tokens):
            raise ExprError(f"unexpected {self.tokens[self.pos][1]!r} in {self.text!r}")
        return node

    def disjunction(self) -> tuple[Any, ...]:
        node = self.conjunction()
        while self.peek() in ("||", "or"):
            self.take()
            node = ("or", node, self.conjunction())
        return node

    def conjunction(self) -> tuple[Any, ...]:
        node = self.negation()
        while self.peek() in ("&&", "and"):
            self.take()
            node = ("and", node, self.negation())
        return node

    def negation(self) -> tuple[Any, ...]:
        if self.peek() in ("!", "not"):
            self.take()
            return ("not", self.negation())
        return self.comparison()

    def comparison(self) -> tuple[Any, ...]:
        node = self.additive()
        if self.peek() in _COMPARE:
            op = self.take()[1]
            node = ("cmp", op, node, self.additive())
        return node

    def additive(self) -> tuple[Any, ...]:
        node = self.multiplicative()
        while self.peek() in ("+", "-"):
            op = self.take()[1]
            node = ("arith", op, node, self.multiplicative())
        return node

    def multiplicative(self) -> tuple[Any, ...]:
        node = self.unary()
        while self.peek() in ("*", "/", "%"):
            op = self.take()[1]
            node = ("arith", op, node, self.unary())
        return node

    def unary(self) -> tuple[Any, ...]:
        if self.peek() == "-":
            self.take()
            return ("neg", self.unary())
        return self.postfix()

    def postfix(self) -> tuple[Any, ...]:
        node = self.primary()
        while self.peek() == "[":
            self.take("[")
            index = self.disjunction()
            self.take("]")
            node = ("index", node, index)
        return node

    def primary(self) -> tuple[Any, ...]:
        kind, value = self.take()
        if kind == "num":
            return ("num", float(value) if any(c in value for c in ".eE") else int(value))
        if value == "(":
            node = self.disjunction()
            self.take(")")
            return node
        if kind == "name":
            if value in ("true", "false"):
                return ("num", value == "true")
            if self.peek() == "(":
                if value not in _FUNCTIONS:
                    raise ExprError(f"unknown function {value!r} in {self.text!r}")
                self.take("(")
                arg = self.disjunction()
                self.take(")")
                return ("call", value, arg)
            return ("var", value)
        raise ExprError(f"unexpected {value!r} in {self.text!r}")


def parse(text: str) -> tuple[Any, ...]:
    """The syntax tree of a condition (raises ExprError if it is not in the supported subset)."""
    return _Parser(text).parse()


def _eval(node: tuple[Any, ...], env: dict[str, Any]) -> Any:
    tag = node[0]
    if tag == "num":
        return node[1]
    if tag == "var":
        if node[1] not in env:
            raise ExprError(f"unknown name {node[1]!r}")
        return env[node[1]]
    if tag == "or":
        return _truth(_eval(node[1], env)) or _truth(_eval(node[2], env))
    if tag == "and":
        return _truth(_eval(node[1], env)) and _truth(_eval(node[2], env))
    if tag == "not":
        return not _truth(_eval(node[1], env))
    if tag == "neg":
        return -_number(_eval(node[1], env))
    if tag == "cmp":
        return _COMPARE[node[1]](_number(_eval(node[2], env)), _number(_eval(node[3], env)))
    if tag == "arith":
        return _arith(node[1], _number(_eval(node[2], env)), _number(_eval(node[3], env)))
    if tag == "index":
        seq, index = _eval(node[1], env), _eval(node[2], env)
        if not isinstance(seq, list | tuple) or not isinstance(index, int) or isinstance(index, bool):
            raise ExprError("only a list can be indexed, by an integer")
        if not -len(seq) <= index < len(seq):
            raise ExprError(f"index out of range: {index} (len {len(seq)})")
        return seq[index]
    if tag == "call":
        arg = _eval(node[2], env)
        try:
            return _FUNCTIONS[node[1]](arg)
        except TypeError as exc:
            raise ExprError(f"{node[1]}({arg!r}): {exc}") from exc
    raise ExprError(f"cannot evaluate {tag}")


def _arith(op: str, left: float, right: float) -> float:
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if right == 0:
        if op == "%":
            raise ExprError("modulo by zero")
        return math.copysign(math.inf, left) if left else math.nan
    return left / right if op == "/" else left % right


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExprError(f"{value!r} is not a number")
    return value


def _truth(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ExprError(f"{value!r} is not a boolean")
    return value


def evaluate(condition: str, result: Any) -> bool:
    """Evaluate ``condition`` with ``result`` bound; it must yield a boolean (expr's AsBool)."""
    value = _eval(parse(condition), {"result": result})
    if not isinstance(value, bool):
        raise ExprError(f"condition {condition!r} gave {value!r}, not a boolean")
    return value
