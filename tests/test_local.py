"""Tests for tracebridge.local: asgiref-compatible Local semantics and Local-access spans."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import tracebridge
from tracebridge import _telemetry, semconv
from tracebridge import local as local_module
from tracebridge.local import Local, _DefaultLocal, _ThreadCriticalLocal, rehome

JOIN_TIMEOUT = 10.0
SECRET = "s3cr3t-value-never-traced"


def run_in_thread(target: Callable[[], Any], name: str = "local-test-thread") -> Any:
    """Runs ``target`` in a new thread and returns its result (re-raising its error)."""
    outcome: dict[str, Any] = {}

    def runner() -> None:
        try:
            outcome["result"] = target()
        except BaseException as exc:  # handed to the test thread below
            outcome["error"] = exc

    thread = threading.Thread(target=runner, name=name)
    thread.start()
    thread.join(JOIN_TIMEOUT)
    assert not thread.is_alive(), "thread did not finish in time"
    if "error" in outcome:
        raise outcome.pop("error")
    return outcome.get("result")


def local_spans(spans: Any) -> list[Any]:
    return spans.named(semconv.LOCAL_ACCESS)


def expected_attributes(
    local: Local,
    key: str,
    operation: str,
    *,
    found: bool = True,
    thread: threading.Thread | None = None,
) -> dict[str, Any]:
    thread = thread or threading.current_thread()
    return {
        semconv.LOCAL_ID: hex(id(local)),
        semconv.LOCAL_ATTRIBUTE: key,
        semconv.LOCAL_OPERATION: operation,
        semconv.LOCAL_THREAD_CRITICAL: type(local) is _ThreadCriticalLocal,
        semconv.LOCAL_FOUND: found,
        semconv.THREAD_ID: thread.ident,
        semconv.THREAD_NAME: thread.name,
    }


@contextlib.contextmanager
def collector_saving_all() -> Iterator[None]:
    """Collector off and emptied, then DEBUG_SAVEALL: the body asserts ``gc.garbage == []``.

    The emptying collection runs *before* DEBUG_SAVEALL: with the flag on,
    cycles are kept in gc.garbage, and clearing that list makes them garbage again.
    """
    gc.disable()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


# ---------------------------------------------------------------------------
# Construction, final class, reserved name.


def test_local_default_returns_default_local_instance() -> None:
    """Tests that Local() builds a _DefaultLocal, which is a Local."""
    local = Local()
    assert type(local) is _DefaultLocal
    assert isinstance(local, Local)


def test_local_thread_critical_returns_thread_critical_local_instance() -> None:
    """Tests that Local(thread_critical=True), also passed positionally, builds a _ThreadCriticalLocal."""
    assert type(Local(thread_critical=True)) is _ThreadCriticalLocal
    assert type(Local(True)) is _ThreadCriticalLocal
    assert isinstance(Local(thread_critical=True), Local)


def test_local_subclass_instantiated_raises_type_error() -> None:
    """Tests that instantiating a subclass of the final Local raises TypeError."""

    class MyLocal(Local):  # type: ignore[misc]
        pass

    with pytest.raises(TypeError, match="cannot be subclassed"):
        MyLocal()
    with pytest.raises(TypeError, match="cannot be subclassed"):
        MyLocal(thread_critical=True)


def test_local_data_name_set_raises_attribute_error() -> None:
    """Tests that setting the reserved name _data raises AttributeError and keeps the values."""
    local = Local()
    local.important = "keep me"
    with pytest.raises(AttributeError):
        local._data = "user supplied value"
    assert local.important == "keep me"
    assert not hasattr(local, "_data")


async def test_local_thread_critical_data_name_set_in_loop_thread_raises_attribute_error() -> None:
    """Tests that a thread-critical Local refuses _data in a loop thread, as asgiref's does."""
    local = Local(thread_critical=True)
    with pytest.raises(AttributeError):
        local._data = "user supplied value"


@pytest.mark.parametrize("thread_critical", [False, True])
def test_local_set_get_delete_in_sync_thread_round_trips(thread_critical: bool) -> None:
    """Tests that a value can be set, read, replaced and deleted, then is missing again."""
    local = Local(thread_critical=thread_critical)
    with pytest.raises(AttributeError):
        local.foo
    local.foo = 2
    assert local.foo == 2
    local.foo = 3
    assert local.foo == 3
    del local.foo
    with pytest.raises(AttributeError):
        local.foo
    with pytest.raises(AttributeError):
        del local.foo


@pytest.mark.parametrize("thread_critical", [False, True])
async def test_local_set_get_delete_in_task_round_trips(thread_critical: bool) -> None:
    """Tests that a value can be set, read and deleted inside a task, then is missing again."""
    local = Local(thread_critical=thread_critical)
    with pytest.raises(AttributeError):
        local.foo
    local.foo = 1
    assert local.foo == 1
    del local.foo
    with pytest.raises(AttributeError):
        local.foo
    with pytest.raises(AttributeError):
        del local.foo


def test_local_missing_attribute_error_names_the_attribute() -> None:
    """Tests that the AttributeError for a missing value names the attribute."""
    with pytest.raises(AttributeError, match="'nothing_here'"):
        Local().nothing_here


def test_local_class_attributes_keep_normal_lookup() -> None:
    """Tests that names the class defines are not storage: __class__ works and Locals are weakly referenceable."""
    local = Local()
    assert local.__class__ is _DefaultLocal
    assert weakref.ref(local)() is local
    assert weakref.ref(Local(thread_critical=True)) is not None


# ---------------------------------------------------------------------------
# Default Local: isolation between threads and tasks.


def test_local_new_thread_does_not_see_or_change_parent_value() -> None:
    """Tests that a new thread starts without the parent's value and its writes stay in it."""
    local = Local()
    local.value = "parent"

    def child() -> tuple[bool, str, int]:
        seen = hasattr(local, "value")
        local.value = "child"
        return seen, local.value, threading.get_ident()

    seen, child_value, child_ident = run_in_thread(child)
    assert child_ident != threading.get_ident()
    assert seen is False
    assert child_value == "child"
    assert local.value == "parent"


def test_local_thread_running_copied_context_does_not_see_parent_value() -> None:
    """Tests that a thread running in a copy of the parent's context still starts empty (3.14 inherit case)."""
    local = Local()
    local.value = "parent"
    parent_context = contextvars.copy_context()

    def child() -> tuple[bool, str]:
        seen = hasattr(local, "value")
        local.value = "child"
        return seen, local.value

    seen, child_value = run_in_thread(lambda: parent_context.run(child))
    assert seen is False
    assert child_value == "child"
    assert local.value == "parent"


def test_local_threads_writing_concurrently_keep_own_values() -> None:
    """Tests that many threads writing the same Local at once each read back their own value."""
    local = Local()
    start = threading.Barrier(8, timeout=JOIN_TIMEOUT)
    errors: list[str] = []

    def worker(index: int) -> None:
        start.wait()
        for round_ in range(200):
            local.value = (index, round_)
            if local.value != (index, round_):
                errors.append(f"thread {index} saw {local.value!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
        assert not thread.is_alive()
    assert errors == []


async def test_local_awaited_coroutine_write_visible_to_caller() -> None:
    """Tests that a write made by awaited code (same task) is visible to the caller."""
    local = Local()
    local.value = 1

    async def inner() -> None:
        local.value = 2

    await inner()
    assert local.value == 2


async def test_local_child_task_sees_parent_value_and_write_does_not_leak() -> None:
    """Tests that a child task inherits the value and its write does not reach the parent."""
    local = Local()
    local.value = 0

    async def child() -> int:
        seen = local.value
        local.value = 1
        assert local.value == 1
        return seen

    assert await asyncio.create_task(child()) == 0
    assert local.value == 0


async def test_local_child_task_delete_does_not_leak() -> None:
    """Tests that a child task deleting the value leaves the parent's value in place."""
    local = Local()
    local.value = 123

    async def child() -> None:
        assert local.value == 123
        del local.value
        assert not hasattr(local, "value")

    await asyncio.create_task(child())
    assert local.value == 123


async def test_local_sibling_tasks_do_not_see_each_other() -> None:
    """Tests that a value one sibling task sets is not visible to another running task."""
    local = Local()
    first_has_set = asyncio.Event()
    second_has_read = asyncio.Event()

    async def first() -> None:
        local.value = "first"
        first_has_set.set()
        await second_has_read.wait()
        assert local.value == "first"

    async def second() -> bool:
        await first_has_set.wait()
        seen = hasattr(local, "value")
        second_has_read.set()
        return seen

    _, seen = await asyncio.wait_for(asyncio.gather(first(), second()), JOIN_TIMEOUT)
    assert seen is False
    assert not hasattr(local, "value")


async def test_local_task_spawned_later_sees_snapshot_at_creation() -> None:
    """Tests that a task sees the values as they were when it was created, not later writes."""
    local = Local()
    local.value = "before"
    go = asyncio.Event()

    async def child() -> str:
        await go.wait()
        return local.value

    task = asyncio.create_task(child())
    local.value = "after"
    go.set()
    assert await asyncio.wait_for(task, JOIN_TIMEOUT) == "before"


# ---------------------------------------------------------------------------
# rehome(): how the bridges carry values across a thread hop.


def emulate_copy_back(callee_context: contextvars.Context) -> None:
    """What a bridge does in the caller after the callee returns: copy changed vars, then rehome()."""
    for var, value in callee_context.items():
        if var.get(local_module._MISSING) is not value:
            var.set(value)
    rehome()


def test_rehome_thread_running_copied_context_sees_values() -> None:
    """Tests that rehome() in a thread running a copy of the caller's context makes its values visible."""
    local = Local()
    local.value = "from caller"
    callee_context = contextvars.copy_context()

    def callee() -> tuple[bool, str]:
        hidden = not hasattr(local, "value")
        rehome()
        return hidden, local.value

    hidden, seen = run_in_thread(lambda: callee_context.run(callee))
    assert hidden is True
    assert seen == "from caller"


def test_rehome_after_copy_back_makes_callee_writes_visible_to_caller() -> None:
    """Tests that writes and deletes made across an emulated hop reach the caller after copy-back + rehome()."""
    local = Local()
    local.kept = "kept"
    local.changed = "old"
    local.removed = "soon gone"
    callee_context = contextvars.copy_context()

    def callee() -> int:
        rehome()
        local.changed = "new"
        local.added = "added"
        del local.removed
        return threading.get_ident()

    callee_ident = run_in_thread(lambda: callee_context.run(callee))
    assert callee_ident != threading.get_ident()
    # Before the copy-back the caller still has its own values.
    assert local.changed == "old"
    emulate_copy_back(callee_context)
    assert local.kept == "kept"
    assert local.changed == "new"
    assert local.added == "added"
    assert not hasattr(local, "removed")
    local.after = "caller writes again"  # the caller owns the storage again
    assert local.after == "caller writes again"


def test_rehome_copy_back_without_rehome_keeps_values_hidden() -> None:
    """Tests that storage copied back from another thread stays hidden until rehome() runs."""
    local = Local()
    callee_context = contextvars.copy_context()

    def callee() -> None:
        local.value = "callee"

    run_in_thread(lambda: callee_context.run(callee))
    for var, value in callee_context.items():
        var.set(value)
    assert not hasattr(local, "value")
    rehome()
    assert local.value == "callee"


def test_rehome_context_without_local_storage_sets_nothing() -> None:
    """Tests that rehome() in a context holding no Local storage leaves the context untouched."""
    keep = Local()  # at least one live Local, so rehome() has something to look at
    context = contextvars.Context()
    context.run(rehome)
    assert len(context) == 0
    del keep


def test_rehome_leaves_thread_critical_values_behind() -> None:
    """Tests that rehome() in another loop thread moves default values but never thread-critical ones."""
    default = Local()
    critical = Local(thread_critical=True)

    async def caller_side() -> contextvars.Context:
        default.value = "default"
        critical.value = "critical"
        return contextvars.copy_context()

    caller_context = asyncio.run(caller_side())

    async def probe() -> tuple[str, bool]:
        rehome()
        return default.value, hasattr(critical, "value")

    seen_default, seen_critical = run_in_thread(lambda: caller_context.run(asyncio.run, probe()))
    assert seen_default == "default"
    assert seen_critical is False


def test_rehome_collected_local_is_no_longer_tracked() -> None:
    """Tests that a collected Local drops out of rehome()'s registry (no growth with Locals made per request)."""
    before = len(local_module._registered_vars)
    local = Local()
    assert len(local_module._registered_vars) == before + 1
    del local
    gc.collect()
    assert len(local_module._registered_vars) == before


# ---------------------------------------------------------------------------
# Thread-critical Local.


def test_thread_critical_local_sync_thread_ignores_context() -> None:
    """Tests that in a sync thread a thread-critical value is seen from any context of that thread."""
    local = Local(thread_critical=True)
    local.value = "thread wide"
    assert contextvars.Context().run(lambda: local.value) == "thread wide"

    def set_in_other_context() -> None:
        local.value = "set elsewhere"

    contextvars.Context().run(set_in_other_context)
    assert local.value == "set elsewhere"


def test_thread_critical_local_other_thread_does_not_see_value() -> None:
    """Tests that another thread, even running a copy of the context, does not see a thread-critical value."""
    local = Local(thread_critical=True)
    local.value = "main"
    context = contextvars.copy_context()

    def child() -> bool:
        seen = hasattr(local, "value")
        local.value = "child"
        return seen

    assert run_in_thread(lambda: context.run(child)) is False
    assert local.value == "main"


async def test_thread_critical_local_loop_thread_child_task_write_does_not_leak() -> None:
    """Tests that in a loop thread a thread-critical Local is task-local: a child's write and delete stay in it."""
    local = Local(thread_critical=True)
    local.value = "parent"
    local.doomed = "still here"

    async def child() -> str:
        seen = local.value
        local.value = "child"
        del local.doomed
        return seen

    assert await asyncio.create_task(child()) == "parent"
    assert local.value == "parent"
    assert local.doomed == "still here"


def test_thread_critical_local_sync_and_loop_values_are_separate() -> None:
    """Tests that what a thread sets outside its loop is not what its tasks see, and vice versa."""
    local = Local(thread_critical=True)
    local.value = "sync"

    async def in_loop() -> tuple[bool, str]:
        seen = hasattr(local, "value")
        local.value = "loop"
        return seen, local.value

    assert asyncio.run(in_loop()) == (False, "loop")
    assert local.value == "sync"


# ---------------------------------------------------------------------------
# Reference cycles and id reuse.


@pytest.mark.parametrize("thread_critical", [True, False])
def test_local_missing_attribute_leaves_no_reference_cycles(thread_critical: bool) -> None:
    """Tests that creating a Local and reading a missing attribute leaves nothing for the collector (#487)."""
    with collector_saving_all():
        try:
            getattr(Local(thread_critical=thread_critical), "missing")
        except AttributeError:
            pass
        gc.collect()
        assert gc.garbage == []


@pytest.mark.parametrize("thread_critical", [True, False])
def test_local_traced_accesses_leave_no_reference_cycles(spans: Any, thread_critical: bool) -> None:
    """Tests that traced get/set/delete/missing accesses leave nothing for the collector."""
    Local().warm_up = True  # starts the drain thread before its lock is held below
    # Hold the drain off so only this test's code runs between the collections.
    with _telemetry.deferred._drain_lock, collector_saving_all():
        local = Local(thread_critical=thread_critical)
        local.value = 1
        assert local.value == 1
        del local.value
        try:
            local.value
        except AttributeError:
            pass
        del local
        gc.collect()
        assert gc.garbage == []


def test_local_collected_storage_not_inherited_by_new_locals() -> None:
    """Tests that Locals created after one was collected (and may reuse its id) start empty."""
    matched = -1
    collected = threading.Event()
    created = threading.Event()
    new_locals: list[Local] = []

    def worker() -> None:
        nonlocal matched
        cycle: list[Any] = [Local()]
        cycle.append(cycle)
        cycle[0].foo = "bar"
        del cycle
        gc.collect()
        collected.set()
        assert created.wait(JOIN_TIMEOUT)
        matched = sum(1 for local in new_locals if getattr(local, "foo", None) == "bar")

    thread = threading.Thread(target=worker)
    thread.start()
    assert collected.wait(JOIN_TIMEOUT)
    new_locals.extend(Local() for _ in range(100))
    created.set()
    thread.join(JOIN_TIMEOUT)
    assert not thread.is_alive()
    assert matched == 0


def test_local_reused_id_in_same_thread_starts_empty() -> None:
    """Tests that a Local created right after another was freed in the same thread never sees its values."""
    for _ in range(50):
        old = Local()
        old.foo = "bar"
        del old
        assert not hasattr(Local(), "foo")


# ---------------------------------------------------------------------------
# Bridges (tracebridge.sync): values cross sync_to_async / async_to_sync.


async def test_local_sync_to_async_value_flows_in_and_back() -> None:
    """Tests that sync_to_async code sees the caller's value and its write comes back."""
    sync = pytest.importorskip("tracebridge.sync")
    local = Local()
    local.value = 3
    caller_ident = threading.get_ident()

    def sync_function() -> int:
        assert local.value == 3
        local.value = "phew, done"
        return threading.get_ident()

    assert await sync.sync_to_async(sync_function)() != caller_ident
    assert local.value == "phew, done"


def test_local_async_to_sync_value_flows_in_and_back() -> None:
    """Tests that async_to_sync code (on a new loop thread) sees the caller's value and its write comes back."""
    sync = pytest.importorskip("tracebridge.sync")
    local = Local()
    local.value = 12

    async def async_function() -> int:
        assert local.value == 12
        local.value = "inside"
        return threading.get_ident()

    assert sync.async_to_sync(async_function)() != threading.get_ident()
    assert local.value == "inside"


async def test_local_sync_to_async_then_async_to_sync_value_flows_back() -> None:
    """Tests that a value crosses into sync code and back onto the outer loop, and the write returns."""
    sync = pytest.importorskip("tracebridge.sync")
    local = Local()
    local.value = 756
    loop_thread = threading.get_ident()

    def sync_function() -> int:
        async def async_function() -> int:
            assert local.value == 756
            local.value = "dragons"
            return threading.get_ident()

        return sync.async_to_sync(async_function)()

    assert await sync.sync_to_async(sync_function)() == loop_thread
    assert local.value == "dragons"


async def test_local_many_bridge_layers_value_flows_through() -> None:
    """Tests that a value crosses four nested hops and the innermost write reaches the outermost caller."""
    sync = pytest.importorskip("tracebridge.sync")
    local = Local()
    local.value = 8374

    def sync_1() -> None:
        async def async_1() -> None:
            def sync_2() -> None:
                async def async_2() -> None:
                    assert local.value == 8374
                    local.value = "miracles"

                sync.async_to_sync(async_2)()

            await sync.sync_to_async(sync_2)()

        sync.async_to_sync(async_1)()

    await sync.sync_to_async(sync_1)()
    assert local.value == "miracles"


async def test_local_threads_and_bridges_do_not_interfere() -> None:
    """Tests that plain threads writing a Local do not disturb values carried through sync_to_async."""
    sync = pytest.importorskip("tracebridge.sync")
    local = Local()
    local.counter = 0

    def increment(expected: int) -> None:
        assert local.counter == expected
        local.counter += 1

    def stranger() -> None:
        assert not hasattr(local, "counter")
        local.counter = -1

    await sync.sync_to_async(increment)(0)
    threads = [threading.Thread(target=stranger) for _ in range(5)]
    for thread in threads:
        thread.start()
    await sync.sync_to_async(increment)(1)
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    await sync.sync_to_async(increment)(2)
    assert local.counter == 3


async def test_thread_critical_local_not_carried_by_sync_to_async() -> None:
    """Tests that a thread-critical value set in the loop is absent in sync_to_async code and untouched by it."""
    sync = pytest.importorskip("tracebridge.sync")
    local = Local(thread_critical=True)
    local.value = 86

    def sync_function() -> None:
        with pytest.raises(AttributeError):
            local.value
        local.value = "secret"
        assert local.value == "secret"
        del local.value
        with pytest.raises(AttributeError):
            del local.value

    await sync.sync_to_async(sync_function)()
    assert local.value == 86


def test_thread_critical_local_not_carried_by_async_to_sync() -> None:
    """Tests that a thread-critical value set in a sync thread is absent in async_to_sync code and untouched by it."""
    sync = pytest.importorskip("tracebridge.sync")
    local = Local(thread_critical=True)
    local.value = 89

    async def async_function() -> None:
        with pytest.raises(AttributeError):
            local.value
        local.value = "numbers"
        assert local.value == "numbers"

    sync.async_to_sync(async_function)()
    assert local.value == 89


def test_thread_critical_local_set_on_same_sync_thread_through_bridges_is_visible() -> None:
    """Tests that thread-sensitive code landing back on the caller's thread shares its thread-critical values only."""
    sync = pytest.importorskip("tracebridge.sync")
    critical = Local(thread_critical=True)
    default = Local()
    caller = threading.current_thread()
    ran_on: list[threading.Thread] = []

    @sync.sync_to_async
    def inner() -> None:
        ran_on.append(threading.current_thread())
        critical.value = "_123_"
        default.value = "_456_"

    @sync.async_to_sync
    async def outer() -> None:
        await asyncio.create_task(inner())

    outer()
    assert ran_on == [caller]
    assert critical.value == "_123_"
    # The default value was set in the created task's context copy: it never flows up.
    assert not hasattr(default, "value")


# ---------------------------------------------------------------------------
# Spans.


@pytest.mark.parametrize("thread_critical", [False, True])
def test_local_access_spans_sync_thread_attributes(spans: Any, thread_critical: bool) -> None:
    """Tests that set, get and delete each record one span with exactly the documented attributes."""
    local = Local(thread_critical=thread_critical)
    local.key = SECRET
    assert local.key == SECRET
    del local.key
    recorded = local_spans(spans)
    assert [dict(span.attributes) for span in recorded] == [
        expected_attributes(local, "key", semconv.LOCAL_OP_SET),
        expected_attributes(local, "key", semconv.LOCAL_OP_GET),
        expected_attributes(local, "key", semconv.LOCAL_OP_DELETE),
    ]


@pytest.mark.parametrize("thread_critical", [False, True])
async def test_local_access_spans_loop_thread_attributes(spans: Any, thread_critical: bool) -> None:
    """Tests that accesses inside a task record the same spans as in a sync thread."""
    local = Local(thread_critical=thread_critical)
    local.key = SECRET
    assert local.key == SECRET
    del local.key
    recorded = local_spans(spans)
    assert [dict(span.attributes) for span in recorded] == [
        expected_attributes(local, "key", semconv.LOCAL_OP_SET),
        expected_attributes(local, "key", semconv.LOCAL_OP_GET),
        expected_attributes(local, "key", semconv.LOCAL_OP_DELETE),
    ]


@pytest.mark.parametrize("thread_critical", [False, True])
def test_local_access_span_missing_attribute_found_false(spans: Any, thread_critical: bool) -> None:
    """Tests that a get or delete that raised AttributeError records found=False."""
    local = Local(thread_critical=thread_critical)
    assert not hasattr(local, "absent")
    with pytest.raises(AttributeError):
        del local.absent
    assert [dict(span.attributes) for span in local_spans(spans)] == [
        expected_attributes(local, "absent", semconv.LOCAL_OP_GET, found=False),
        expected_attributes(local, "absent", semconv.LOCAL_OP_DELETE, found=False),
    ]


def test_local_access_span_value_hidden_by_foreign_owner_found_false(spans: Any) -> None:
    """Tests that a get of a value owned by another thread (inherited context) records found=False."""
    local = Local()
    local.value = SECRET
    context = contextvars.copy_context()
    spans.clear()
    thread_box: list[threading.Thread] = []

    def child() -> bool:
        thread_box.append(threading.current_thread())
        return hasattr(local, "value")

    assert run_in_thread(lambda: context.run(child), name="inheriting-thread") is False
    assert [dict(span.attributes) for span in local_spans(spans)] == [
        expected_attributes(local, "value", semconv.LOCAL_OP_GET, found=False, thread=thread_box[0]),
    ]


def test_local_access_span_parent_is_current_span(spans: Any) -> None:
    """Tests that a Local-access span is a child of the span current at the access."""
    local = Local()
    tracer = spans.provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        local.user = SECRET
    (span,) = local_spans(spans)
    assert span.parent is not None
    assert span.parent.span_id == request.get_span_context().span_id
    assert span.context.trace_id == request.get_span_context().trace_id


def test_local_access_span_without_current_span_is_root(spans: Any) -> None:
    """Tests that an access made with no current span records a root span."""
    local = Local()
    local.user = SECRET
    (span,) = local_spans(spans)
    assert span.parent is None


def test_local_access_span_records_accessing_thread(spans: Any) -> None:
    """Tests that the span names the thread that made the access, not the one that built the span."""
    local = Local(thread_critical=True)
    thread_box: list[threading.Thread] = []

    def worker() -> None:
        thread_box.append(threading.current_thread())
        local.value = SECRET

    run_in_thread(worker, name="writer-thread")
    (span,) = local_spans(spans)
    assert thread_box[0].ident != threading.get_ident()
    assert dict(span.attributes) == expected_attributes(local, "value", semconv.LOCAL_OP_SET, thread=thread_box[0])
    assert span.attributes[semconv.THREAD_NAME] == "writer-thread"


def test_local_access_span_times_cover_the_access(spans: Any) -> None:
    """Tests that the span's start and end lie within the access and are ordered."""
    local = Local()
    before = _telemetry.now_ns()
    local.value = SECRET
    after = _telemetry.now_ns()
    (span,) = local_spans(spans)
    assert before <= span.start_time <= span.end_time <= after


@pytest.mark.parametrize("thread_critical", [False, True])
def test_local_access_spans_never_contain_the_value(spans: Any, thread_critical: bool) -> None:
    """Tests that no span attribute, event or name ever carries a stored value."""
    local = Local(thread_critical=thread_critical)
    local.token = SECRET
    local.token = {"nested": SECRET}
    assert local.token == {"nested": SECRET}
    del local.token
    with pytest.raises(AttributeError):
        local.token
    recorded = local_spans(spans)
    assert len(recorded) == 5
    for span in recorded:
        texts = [span.name, *map(str, span.attributes.values()), *(event.name for event in span.events)]
        assert not any(SECRET in text for text in texts)


def test_local_tracing_off_records_nothing(spans: Any) -> None:
    """Tests that with no provider in effect Local accesses queue and export nothing."""
    tracebridge.set_tracer_provider(None)
    assert tracebridge.get_tracer_provider() is None, "a global provider is set; this test needs none"
    queued = len(_telemetry.deferred)
    for thread_critical in (False, True):
        local = Local(thread_critical=thread_critical)
        local.value = SECRET
        assert local.value == SECRET
        del local.value
        assert not hasattr(local, "value")
    assert len(_telemetry.deferred) == queued
    assert spans.finished() == []


def test_local_internal_state_and_rehome_record_no_spans(spans: Any) -> None:
    """Tests that the Local's own bookkeeping (state slot, class names, rehome) records no span."""
    local = Local()
    critical = Local(thread_critical=True)
    assert local.__class__ is _DefaultLocal
    assert critical.__class__ is _ThreadCriticalLocal
    weakref.ref(local)
    rehome()
    assert local_spans(spans) == []
    local.value = 1
    assert len(local_spans(spans)) == 1


def test_local_untraced_helpers_record_no_spans(spans: Any) -> None:
    """Tests that the bridges' untraced get/set helpers share the values but record no span."""
    local = Local()
    local_module._set_untraced(local, "current", "executor")
    assert local_module._get_untraced(local, "current") == "executor"
    assert local_module._get_untraced(local, "absent", "default") == "default"
    assert local_spans(spans) == []
    assert local.current == "executor"
    assert len(local_spans(spans)) == 1


def test_local_tracing_failure_is_swallowed(spans: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that an exception inside tracing is counted and never reaches the accessing code."""

    def broken_record(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(_telemetry.deferred, "push", broken_record)
    errors_before = tracebridge.stats().tracing_errors
    local = Local()
    local.value = 1
    assert local.value == 1
    del local.value
    with pytest.raises(AttributeError):
        local.value
    assert tracebridge.stats().tracing_errors == errors_before + 4


def test_local_module_all_is_sorted_public_api() -> None:
    """Tests that tracebridge.local exports exactly Local and rehome, sorted."""
    assert local_module.__all__ == sorted(local_module.__all__)
    assert set(local_module.__all__) == {"Local", "rehome"}
