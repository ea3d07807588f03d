"""lme4/brms formula text to a small `Formula` object (pipeline step 1).

The fixed part and the expressions inside random terms are left as text for formulaic to evaluate;
only the random-term layer (`(expr | g)`, `(expr || g)`, `g1/g2`, `g1:g2`), brms's response
additions (`y | se(s)`, `y | weights(w)`, `y | trials(n)`), `offset(expr)` terms and lme4's
`cbind(successes, failures)` response are parsed here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

import formulaic

from .errors import FormulaError, point_at

_NAME = r"(?:[^\W\d]|\.)[\w.]*"
_GROUP_RE = re.compile(rf"^\s*{_NAME}(\s*[:/]\s*{_NAME})*\s*$")
_ADDITION_RE = re.compile(rf"^\s*(se|weights|trials)\s*\(\s*({_NAME})\s*(?:,[^)]*)?\)\s*$")
_OFFSET_RE = re.compile(r"^\s*offset\s*\((.*)\)\s*$", re.S)
_CBIND_RE = re.compile(r"^\s*cbind\s*\((.*)\)\s*$", re.S)


@dataclass(frozen=True)
class RandomTerm:
    """One random-effects term: the model expression varies by the levels of `group`."""

    expr: str
    group: str
    correlated: bool = True

    def __str__(self) -> str:
        bar = "|" if self.correlated else "||"
        return f"({self.expr} {bar} {self.group})"

    @property
    def group_factors(self) -> tuple[str, ...]:
        """The data columns whose interaction forms the grouping factor."""
        return tuple(part.strip() for part in self.group.split(":"))


@dataclass(frozen=True)
class Formula:
    """A parsed mixed-model formula: response, fixed-part text, random terms, brms additions."""

    response: str
    fixed: str
    random: tuple[RandomTerm, ...] = ()
    se: str | None = None
    weights: str | None = None
    text: str = field(default="", compare=False)
    trials: str | None = None
    offsets: tuple[str, ...] = ()

    def __str__(self) -> str:
        lhs = self.response
        adds = [f"{name}({value})" for name, value in (("se", self.se), ("weights", self.weights), ("trials", self.trials)) if value]
        if adds:
            lhs += " | " + " + ".join(adds)
        rhs = " + ".join([self.fixed] + [f"offset({o})" for o in self.offsets] + [str(t) for t in self.random])
        return f"{lhs} ~ {rhs}"

    @property
    def groups(self) -> tuple[str, ...]:
        """Grouping factors in order of first appearance, as written (e.g. ``"batch:cask"``)."""
        seen: dict[str, None] = {}
        for term in self.random:
            seen.setdefault(term.group, None)
        return tuple(seen)


def parse(text: str) -> Formula:
    """Parse lme4/brms formula text; raise `FormulaError` pointing at the problem."""
    if not isinstance(text, str):
        raise FormulaError(f"the formula must be a string such as 'y ~ x + (1 | g)', not {type(text).__name__}")
    return _parse_cached(text)


@lru_cache(maxsize=256)
def _parse_cached(text: str) -> Formula:
    _check_parentheses(text)
    tildes = [i for i, d in _top_level(text) if text[i] == "~" and d == 0]
    if not tildes:
        raise FormulaError(
            "the formula has no '~': write the response on the left, e.g. 'Reaction ~ Days + (Days | Subject)'"
        )
    if len(tildes) > 1:
        raise FormulaError("the formula has more than one '~' at position %d:\n%s" % (tildes[1], point_at(text, tildes[1])))
    cut = tildes[0]
    response, additions = _parse_lhs(text, cut)
    fixed_parts: list[str] = []
    random: list[RandomTerm] = []
    offsets: list[str] = []
    for start, sign, segment in _split_rhs(text, cut + 1):
        offset = _OFFSET_RE.match(segment)
        if offset:
            if sign == "-":
                raise FormulaError(f"an offset cannot be subtracted (position {start}):\n{point_at(text, start)}")
            offsets.append(_check_expression(offset.group(1), text, start))
            continue
        term = _random_term(text, start, segment)
        if term is None:
            fixed_parts.append((sign + " " if sign == "-" or fixed_parts else "") + segment.strip())
            continue
        if sign == "-":
            raise FormulaError(f"a random term cannot be subtracted (position {start}):\n{point_at(text, start)}")
        random.extend(term)
    fixed = _normalise_fixed(" ".join(fixed_parts), text, cut + 1)
    _check_duplicate_fixed(fixed_parts, text)
    _check_duplicates(random, text)
    return Formula(response, fixed, tuple(random), additions.get("se"), additions.get("weights"), text,
                   additions.get("trials"), tuple(offsets))


def _top_level(text: str):
    """Yield (index, depth) for every character, depth counted in round brackets."""
    depth = 0
    for i, ch in enumerate(text):
        if ch == "(":
            yield i, depth
            depth += 1
        elif ch == ")":
            depth -= 1
            yield i, depth
        else:
            yield i, depth


def _check_parentheses(text: str) -> None:
    opened: list[int] = []
    for i, ch in enumerate(text):
        if ch == "(":
            opened.append(i)
        elif ch == ")":
            if not opened:
                raise FormulaError(f"unmatched ')' at position {i}:\n{point_at(text, i)}")
            opened.pop()
    if opened:
        raise FormulaError(f"'(' at position {opened[-1]} is never closed:\n{point_at(text, opened[-1])}")


def _parse_lhs(text: str, cut: int) -> tuple[str, dict[str, str]]:
    """The response and brms's additions after '|' (name -> column)."""
    lhs = text[:cut]
    if not lhs.strip():
        raise FormulaError(f"the formula has no response before '~':\n{point_at(text, cut)}")
    bars = [i for i, d in _top_level(lhs) if lhs[i] == "|" and d == 0]
    if not bars:
        return _check_response(lhs, text), {}
    response = _check_response(lhs[: bars[0]], text)
    additions = {}
    rest = lhs[bars[0] + 1 :]
    for part in rest.split("+"):
        match = _ADDITION_RE.match(part)
        if not match:
            pos = bars[0] + 1
            raise FormulaError(
                "after '|' in the response only brms's se(column) or weights(column), and trials(column) for a "
                "binomial model, are understood:\n" + point_at(text, pos)
            )
        additions[match.group(1)] = match.group(2)
    return response, additions


def _check_response(expr: str, text: str) -> str:
    """A response expression, or lme4's cbind(successes, failures) with both parts checked."""
    parts = cbind_parts(expr)
    if parts is None:
        return _check_expression(expr, text, 0)
    for part in parts:
        _check_expression(part, text, text.index("cbind"))
    return expr.strip()


def cbind_parts(response: str) -> tuple[str, str] | None:
    """(successes, failures) of a 'cbind(s, f)' response; None for any other response."""
    match = _CBIND_RE.match(response)
    if match is None:
        return None
    inner = match.group(1)
    commas = [i for i, d in _top_level(inner) if inner[i] == "," and d == 0]
    if len(commas) != 1:
        raise FormulaError(f"cbind() in the response takes two columns, successes and failures: '{response.strip()}'")
    return inner[: commas[0]].strip(), inner[commas[0] + 1 :].strip()


def _split_rhs(text: str, offset: int) -> list[tuple[int, str, str]]:
    """(position, sign, segment) for each top-level '+'/'-' separated piece of the right side."""
    pieces: list[tuple[int, str, str]] = []
    sign, start, depth = "+", offset, 0
    for i in range(offset, len(text) + 1):
        ch = text[i] if i < len(text) else None
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch is None or (depth == 0 and ch in "+-" and not _is_exponent_sign(text, i)):
            segment = text[start:i]
            if segment.strip():
                pieces.append((start, sign, segment))
            elif not (ch == "-" and not pieces and sign == "+"):  # only a leading unary minus may follow nothing
                raise FormulaError(f"a term is missing at position {start}:\n{point_at(text, start)}")
            if ch is not None:
                sign, start = ch, i + 1
    return pieces


def _is_exponent_sign(text: str, i: int) -> bool:
    """True for the sign in a number like 1e-5."""
    return i >= 2 and text[i - 1] in "eE" and text[i - 2].isdigit() and i + 1 < len(text) and text[i + 1].isdigit()


def _random_term(text: str, start: int, segment: str) -> list[RandomTerm] | None:
    """Parse '(expr | group)'; None if the segment is not a random term."""
    stripped = segment.strip()
    lead = start + len(segment) - len(segment.lstrip())
    if not (stripped.startswith("(") and stripped.endswith(")")):
        if "|" in stripped:
            pos = lead + stripped.index("|")
            raise FormulaError(
                "a random term must be written in brackets, e.g. '(1 | group)':\n" + point_at(text, pos)
            )
        return None
    inner = stripped[1:-1]
    depth = 0
    for j, ch in enumerate(inner):
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            return None  # '(a) + (b)' style: not one bracket around the whole segment
    bars = [j for j, d in _top_level(inner) if inner[j] == "|" and d == 0]
    if not bars:
        if "|" in inner:
            raise FormulaError(f"a random term must not be nested in brackets:\n{point_at(text, lead)}")
        return None
    correlated = True
    bar = bars[0]
    if len(bars) == 2 and bars[1] == bar + 1:
        correlated = False
    elif len(bars) > 1:
        raise FormulaError(f"a random term has more than one '|':\n{point_at(text, lead + 1 + bars[1])}")
    expr = inner[:bar].strip()
    group = inner[bar + (1 if correlated else 2) :]
    if not expr:
        raise FormulaError(
            f"the random term has nothing before '|' (write '1 | g' for a random intercept):\n{point_at(text, lead + 1)}"
        )
    if not _GROUP_RE.match(group):
        pos = lead + 1 + bar + (1 if correlated else 2)
        raise FormulaError(
            "after '|' write the grouping factor: a column name, 'g1:g2' for their interaction or "
            f"'g1/g2' for nesting:\n{point_at(text, pos)}"
        )
    expr = _check_expression(expr, text, lead + 1)
    groups = _expand_nesting(group)
    exprs = [expr] if correlated else _split_uncorrelated(expr)
    return [RandomTerm(e, g, correlated) for g in groups for e in exprs]


def _expand_nesting(group: str) -> list[str]:
    """'a/b/c' -> ['a', 'a:b', 'a:b:c']; 'a:b' stays one factor."""
    parts = [p.strip() for p in group.split("/")]
    parts = [":".join(x.strip() for x in p.split(":")) for p in parts]
    return [":".join(parts[: i + 1]) for i in range(len(parts))]


def _split_uncorrelated(expr: str) -> list[str]:
    """'1 + x + z' under '||' -> ['1', '0 + x', '0 + z'] (lme4's expansion, by formula term)."""
    terms = [str(t) for t in _terms(expr)]
    out = []
    for t in terms:
        out.append("1" if t == "1" else f"0 + {t}")
    return out


def _terms(expr: str) -> list:
    try:
        return list(formulaic.Formula(_to_python_power(expr)))
    except Exception as exc:  # formulaic's own parse errors become ours
        raise FormulaError(f"cannot read the expression '{expr}': {_plain(exc)}") from None


_DOT = re.compile(r"(?<![\w.'\"])\.(?![\w.'\"])")


def _check_expression(expr: str, text: str, pos: int) -> str:
    """Validate an expression with formulaic's parser and return it stripped."""
    expr = expr.strip()
    if not expr:
        raise FormulaError(f"an expression is missing:\n{point_at(text, pos)}")
    if _DOT.search(expr):
        raise FormulaError(
            "'.' (R's 'every other column') is not supported: name the predictors, e.g. 'y ~ x1 + x2 + (1 | g)'"
            f"\n{point_at(text, _DOT.search(text, pos).start())}"
        )
    try:
        formulaic.Formula(_to_python_power(expr))
    except Exception as exc:
        raise FormulaError(f"cannot read '{expr}' at position {pos}: {_plain(exc)}\n{point_at(text, pos)}") from None
    return expr


def _normalise_fixed(fixed: str, text: str, pos: int) -> str:
    fixed = fixed.strip()
    if not fixed:
        return "1"
    if fixed.startswith("+"):
        fixed = fixed[1:].strip()
    if fixed.startswith("-"):
        fixed = "1 " + fixed
    return _check_expression(fixed, text, pos)


def _check_duplicate_fixed(parts: list[str], text: str) -> None:
    """The same fixed term written twice ('x + x') is a slip; terms implied twice ('a*b + a') are not."""
    seen = set()
    for part in parts:
        key = part.replace(" ", "")
        key = key if key[0] in "+-" else "+" + key
        if key in seen:
            raise FormulaError(f"the fixed term '{part.lstrip('+-').strip()}' appears twice in '{text}': remove one")
        seen.add(key)


def _check_duplicates(random: list[RandomTerm], text: str) -> None:
    seen = set()
    for term in random:
        key = (term.expr.replace(" ", ""), term.group.replace(" ", ""))
        if key in seen:
            raise FormulaError(f"the random term {term} appears twice in '{text}': remove one")
        seen.add(key)


def _to_python_power(expr: str) -> str:
    """R's '^' inside I() means power; formulaic wants '**'."""
    return expr.replace("^", "**")


def _plain(exc: Exception) -> str:
    """First line of a library error, without terminal colour codes."""
    msg = re.sub(r"\x1b\[[0-9;]*m|⧛|⧚", "", str(exc))
    return msg.strip().splitlines()[0] if msg.strip() else type(exc).__name__
