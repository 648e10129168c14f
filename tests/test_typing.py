"""tracebridge.typing: the same ASGI type names and TypedDict keys as asgiref.typing."""

from __future__ import annotations

import typing

import asgiref.typing
import pytest

import tracebridge.typing


def test_typing_all_same_names_as_asgiref_sorted() -> None:
    """Tests that __all__ has asgiref's public names, sorted, and each is defined."""
    assert tracebridge.typing.__all__ == sorted(tracebridge.typing.__all__)
    assert set(tracebridge.typing.__all__) == set(asgiref.typing.__all__)
    for name in tracebridge.typing.__all__:
        assert getattr(tracebridge.typing, name) is not None


@pytest.mark.parametrize(
    "name",
    [n for n in asgiref.typing.__all__ if typing.is_typeddict(getattr(asgiref.typing, n))] + ["HTTPResponseDebugEvent"],
)
def test_typing_typeddict_keys_match_asgiref(name: str) -> None:
    """Tests that every TypedDict has asgiref's required and optional keys (NotRequired kept)."""
    ours = getattr(tracebridge.typing, name)
    theirs = getattr(asgiref.typing, name)
    assert ours.__required_keys__ == theirs.__required_keys__
    assert ours.__optional_keys__ == theirs.__optional_keys__


def test_typing_lifespan_state_not_required() -> None:
    """Tests that LifespanScope.state is optional (the reason the module avoids string annotations)."""
    assert tracebridge.typing.LifespanScope.__optional_keys__ == frozenset({"state"})
