"""The instrumented asgiref Locals behave exactly as asgiref's own, fused or wrapped, traced or not.

Each scenario drives asgiref's ``Local`` through gets, sets, deletes, missing
keys, threads, copied contexts and both bridges, and returns what it saw
(values, and exception types with their messages).  The scenario's outcome
with the real, unpatched asgiref is the expectation; the instrumented asgiref
must produce the same outcome with the fused methods (this asgiref's layout
written out) and with the generic wrappers, tracing on and off.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import asgiref.local
import asgiref.sync
import pytest

from tracebridge import semconv
from tracebridge.instrumentation import AsgirefInstrumentor, _asgiref_local

from conftest import SpanRecorder

Outcome = list[Any]


def attempt(outcome: Outcome, label: str, action: Callable[[], Any]) -> None:
    """Run ``action``; note its value, or its exception's type and message (object addresses blanked)."""
    try:
        outcome.append((label, "ok", action()))
    except Exception as exc:
        outcome.append((label, type(exc).__name__, re.sub(r"0x[0-9a-f]+", "0x?", str(exc))))


def in_thread(action: Callable[[], None]) -> None:
    thread = threading.Thread(target=action)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "scenario thread hung"


def default_local_in_sync_code() -> Outcome:
    outcome: Outcome = []
    local = asgiref.local.Local()
    attempt(outcome, "get missing", lambda: local.value)
    attempt(outcome, "getattr default", lambda: getattr(local, "value", "default"))
    attempt(outcome, "set", lambda: setattr(local, "value", 1))
    attempt(outcome, "get", lambda: local.value)
    attempt(outcome, "overwrite", lambda: setattr(local, "value", 2))
    attempt(outcome, "get again", lambda: local.value)
    attempt(outcome, "hasattr", lambda: hasattr(local, "value"))
    attempt(outcome, "set _data", lambda: setattr(local, "_data", 3))
    attempt(outcome, "get _data", lambda: type(local._data).__name__)
    attempt(outcome, "set _lock", lambda: setattr(local, "_lock", "stored as data"))
    attempt(outcome, "lock untouched", lambda: type(object.__getattribute__(local, "_lock")).__name__)

    def other_thread() -> None:
        attempt(outcome, "other thread get", lambda: local.value)
        attempt(outcome, "other thread set", lambda: setattr(local, "value", "theirs"))
        attempt(outcome, "other thread get own", lambda: local.value)

    in_thread(other_thread)
    attempt(outcome, "own value kept", lambda: local.value)
    # A context carried to another thread by hand (not by a bridge, which
    # re-homes the data): its data belongs to the thread that wrote it.
    carried = contextvars.copy_context()

    def carried_to_other_thread() -> None:
        attempt(outcome, "carried get", lambda: carried.run(getattr, local, "value"))
        attempt(outcome, "carried delete", lambda: carried.run(delattr, local, "value"))
        attempt(outcome, "carried set", lambda: carried.run(setattr, local, "other", 1))
        attempt(outcome, "carried get own", lambda: carried.run(getattr, local, "other"))

    in_thread(carried_to_other_thread)
    attempt(outcome, "carried back", lambda: carried.run(getattr, local, "value"))
    attempt(outcome, "carried back other", lambda: carried.run(getattr, local, "other"))
    copied = contextvars.copy_context()
    attempt(outcome, "set in a copy", lambda: copied.run(setattr, local, "value", "copy"))
    attempt(outcome, "copy sees it", lambda: copied.run(getattr, local, "value"))
    attempt(outcome, "original unchanged", lambda: local.value)
    attempt(outcome, "delete", lambda: delattr(local, "value"))
    attempt(outcome, "get deleted", lambda: local.value)
    attempt(outcome, "delete missing", lambda: delattr(local, "value"))
    attempt(outcome, "copy still has it", lambda: copied.run(getattr, local, "value"))
    return outcome


def default_local_across_bridges() -> Outcome:
    outcome: Outcome = []
    local = asgiref.local.Local()

    def sync_callee() -> None:
        attempt(outcome, "callee sees caller's", lambda: local.from_task)
        attempt(outcome, "callee sets", lambda: setattr(local, "from_callee", "c"))
        attempt(outcome, "callee deletes", lambda: delattr(local, "doomed"))

    async def coroutine_callee() -> None:
        attempt(outcome, "a2s callee sees thread's", lambda: local.from_thread)
        attempt(outcome, "a2s callee sets", lambda: setattr(local, "from_a2s", "a"))

    def sync_thread() -> None:
        attempt(outcome, "thread sets", lambda: setattr(local, "from_thread", "t"))
        asgiref.sync.async_to_sync(coroutine_callee)()
        attempt(outcome, "a2s change flowed back", lambda: local.from_a2s)

    async def main() -> None:
        local.from_task = "task"
        local.doomed = True
        await asgiref.sync.sync_to_async(sync_callee)()
        attempt(outcome, "s2a change flowed back", lambda: local.from_callee)
        attempt(outcome, "s2a delete flowed back", lambda: local.doomed)
        await asgiref.sync.sync_to_async(sync_thread, thread_sensitive=False)()

        async def sibling() -> None:
            attempt(outcome, "task sees parent's", lambda: local.from_task)
            local.from_task = "sibling"

        await asyncio.create_task(sibling())
        attempt(outcome, "parent unchanged by task", lambda: local.from_task)

    asyncio.run(asyncio.wait_for(main(), timeout=10))
    return outcome


def thread_critical_local() -> Outcome:
    outcome: Outcome = []
    local = asgiref.local.Local(thread_critical=True)
    attempt(outcome, "get missing", lambda: local.value)
    attempt(outcome, "set", lambda: setattr(local, "value", 1))
    attempt(outcome, "get", lambda: local.value)

    def other_thread() -> None:
        attempt(outcome, "other thread get", lambda: local.value)

    in_thread(other_thread)

    def sync_callee() -> None:
        attempt(outcome, "s2a callee get", lambda: local.in_loop)

    async def main() -> None:
        attempt(outcome, "loop get missing", lambda: local.value)
        local.in_loop = "loop"
        attempt(outcome, "loop get", lambda: local.in_loop)
        await asgiref.sync.sync_to_async(sync_callee)()

        async def task() -> None:
            attempt(outcome, "task sees parent's", lambda: local.in_loop)
            attempt(outcome, "task deletes", lambda: delattr(local, "in_loop"))

        await asyncio.create_task(task())
        attempt(outcome, "parent keeps it", lambda: local.in_loop)
        attempt(outcome, "loop delete", lambda: delattr(local, "in_loop"))
        attempt(outcome, "loop delete missing", lambda: delattr(local, "in_loop"))

    asyncio.run(asyncio.wait_for(main(), timeout=10))
    attempt(outcome, "sync value kept", lambda: local.value)
    attempt(outcome, "delete", lambda: delattr(local, "value"))
    attempt(outcome, "delete missing", lambda: delattr(local, "value"))
    return outcome


SCENARIOS = [default_local_in_sync_code, default_local_across_bridges, thread_critical_local]
EXPECTED = {scenario.__name__: scenario() for scenario in SCENARIOS}  # asgiref unpatched: the truth


@pytest.fixture(params=["fused", "wrappers"])
def layout(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """asgiref instrumented with the fused Local methods, or (no checked layout) with the wrappers."""
    if request.param == "wrappers":
        monkeypatch.setattr(_asgiref_local, "_FUSED_SOURCES", {})
    instrumentor = AsgirefInstrumentor()
    instrumentor.instrument(census=False)
    try:
        yield request.param
    finally:
        instrumentor.uninstrument()


def test_this_asgiref_gets_the_fused_methods(layout: str) -> None:
    """Tests that asgiref 3.13.0 (the pinned one) is a checked layout, and only a checked one gets the fused methods."""
    assert _asgiref_local.fused_layout(asgiref.local) == ("asgiref 3.13.0" if layout == "fused" else None)
    expected = "_fused" if layout == "fused" else "_wrappers"
    for cls in (asgiref.local._DefaultLocal, asgiref.local._ThreadCriticalLocal):
        for name in ("__getattr__", "__setattr__", "__delattr__"):
            # __qualname__ is asgiref's (functools.update_wrapper); the code object says whose it is.
            assert getattr(cls, name).__code__.co_qualname.startswith(expected), (cls, name)


def test_unknown_layout_is_not_fused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that a Local module whose source differs from every checked one gets the wrappers."""
    monkeypatch.setattr(_asgiref_local, "_FUSED_SOURCES", {"another asgiref's digest": "asgiref 9"})
    assert _asgiref_local.fused_layout(asgiref.local) is None
    assert _asgiref_local.fused_layout(None) is None


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.__name__)
def test_instrumented_local_behaves_as_asgiref_untraced(layout: str, scenario: Callable[[], Outcome]) -> None:
    """Tests that with tracing off every access has asgiref's outcome (values, exceptions, messages)."""
    assert scenario() == EXPECTED[scenario.__name__]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.__name__)
def test_instrumented_local_behaves_as_asgiref_traced(
    layout: str, scenario: Callable[[], Outcome], spans: SpanRecorder
) -> None:
    """Tests that with tracing on every access has asgiref's outcome, and each became one Local span."""
    assert scenario() == EXPECTED[scenario.__name__]
    accesses = spans.named(semconv.LOCAL_ACCESS)
    assert accesses, "no Local span recorded"
    # asgiref's own bookkeeping Local (AsyncToSync.executors) is never a span.
    keys = {span.attributes[semconv.LOCAL_ATTRIBUTE] for span in accesses}
    assert "current" not in keys


def test_each_access_is_one_span_with_what_happened(layout: str, spans: SpanRecorder) -> None:
    """Tests the fused and wrapped methods record the same span facts for each kind of access."""
    local = asgiref.local.Local()
    critical = asgiref.local.Local(thread_critical=True)
    for target, critical_flag in ((local, False), (critical, True)):
        getattr(target, "value", None)
        target.value = 1
        _ = target.value
        del target.value
        with pytest.raises(AttributeError):
            del target.value
    seen = [
        (
            span.attributes[semconv.LOCAL_THREAD_CRITICAL],
            span.attributes[semconv.LOCAL_OPERATION],
            span.attributes[semconv.LOCAL_ATTRIBUTE],
            span.attributes[semconv.LOCAL_FOUND],
            span.attributes[semconv.THREAD_ID],
        )
        for span in spans.named(semconv.LOCAL_ACCESS)
    ]
    me = threading.get_ident()
    expected_ops = [
        (semconv.LOCAL_OP_GET, False),
        (semconv.LOCAL_OP_SET, True),
        (semconv.LOCAL_OP_GET, True),
        (semconv.LOCAL_OP_DELETE, True),
        (semconv.LOCAL_OP_DELETE, False),
    ]
    assert seen == [
        (critical_flag, operation, "value", found, me)
        for critical_flag in (False, True)
        for operation, found in expected_ops
    ]
