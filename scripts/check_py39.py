"""Fail on Python source that Python 3.9 cannot run, in the cases vermin does not see.

run-tests.sh runs vermin (``--target=3.9-``) for library APIs and most new syntax; this adds:
- syntax the 3.9 grammar rejects, by parsing with ``feature_version=(3, 9)`` (match, except*);
- parenthesized context managers, ``with (a as x, b as y):`` (3.10), which neither catches;
- ``X | Y`` in annotations that 3.9 evaluates at definition time (module, class and function
  signatures without ``from __future__ import annotations``).

Usage: python scripts/check_py39.py FILE... ; exit 1 when a file has a problem, printing
``path:line: what`` for each.
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from typing import Iterator, List, Tuple

Problem = Tuple[int, str]


def _parenthesized_with_items(source: str) -> Iterator[Problem]:
    """Yield ``with (... as ...):`` where the parentheses hold the whole item list."""
    tokens = [
        tok
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT)
    ]
    for index, tok in enumerate(tokens[:-1]):
        if tok.type != tokenize.NAME or tok.string != "with" or tokens[index + 1].string != "(":
            continue
        depth = 0
        has_as = False
        for position in range(index + 1, len(tokens)):
            inner = tokens[position]
            if inner.type == tokenize.OP and inner.string in ("(", "[", "{"):
                depth += 1
            elif inner.type == tokenize.OP and inner.string in (")", "]", "}"):
                depth -= 1
                if depth == 0:
                    follows = tokens[position + 1].string if position + 1 < len(tokens) else ""
                    if has_as and follows == ":":
                        yield tok.start[0], "parenthesized context managers need Python 3.10"
                    break
            elif depth == 1 and inner.type == tokenize.NAME and inner.string == "as":
                has_as = True


def _has_union(annotation: ast.AST | None) -> bool:
    return annotation is not None and any(
        isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr)
        for node in ast.walk(annotation)
    )


def _evaluated_union_annotations(tree: ast.Module) -> Iterator[Problem]:
    """Yield annotations with ``|`` that 3.9 evaluates (no postponed evaluation)."""
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            if any(alias.name == "annotations" for alias in node.names):
                return
    message = (
        "'X | Y' in an evaluated annotation needs Python 3.10"
        " (add 'from __future__ import annotations')"
    )
    for node in ast.walk(tree):
        annotations: List[ast.AST | None] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args
            every = arguments.posonlyargs + arguments.args + arguments.kwonlyargs
            every += [arg for arg in (arguments.vararg, arguments.kwarg) if arg is not None]
            annotations = [arg.annotation for arg in every] + [node.returns]
        elif isinstance(node, ast.AnnAssign):
            annotations = [node.annotation]
        for annotation in annotations:
            if _has_union(annotation):
                yield annotation.lineno, message


def problems(source: str, filename: str = "<source>") -> List[Problem]:
    """Return (line, message) for each construct in ``source`` that Python 3.9 cannot run."""
    try:
        tree = ast.parse(source, filename, feature_version=(3, 9))
    except SyntaxError as error:
        return [(error.lineno or 0, f"not Python 3.9 syntax: {error.msg}")]
    found = list(_parenthesized_with_items(source)) + list(_evaluated_union_annotations(tree))
    return sorted(found)


def main(argv: List[str]) -> int:
    failed = False
    for path in argv:
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
        for line, message in problems(source, path):
            print(f"{path}:{line}: {message}")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
