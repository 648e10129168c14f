"""The span vocabulary lives in one module: semconv.  Nothing else spells its strings."""

from __future__ import annotations

import ast
from pathlib import Path

from tracebridge import semconv

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "tracebridge", ROOT / "exporters", ROOT / "dashboards"]


def vocabulary() -> dict[str, str]:
    """Dotted semconv values (span names and attribute keys) -> their constant's name."""
    return {
        getattr(semconv, name): name
        for name in semconv.__all__
        if isinstance(getattr(semconv, name), str) and "." in getattr(semconv, name)
    }


def test_semconv_all_is_sorted_and_complete() -> None:
    """Tests that semconv.__all__ lists every constant, sorted, and that values are unique per kind."""
    public = {name for name in vars(semconv) if name.isupper()}
    assert set(semconv.__all__) == public
    assert list(semconv.__all__) == sorted(semconv.__all__)
    dotted = [getattr(semconv, name) for name in semconv.__all__ if "." in str(getattr(semconv, name))]
    assert len(dotted) == len(set(dotted)), "two constants spell the same key"


def test_no_span_name_or_attribute_key_literal_outside_semconv() -> None:
    """Tests that no module but semconv.py has a string literal equal to a span name or attribute key."""
    keys = vocabulary()
    strays = []
    for folder in SOURCES:
        for path in sorted(folder.rglob("*.py")):
            if path.name == "semconv.py" and path.parent.name == "tracebridge":
                continue
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in keys:
                    strays.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r} is semconv.{keys[node.value]}")
    assert strays == []
