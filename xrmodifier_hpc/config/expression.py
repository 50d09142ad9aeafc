"""Source-model expressions as text: the native product grammar and XSPEC's wider one.

The native backend evaluates products of components written as in XSPEC (``wabs*bremss``,
``wabs(bremss)``, ``mtable{tbabs.fits}*atable{apec.fits}``); :func:`split_product` turns such
an expression into its terms (component name and the ``{...}`` argument), checking the
syntax only. Which names exist and what they compute is the physics layer's business
(``physics.spectra.parse_model``, through ``registry.SOURCE_COMPONENTS``).

The XSPEC backend accepts any expression XSPEC accepts (sums, convolutions, mixing models:
``tbabs*(apec+gaussian)``); :func:`check_xspec_syntax` only refuses what cannot be an XSPEC
expression (unbalanced brackets, characters XSPEC's parser never takes). XSPEC itself judges
the rest (``xrmodifier check`` asks it where PyXspec imports). Syntax of both: XSPEC manual,
"model" command (heasarc.gsfc.nasa.gov/xanadu/xspec/manual/XSmodel.html).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xrmodifier_hpc.errors import UserError

_TOKEN = re.compile(
    r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\{(?P<arg>[^{}]*)\})?|(?P<op>[*()]))"
)
#: the table-model components, whose ``{...}`` argument is a FITS file
TABLE_COMPONENTS = ("atable", "mtable", "etable")
_TABLE_TERM = re.compile(r"\b(atable|mtable|etable)\{([^}]*)\}")
#: characters an XSPEC model expression may hold outside ``{file}`` arguments
_XSPEC_CHARS = re.compile(r"[A-Za-z0-9_*+()\s.<>]*")


class ExpressionError(UserError):
    """A model expression that is not valid text (syntax, not physics)."""


@dataclass(frozen=True)
class Term:
    """One factor of a product expression.

    Parameters
    ----------
    name : str
        The component name as written (``wabs``, ``atable``).
    arg : str or None
        The text inside ``{...}`` after the name (a table file, a variant), stripped; None
        when the name has no braces.
    """

    name: str
    arg: str | None = None


def split_product(expression: str) -> tuple[Term, ...]:
    """Split a product expression (``a*b``, ``a(b)``, ``(a*b)*c``) into its terms.

    Parameters
    ----------
    expression : str
        The model expression.

    Returns
    -------
    tuple of Term
        The factors, left to right.

    Raises
    ------
    ExpressionError
        Empty text, bad syntax, unbalanced parentheses, a sum (``+``: not a product).
    """
    if not isinstance(expression, str) or not expression.strip():
        raise ExpressionError("the model expression is empty")
    terms: list[Term] = []
    pos, depth, expect_factor = 0, 0, True
    text = expression.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            rest = text[pos:].strip()
            hint = " (sums of components are not supported)" if rest.startswith("+") else ""
            raise ExpressionError(f"bad syntax at {rest!r} in {expression!r}{hint}")
        pos = m.end()
        if m.group("name"):
            if not expect_factor:
                raise ExpressionError(f"missing '*' before {m.group('name')!r} in {expression!r}")
            arg = m.group("arg")
            terms.append(Term(m.group("name"), None if arg is None else arg.strip()))
            expect_factor = False
        elif m.group("op") == "*":
            if expect_factor:
                raise ExpressionError(
                    f"bad syntax: '*' without a component before it in {expression!r}"
                )
            expect_factor = True
        elif m.group("op") == "(":
            depth += 1
            expect_factor = True  # XSPEC writes wabs(bremss) for wabs*bremss
        else:
            depth -= 1
            if depth < 0 or expect_factor:
                raise ExpressionError(f"unbalanced or empty parentheses in {expression!r}")
    if depth != 0 or expect_factor:
        raise ExpressionError(f"incomplete expression {expression!r}")
    return tuple(terms)


def table_files(expression: str) -> tuple[tuple[str, str], ...]:
    """Return the ``(kind, file)`` pairs of the table-model terms of any expression.

    Table-model terms are ``atable{f}``, ``mtable{f}`` and ``etable{f}``; the expression may
    be native or XSPEC.

    Parameters
    ----------
    expression : str
        The model expression.

    Returns
    -------
    tuple of tuple of str
        ``(kind, file)`` pairs in order of appearance, the file text as written, stripped.
    """
    return tuple((m.group(1), m.group(2).strip()) for m in _TABLE_TERM.finditer(expression))


def check_xspec_syntax(expression: str) -> None:
    """Refuse text that cannot be an XSPEC model expression.

    Parameters
    ----------
    expression : str
        The expression for the XSPEC backend (``tbabs*(apec+gaussian)``,
        ``phabs*atable{apec.fits}``).

    Raises
    ------
    ExpressionError
        Empty text, unbalanced ``()`` or ``{}``, a ``{}`` without a file, or characters
        outside XSPEC's expression grammar (names, numbers, ``* + ( ) < >``).
    """
    if not isinstance(expression, str) or not expression.strip():
        raise ExpressionError("the model expression is empty")
    outside, depth_brace = [], 0
    for ch in expression:
        if ch == "{":
            depth_brace += 1
            if depth_brace > 1:
                raise ExpressionError(f"nested '{{' in {expression!r}")
            continue
        if ch == "}":
            depth_brace -= 1
            if depth_brace < 0:
                raise ExpressionError(f"unbalanced '}}' in {expression!r}")
            outside.append(" ")
            continue
        if depth_brace == 0:
            outside.append(ch)
    if depth_brace:
        raise ExpressionError(f"unbalanced '{{' in {expression!r}")
    bare = "".join(outside)
    if not _XSPEC_CHARS.fullmatch(bare):
        bad = sorted({c for c in bare if not _XSPEC_CHARS.fullmatch(c)})
        raise ExpressionError(
            f"{expression!r} is not an XSPEC model expression (unexpected {''.join(bad)!r})"
        )
    depth = 0
    for ch in bare:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            break
    if depth != 0:
        raise ExpressionError(f"unbalanced parentheses in {expression!r}")
    for kind, file in table_files(expression):
        if not file:
            raise ExpressionError(f"{kind} needs a file: {kind}{{path.fits}} in {expression!r}")
    if not re.search(r"[A-Za-z]", bare):
        raise ExpressionError(f"{expression!r} names no model component")
