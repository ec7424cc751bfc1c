"""A small arithmetic expression of one variable, `step`: LambdaLR's lr_lambda in a description.

    lr_lambda = "1 / (1 + 0.01 * step)"        lr_lambda = "max(0.05, 1 - step / 200)"

What is evaluated is only this grammar, parsed here (no eval(), no attribute access, no names
beyond these):

    expr   := term (("+" | "-") term)*
    term   := unary (("*" | "/") unary)*
    unary  := ("-" | "+") unary | power
    power  := atom (("^" | "**") unary)?        right-associative: 2 ^ 3 ^ 2 = 2 ^ 9; -2 ^ 2 = -4
    atom   := number | "step" | "pi" | "e" | function "(" expr ("," expr)* ")" | "(" expr ")"

with the functions min and max (two or more arguments) and exp, log, sqrt, cos, sin, floor, ceil
(one). Numbers are decimal (1, 0.5, .5, 1e-3). A malformed expression raises ExpressionError
with the 1-based position of the fault; a value that is not a finite real number (a division by
zero, log of a negative number) raises it with the step at which it happened.
"""
import math
import re

FUNCTIONS = {"exp": math.exp, "log": math.log, "sqrt": math.sqrt, "cos": math.cos, "sin": math.sin,
             "floor": math.floor, "ceil": math.ceil, "min": min, "max": max}
CONSTANTS = {"pi": math.pi, "e": math.e}
VARIABLE = "step"
TOKEN = re.compile(r"\s*(?:(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_]\w*)"
                   r"|(?P<op>\*\*|[-+*/^(),]))")


class ExpressionError(ValueError):
    """A malformed expression (with `position`, 1-based) or a value it cannot take (with `step`)."""

    def __init__(self, message, position=None, step=None):
        super().__init__(message)
        self.position, self.step = position, step


def tokens(text):
    """[(kind, value, position)] of `text`, ending in ("end", None, len + 1), or at the first
    character that starts no token in ("bad", that character, its position)."""
    out, at = [], 0
    while at < len(text):
        if text[at:].strip() == "":
            break
        m = TOKEN.match(text, at)
        if not m:  # a character of no token: the parser refuses it when it gets there (a fault before it first)
            skip = len(text[at:]) - len(text[at:].lstrip())
            return out + [("bad", text[at + skip], at + skip + 1)]
        kind = m.lastgroup
        out.append((kind, m.group(kind), m.start(kind) + 1))
        at = m.end()
    return out + [("end", None, len(text) + 1)]


class Parser:
    """Recursive descent over tokens(text), building a tree of tuples:
    ("num", x), ("var",), ("neg", a), (op, a, b) for op in + - * / ^, ("call", name, [args])."""

    def __init__(self, text):
        self.toks, self.i = tokens(text), 0

    def peek(self):
        return self.toks[self.i]

    def take(self):
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, op):
        kind, value, pos = self.take()
        if value != op or kind != "op":
            raise ExpressionError(f"expected {op!r}, got {describe(kind, value)}", pos)

    def parse(self):
        tree = self.expr()
        kind, value, pos = self.peek()
        if kind != "end":
            raise ExpressionError(f"unexpected {describe(kind, value)}", pos)
        return tree

    def binary(self, ops, operand):
        tree = operand()
        while self.peek()[0] == "op" and self.peek()[1] in ops:
            op = self.take()[1]
            tree = (op, tree, operand())
        return tree

    def expr(self):
        return self.binary(("+", "-"), self.term)

    def term(self):
        return self.binary(("*", "/"), self.unary)

    def unary(self):
        kind, value, _ = self.peek()
        if kind == "op" and value in ("-", "+"):
            self.take()
            operand = self.unary()
            return ("neg", operand) if value == "-" else operand
        return self.power()

    def power(self):
        base = self.atom()
        if self.peek()[0] == "op" and self.peek()[1] in ("^", "**"):
            self.take()
            return ("^", base, self.unary())
        return base

    def atom(self):
        kind, value, pos = self.take()
        if kind == "number":
            return ("num", float(value))
        if kind == "op" and value == "(":
            tree = self.expr()
            self.expect(")")
            return tree
        if kind == "name":
            if value == VARIABLE:
                return ("var",)
            if value in CONSTANTS:
                return ("num", CONSTANTS[value])
            if value in FUNCTIONS:
                return self.call(value, pos)
            raise ExpressionError(f"unknown name {value!r} (only {VARIABLE}, {', '.join(CONSTANTS)} and the"
                                  f" functions {', '.join(FUNCTIONS)})", pos)
        raise ExpressionError(f"expected a number, {VARIABLE}, a function or '(', got {describe(kind, value)}", pos)

    def call(self, name, pos):
        self.expect("(")
        args = [self.expr()]
        while self.peek()[:2] == ("op", ","):
            self.take()
            args.append(self.expr())
        self.expect(")")
        wanted = "two or more" if name in ("min", "max") else "one"
        if (len(args) < 2) if name in ("min", "max") else (len(args) != 1):
            raise ExpressionError(f"{name} takes {wanted} argument(s), got {len(args)}", pos)
        return ("call", name, args)


def describe(kind, value):
    return "the end" if kind == "end" else f"character {value!r}" if kind == "bad" else repr(value)


def evaluate(tree, step):
    """The value of a parsed tree at `step` (a Python float; errors propagate)."""
    op = tree[0]
    if op == "num":
        return tree[1]
    if op == "var":
        return float(step)
    if op == "neg":
        return -evaluate(tree[1], step)
    if op == "call":
        return float(FUNCTIONS[tree[1]](*(evaluate(a, step) for a in tree[2])))
    a, b = evaluate(tree[1], step), evaluate(tree[2], step)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return a / b
    return a ** b


class Expression:
    """A parsed expression of `step`, called as f(step) -> float: LambdaLR's lr_lambda on both
    sides. Raises ExpressionError where the text is malformed (at construction) or the value is
    not a finite real number (at the call)."""

    def __init__(self, text):
        if not isinstance(text, str):
            raise ExpressionError(f"expected a string, got {type(text).__name__}", 1)
        self.text, self.tree = text, Parser(text).parse()

    def __call__(self, step):
        try:
            value = evaluate(self.tree, step)
        except (ArithmeticError, ValueError) as e:  # ZeroDivisionError, OverflowError, math domain error
            raise ExpressionError(f"at step {step}: {e}", step=step) from None
        if isinstance(value, complex) or not math.isfinite(value):
            raise ExpressionError(f"at step {step}: the value is {value}, not a finite real number", step=step)
        return value

    def __repr__(self):
        return f"Expression({self.text!r})"
