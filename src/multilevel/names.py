"""Parameter names both ways: brms's (`b_Days`, `sd_Subject__Intercept`, `cor_Subject__Intercept__Days`,
`r_Subject[308,Days]`) and lme4's (`sd_(Intercept)|Subject`, `cor_Days.(Intercept)|Subject`), made in one place
so that frequentist and Bayesian tables, saved files and comparisons line up.

>>> fixed_name("(Intercept)"), sd_name("Subject", "Days"), cor_name("Subject", "(Intercept)", "Days")
('b_Intercept', 'sd_Subject__Days', 'cor_Subject__Intercept__Days')
>>> lme4_sd_name("Subject", "Days"), lme4_cor_name("Subject", "(Intercept)", "Days")
('sd_Days|Subject', 'cor_Days.(Intercept)|Subject')
"""

from __future__ import annotations


def brms_coef(name: str) -> str:
    """lme4 coefficient name to brms's ('(Intercept)' -> 'Intercept')."""
    return "Intercept" if name == "(Intercept)" else name


def fixed_name(coef: str) -> str:
    return f"b_{brms_coef(coef)}"


def sd_name(group: str, coef: str) -> str:
    return f"sd_{group}__{brms_coef(coef)}"


def cor_name(group: str, first: str, second: str) -> str:
    return f"cor_{group}__{brms_coef(first)}__{brms_coef(second)}"


def group_effect_name(group: str, level, coef: str) -> str:
    return f"r_{group}[{level},{brms_coef(coef)}]"


def lme4_sd_name(group: str, coef: str) -> str:
    """lme4's confint row name of an SD."""
    return f"sd_{coef}|{group}"


def lme4_cor_name(group: str, first: str, second: str) -> str:
    """lme4's confint row name of a correlation (the later coefficient first, as lme4 prints it)."""
    return f"cor_{second}.{first}|{group}"


def pairs(k: int) -> list[tuple[int, int]]:
    """Index pairs (a, c), a < c, of a k x k correlation matrix in brms's order."""
    return [(a, c) for a in range(k) for c in range(a + 1, k)]


def variance_names(block, style: str = "brms") -> tuple[list[str], list[tuple[int, int, str]]]:
    """A random term's SD names and its (a, c, name) correlation entries, brms's or lme4's style."""
    sd, cor = (sd_name, cor_name) if style == "brms" else (lme4_sd_name, lme4_cor_name)
    coefs = block.coef_names
    return [sd(block.group, c) for c in coefs], [(a, c, cor(block.group, coefs[a], coefs[c])) for a, c in pairs(len(coefs))]


def interaction_parts(name: str) -> list[str]:
    """The factors of an interaction column's name, split at ':' outside brackets ('x:I(a:b)' -> ['x', 'I(a:b)'])."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(name):
        depth += ch in "(["
        depth -= ch in ")]"
        if ch == ":" and depth == 0:
            parts.append(name[start:i])
            start = i + 1
    parts.append(name[start:])
    return parts
