"""The library's messages name Python parameters (``workers=0``), never command-line flags: a user of
:mod:`geoseg.api` passed no flags. Only :mod:`geoseg.cli` turns parameters into flags (one table)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import geoseg

PACKAGE = Path(geoseg.__file__).parent
# a long flag (``--tile``), or a short one (``-n 4``): a letter after a dash that starts the message or
# follows a space or a quote, then a space (a negative number such as ``-1`` is no flag)
FLAG = re.compile(r"(?<![\w-])--[a-z]|(?:^|(?<=[\s'\"(]))-[a-zA-Z](?=\s)")
# Flags of other programs, which a message may quote as they are.
OTHER_PROGRAMS = ("gdal_calc.py", "gdaladdo", "pip install")
# Text written into outputs, not raised or warned: the training record (card), ``info``'s description of a
# model, an ONNX export's metadata and the curves picture. Changing them changes output bytes.
RECORDS = (
    "onnx (no geoseg card: predict needs --card or --preset)",
    "no (--aoi not given): only pixels under a label polygon are used",
    "every pixel touched (--all-touched)",
    "--priority {}, then the smaller polygon",
    "foreign (needs --preset or --card)",
    "no validation data\n(pass --val-images/--val-labels or --val-fraction)",
    "--scale auto: 2-98 percentile of the training images' valid pixels",
    "--scale",
)


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _flag_strings(path: Path) -> list[str]:
    """Every string this module could show a user (each constant, f-string parts joined) naming a flag."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree)
    inside_fstrings = {
        id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values
    }
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(p.value if isinstance(p, ast.Constant) else "{}" for p in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in skip or id(node) in inside_fstrings:
                continue
            text = node.value
        else:
            continue
        if text in RECORDS or any(program in text for program in OTHER_PROGRAMS):
            continue
        if FLAG.search(text):
            hits.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {text}")
    return hits


def test_no_library_message_names_a_command_line_flag():
    modules = [p for p in sorted(PACKAGE.rglob("*.py")) if PACKAGE / "cli" not in p.parents]
    hits = [hit for path in modules for hit in _flag_strings(path)]
    assert not hits, "\n".join(hits)
