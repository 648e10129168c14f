"""tracebridge is a drop-in for asgiref 3.13: same modules, public names and signatures."""

from __future__ import annotations

import importlib
import inspect

import pytest

MODULES = [
    "sync",
    "local",
    "current_thread_executor",
    "timeout",
    "compatibility",
    "wsgi",
    "server",
    "testing",
    "typing",
]


def own_public_names(module: object) -> set[str]:
    """Public names a module defines itself (not ones it merely imports)."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if getattr(value, "__module__", None) == module.__name__:  # type: ignore[attr-defined]
            names.add(name)
    return names


@pytest.mark.parametrize("name", MODULES)
def test_module_has_every_public_name_of_asgiref(name: str) -> None:
    """Tests that each tracebridge module defines every public name its asgiref twin defines."""
    theirs = importlib.import_module(f"asgiref.{name}")
    ours = importlib.import_module(f"tracebridge.{name}")
    expected = own_public_names(theirs) | set(getattr(theirs, "__all__", ()))
    missing = sorted(n for n in expected if not hasattr(ours, n))
    assert missing == []


@pytest.mark.parametrize("name", MODULES)
def test_module_all_is_sorted_and_names_exist(name: str) -> None:
    """Tests that each public module declares a sorted __all__ of names it really has."""
    ours = importlib.import_module(f"tracebridge.{name}")
    declared = list(ours.__all__)
    assert declared == sorted(declared)
    assert [n for n in declared if not hasattr(ours, n)] == []


def callables_to_compare() -> list[tuple[str, str]]:
    pairs = []
    for name in MODULES:
        if name == "typing":
            continue
        theirs = importlib.import_module(f"asgiref.{name}")
        for attr in sorted(own_public_names(theirs)):
            if callable(getattr(theirs, attr)):
                pairs.append((name, attr))
    return pairs


@pytest.mark.parametrize(("module", "attr"), callables_to_compare())
def test_public_callable_has_asgiref_signature(module: str, attr: str) -> None:
    """Tests that parameter names, kinds and defaults of each public callable match asgiref's."""
    theirs = getattr(importlib.import_module(f"asgiref.{module}"), attr)
    ours = getattr(importlib.import_module(f"tracebridge.{module}"), attr)

    def shape(obj: object) -> list[tuple[str, object, object]]:
        try:
            signature = inspect.signature(obj)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return []
        return [(p.name, p.kind, p.default) for p in signature.parameters.values()]

    assert shape(ours) == shape(theirs)
