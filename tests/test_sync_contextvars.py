"""Behaviour tests for contextvar propagation across tracebridge.sync bridges (asgiref 3.13 semantics).

Every test makes its own ContextVar, so values written into the main thread's context by
sync tests cannot leak into other tests.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

import pytest

import tracebridge.sync as sync_module
from tracebridge.sync import async_to_sync, sync_to_async

pytestmark = pytest.mark.timeout(30)


class _Explosive:
    """A value that fails loudly if the bridges compare it with == instead of `is`."""

    def __eq__(self, other: object) -> bool:
        raise AssertionError("contextvar values must be compared by identity")

    __hash__ = object.__hash__


class _AlwaysEqual:
    """A value equal to everything: only an identity check notices that it was replaced."""

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__


@pytest.mark.parametrize("thread_sensitive", [True, False])
async def test_sync_to_async_contextvars_flow_in_and_back(thread_sensitive: bool) -> None:
    """Tests that the sync function sees the caller's values and its changes and new vars come back."""
    existing: contextvars.ContextVar[str] = contextvars.ContextVar("existing")
    created: contextvars.ContextVar[str] = contextvars.ContextVar("created")
    existing.set("caller")

    def work() -> str:
        seen = existing.get()
        existing.set("worker")
        created.set("new in worker")
        return seen

    assert await sync_to_async(work, thread_sensitive=thread_sensitive)() == "caller"
    assert existing.get() == "worker"
    assert created.get() == "new in worker"


def test_async_to_sync_contextvars_flow_in_and_back() -> None:
    """Tests that the coroutine sees the sync caller's values and its changes and new vars come back."""
    existing: contextvars.ContextVar[str] = contextvars.ContextVar("existing")
    created: contextvars.ContextVar[str] = contextvars.ContextVar("created")

    async def work() -> str:
        seen = existing.get()
        existing.set("coroutine")
        created.set("new in coroutine")
        return seen

    def scenario() -> tuple[str, str, str]:
        existing.set("caller")
        seen = async_to_sync(work)()
        return seen, existing.get(), created.get()

    assert contextvars.copy_context().run(scenario) == ("caller", "coroutine", "new in coroutine")


async def test_bridges_contextvars_round_trip_through_nesting() -> None:
    """Tests that values set at each level of async->sync->async nesting reach every other level."""
    var: contextvars.ContextVar[list[str]] = contextvars.ContextVar("var")
    var.set(["outer"])

    async def inner() -> None:
        assert var.get() == ["outer", "sync"]
        var.set([*var.get(), "inner"])

    def middle() -> list[str]:
        var.set([*var.get(), "sync"])
        async_to_sync(inner)()
        seen = var.get()
        var.set([*seen, "sync again"])
        return seen

    assert await sync_to_async(middle)() == ["outer", "sync", "inner"]
    assert var.get() == ["outer", "sync", "inner", "sync again"]


async def test_sync_to_async_contextvar_restore_compares_by_identity() -> None:
    """Tests that write-back never uses == (an exploding __eq__ is fine) and notices equal-but-new objects."""
    explosive: contextvars.ContextVar[_Explosive] = contextvars.ContextVar("explosive")
    equal: contextvars.ContextVar[_AlwaysEqual] = contextvars.ContextVar("equal")
    explosive.set(_Explosive())
    original_equal = _AlwaysEqual()
    equal.set(original_equal)
    replacement_explosive, replacement_equal = _Explosive(), _AlwaysEqual()

    def untouched() -> None:
        pass

    def replace() -> None:
        explosive.set(replacement_explosive)
        equal.set(replacement_equal)

    await sync_to_async(untouched)()
    assert equal.get() is original_equal
    await sync_to_async(replace)()
    assert explosive.get() is replacement_explosive
    assert equal.get() is replacement_equal


def test_async_to_sync_contextvar_restore_compares_by_identity() -> None:
    """Tests that async_to_sync's write-back also compares by identity, never with ==."""
    explosive: contextvars.ContextVar[_Explosive] = contextvars.ContextVar("explosive")
    equal: contextvars.ContextVar[_AlwaysEqual] = contextvars.ContextVar("equal")
    replacement_explosive, replacement_equal = _Explosive(), _AlwaysEqual()

    async def untouched() -> None:
        pass

    async def replace() -> None:
        explosive.set(replacement_explosive)
        equal.set(replacement_equal)

    def scenario() -> tuple[Any, Any]:
        explosive.set(_Explosive())
        equal.set(_AlwaysEqual())
        async_to_sync(untouched)()
        async_to_sync(replace)()
        return explosive.get(), equal.get()

    got_explosive, got_equal = contextvars.copy_context().run(scenario)
    assert got_explosive is replacement_explosive
    assert got_equal is replacement_equal


async def test_sync_to_async_custom_context_isolates_caller() -> None:
    """Tests that with context= the changes stay in that Context object and the caller's context is untouched."""
    counter: contextvars.ContextVar[int] = contextvars.ContextVar("counter", default=0)
    shared = contextvars.Context()

    def bump() -> int:
        counter.set(counter.get() + 1)
        return counter.get()

    wrapper = sync_to_async(bump, context=shared)
    results = await asyncio.gather(wrapper(), wrapper(), wrapper())
    assert sorted(results) == [1, 2, 3]
    assert shared[counter] == 3
    assert counter.get() == 0


async def test_sync_to_async_contextvar_token_from_another_call_cannot_reset() -> None:
    """Tests that a Token from var.set() in one call raises ValueError when reset in a later call (#267/#534)."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")

    def set_it() -> contextvars.Token[str]:
        return var.set("x")

    def reset_it(token: contextvars.Token[str]) -> None:
        var.reset(token)

    token = await sync_to_async(set_it)()
    assert var.get() == "x"
    with pytest.raises(ValueError, match="different Context"):
        await sync_to_async(reset_it)(token)


async def test_sync_to_async_contextvars_isolated_between_concurrent_tasks() -> None:
    """Tests that concurrent calls from sibling tasks each write back into their own task's context only."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    def label(name: str) -> None:
        var.set(name)

    async def task(name: str) -> str:
        await sync_to_async(label)(name)
        await asyncio.sleep(0)  # let the sibling's write-back happen in between
        return var.get()

    assert await asyncio.gather(task("a"), task("b")) == ["a", "b"]
    assert var.get() == "unset"


def test_restore_context_copies_values_into_current_context() -> None:
    """Tests that the module-level _restore_context sets a snapshot's values into the running context."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")
    snapshot = contextvars.Context()
    snapshot.run(var.set, "from snapshot")

    def restore_then_read() -> str:
        sync_module._restore_context(snapshot)
        return var.get()

    assert contextvars.Context().run(restore_then_read) == "from snapshot"


async def test_sync_to_async_sync_thread_sees_fresh_copy_each_call() -> None:
    """Tests that a value left in the reused sync thread by one call does not leak into a call from a fresh context."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    def set_it() -> threading.Thread:
        var.set("leaked?")
        return threading.current_thread()

    def read_it() -> tuple[str, threading.Thread]:
        return var.get(), threading.current_thread()

    first_thread = await asyncio.create_task(sync_to_async(set_it)(), context=contextvars.Context())
    value, second_thread = await asyncio.create_task(
        sync_to_async(read_it)(), context=contextvars.Context()
    )
    assert first_thread is second_thread
    assert value == "unset"
