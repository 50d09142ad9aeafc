"""Every public function, method and class of the package carries numpydoc sections.

A public callable (name without a leading underscore, in a module without one, not a property
or a dunder) that takes arguments has a ``Parameters`` section naming each of them; one that
returns a value (annotation other than ``None``) has ``Returns`` (or ``Yields``); one whose body
raises has ``Raises``. Classes document their constructor arguments (``Parameters`` or, for
dataclasses, ``Attributes``/``Parameters``). Run: ``python tools/check_docstrings.py [PATH ...]``;
exit status 1 lists the offenders as ``file:line: name: what is missing``.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

SECTION = re.compile(
    r"^\s*(Parameters|Returns|Yields|Raises|Attributes|Other Parameters)\s*\n\s*-{3,}", re.M
)


def _sections(doc: str) -> dict[str, str]:
    found: dict[str, str] = {}
    marks = list(SECTION.finditer(doc))
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(doc)
        found[m.group(1)] = doc[m.end() : end]
    return found


def _documented(block: str) -> set[str]:
    names: set[str] = set()
    for line in block.splitlines():
        m = re.match(
            r"^\s{0,8}(\*{0,2}[A-Za-z_][\w]*(?:\s*,\s*\*{0,2}[A-Za-z_]\w*)*)\s*(:|$)", line
        )
        if m and not line.startswith(" " * 9):
            for part in m.group(1).split(","):
                names.add(part.strip().lstrip("*"))
    return names


def _args(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    if a.vararg:
        names.append(a.vararg.arg)
    if a.kwarg:
        names.append(a.kwarg.arg)
    return [n for n in names if n not in ("self", "cls")]


def _raises(fn: ast.AST) -> bool:
    for node in ast.walk(fn):
        if isinstance(node, ast.Raise) and node.exc is not None:
            # a re-raise inside an except clause does not count
            return True
        if node is not fn and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
    return False


def _returns_value(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    ann = fn.returns
    if ann is None:
        return False
    text = ast.unparse(ann)
    return text not in ("None", "NoReturn", "Never")


def _is_property(fn: ast.AST) -> bool:
    for dec in getattr(fn, "decorator_list", []):
        text = ast.unparse(dec)
        if text in ("property", "cached_property", "functools.cached_property") or text.endswith(
            (".setter", ".getter")
        ):
            return True
    return False


def _is_overload_or_abstract_stub(fn: ast.AST) -> bool:
    decs = {ast.unparse(d) for d in getattr(fn, "decorator_list", [])}
    return "overload" in decs or "typing.overload" in decs


def check_function(fn, where: str, problems: list[str], is_init_owner: str | None = None) -> None:
    doc = ast.get_docstring(fn) or ""
    name = fn.name
    if not doc:
        problems.append(f"{where}:{fn.lineno}: {name}: no docstring")
        return
    sections = _sections(doc)
    args = _args(fn)
    if args:
        block = sections.get("Parameters", "") + sections.get("Other Parameters", "")
        if not block:
            problems.append(f"{where}:{fn.lineno}: {name}: no Parameters section")
        else:
            missing = [a for a in args if a not in _documented(block)]
            if missing:
                problems.append(
                    f"{where}:{fn.lineno}: {name}: Parameters lacks {', '.join(missing)}"
                )
    if _returns_value(fn) and not ("Returns" in sections or "Yields" in sections):
        problems.append(f"{where}:{fn.lineno}: {name}: no Returns section")
    if _raises(fn) and "Raises" not in sections:
        problems.append(f"{where}:{fn.lineno}: {name}: raises but has no Raises section")


def check_file(path: Path, problems: list[str]) -> None:
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if not node.name.startswith("_") and not _is_overload_or_abstract_stub(node):
                check_function(node, str(path), problems)
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            if not ast.get_docstring(node):
                problems.append(f"{path}:{node.lineno}: {node.name}: no docstring")
            for item in node.body:
                if not isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                if item.name.startswith("_") or _is_property(item):
                    continue
                if _is_overload_or_abstract_stub(item):
                    continue
                check_function(item, f"{path}", problems)


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p) for p in (argv if argv else ["xrmodifier_hpc"])]
    files: list[Path] = []
    for p in paths:
        files.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    problems: list[str] = []
    for f in files:
        if any(part.startswith("_") and part != "__init__.py" for part in f.parts):
            continue
        check_file(f, problems)
    for line in problems:
        print(line)
    if problems:
        print(f"{len(problems)} docstring problems", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
