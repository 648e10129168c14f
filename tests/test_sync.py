"""Behaviour tests for tracebridge.sync (asgiref 3.13 semantics).

Covers the public surface, argument validation, which thread runs what, exceptions and
``sys.exc_info()``, the deadlock guard, cancellation and the call shapes APM agents rely on.
``ThreadSensitiveContext`` lives in test_sync_thread_sensitive_context.py and contextvar
round-trips in test_sync_contextvars.py.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import os
import signal
import sys
import threading
import time
import traceback
import warnings
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

import tracebridge
import tracebridge.sync as sync_module
from tracebridge.current_thread_executor import CurrentThreadExecutor
from tracebridge.local import Local
from tracebridge.sync import (
    AsyncSingleThreadContext,
    AsyncToSync,
    SyncToAsync,
    ThreadSensitiveContext,
    async_to_sync,
    iscoroutinefunction,
    markcoroutinefunction,
    sync_to_async,
)

from isolated import run_isolated

# Anything here that deadlocks should fail fast rather than eat the global 60 s budget.
pytestmark = pytest.mark.timeout(30)

NOT_SYNC = "sync_to_async can only be applied to sync functions."
EXECUTOR_WITH_THREAD_SENSITIVE = "executor must not be set when thread_sensitive is True"
NOT_ASYNC = "async_to_sync was passed a non-async-marked callable"
IN_LOOP = (
    "You cannot use AsyncToSync in the same thread as an async event loop - "
    "just await the async function directly."
)
WOULD_DEADLOCK = "Single thread executor already being used, would deadlock"

current_thread = threading.current_thread


async def _where() -> tuple[threading.Thread, asyncio.AbstractEventLoop]:
    """The thread and loop an ``async_to_sync`` coroutine ends up running on."""
    return current_thread(), asyncio.get_running_loop()


def _current_executor() -> CurrentThreadExecutor | None:
    return getattr(AsyncToSync.executors, "current", None)


def _run_in_thread(target: Callable[[], Any], timeout: float = 10) -> Any:
    """Runs ``target`` on a fresh plain thread and returns its result (or re-raises)."""
    outcome: Future[Any] = Future()

    def run() -> None:
        try:
            outcome.set_result(target())
        except BaseException as exc:  # handed to the test thread below
            outcome.set_exception(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "thread did not finish: deadlock?"
    return outcome.result()


# --------------------------------------------------------------------------- API surface


PUBLIC_CALLABLES = [
    "AsyncSingleThreadContext",
    "AsyncToSync",
    "SyncToAsync",
    "ThreadSensitiveContext",
    "async_to_sync",
    "iscoroutinefunction",
    "markcoroutinefunction",
    "sync_to_async",
]


def test_sync_module_public_names_importable() -> None:
    """Tests that every public asgiref.sync name exists and the four classes are classes."""
    for name in PUBLIC_CALLABLES:
        assert callable(getattr(sync_module, name)), name
    for cls in (AsyncSingleThreadContext, AsyncToSync, SyncToAsync, ThreadSensitiveContext):
        assert isinstance(cls, type)


def test_sync_module_semi_internal_names_have_asgiref_types() -> None:
    """Tests that the semi-internal attributes users and APMs touch exist with asgiref's types."""
    assert isinstance(AsyncToSync.executors, Local)
    assert isinstance(AsyncToSync.loop_thread_executors, dict)
    assert isinstance(AsyncToSync.async_single_thread_context, contextvars.ContextVar)
    assert isinstance(AsyncToSync.context_to_thread_executor, weakref.WeakKeyDictionary)
    assert callable(AsyncToSync.main_wrap)
    assert isinstance(SyncToAsync.threadlocal, threading.local)
    assert isinstance(SyncToAsync.single_thread_executor, ThreadPoolExecutor)
    assert isinstance(SyncToAsync.thread_sensitive_context, contextvars.ContextVar)
    assert isinstance(SyncToAsync.deadlock_context, contextvars.ContextVar)
    assert isinstance(SyncToAsync.context_to_thread_executor, weakref.WeakKeyDictionary)
    assert callable(SyncToAsync.thread_handler)
    assert callable(sync_module._restore_context)


def _params(obj: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(obj).parameters.values()]


def test_sync_signatures_match_asgiref() -> None:
    """Tests that the factories, classes and context managers take asgiref's parameters."""
    pos, kw = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY
    assert _params(sync_to_async) == [
        ("func", pos, None),
        ("thread_sensitive", kw, True),
        ("executor", kw, None),
        ("context", kw, None),
    ]
    assert _params(async_to_sync) == [("awaitable", pos, None), ("force_new_loop", kw, False)]
    assert _params(SyncToAsync) == [
        ("func", pos, inspect.Parameter.empty),
        ("thread_sensitive", pos, True),
        ("executor", pos, None),
        ("context", pos, None),
    ]
    assert _params(AsyncToSync) == [
        ("awaitable", pos, inspect.Parameter.empty),
        ("force_new_loop", pos, False),
    ]
    assert _params(ThreadSensitiveContext) == [("executor", kw, None)]
    assert _params(AsyncSingleThreadContext) == []


def test_iscoroutinefunction_marking_detects_wrappers() -> None:
    """Tests that iscoroutinefunction/markcoroutinefunction mark sync_to_async wrappers, not the factory."""

    async def native() -> None:
        pass

    def plain() -> None:
        pass

    def marked() -> None:
        pass

    assert iscoroutinefunction(native)
    assert not iscoroutinefunction(plain)
    assert markcoroutinefunction(marked) is marked
    assert iscoroutinefunction(marked)
    assert iscoroutinefunction(sync_to_async(plain))
    # asyncio's check is the one that works for instances on 3.11.
    assert asyncio.iscoroutinefunction(sync_to_async(plain))
    assert not iscoroutinefunction(sync_to_async)


# --------------------------------------------------------------------------- decorators, wrapping


async def test_sync_to_async_decorator_without_arguments_wraps_function() -> None:
    """Tests that bare @sync_to_async returns a SyncToAsync carrying the function's metadata."""

    def add(a: int, b: int = 1) -> int:
        """Adds."""
        return a + b

    wrapped = sync_to_async(add)
    decorated = sync_to_async()(add)
    for wrapper in (wrapped, decorated):
        assert isinstance(wrapper, SyncToAsync)
        assert wrapper.__name__ == "add"
        assert wrapper.__doc__ == "Adds."
        assert wrapper.__wrapped__ is add
        assert wrapper.func is add
        assert await wrapper(2, b=3) == 5


async def test_sync_to_async_decorator_with_arguments_applies_them() -> None:
    """Tests that @sync_to_async(thread_sensitive=False, executor=...) runs on that executor."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tb-decorated") as pool:

        @sync_to_async(thread_sensitive=False, executor=pool)
        def where() -> threading.Thread:
            return current_thread()

        assert isinstance(where, SyncToAsync)
        assert where.__name__ == "where"
        assert (await where()).name.startswith("tb-decorated")


def test_async_to_sync_decorator_with_and_without_arguments_wraps() -> None:
    """Tests that @async_to_sync, @async_to_sync() and @async_to_sync(force_new_loop=True) all work."""

    @async_to_sync
    async def double(x: int) -> int:
        return x * 2

    @async_to_sync()
    async def triple(x: int) -> int:
        return x * 3

    @async_to_sync(force_new_loop=True)
    async def square(x: int) -> int:
        return x * x

    for wrapper in (double, triple, square):
        assert isinstance(wrapper, AsyncToSync)
    assert (double(4), triple(4), square(4)) == (8, 12, 16)


def test_async_to_sync_instance_has_no_name_or_wrapped() -> None:
    """Tests that a bare AsyncToSync instance has no __name__/__wrapped__ (no update_wrapper)."""

    async def named() -> None:
        pass

    wrapper = async_to_sync(named)
    assert not hasattr(wrapper, "__name__")
    assert not hasattr(wrapper, "__wrapped__")


async def test_sync_to_async_method_binds_self_with_name() -> None:
    """Tests that a decorated method gets self and its bound form is a named functools.partial."""

    class Counter:
        def __init__(self) -> None:
            self.total = 0

        @sync_to_async
        def bump(self, by: int) -> tuple[Counter, threading.Thread]:
            self.total += by
            return self, current_thread()

    counter = Counter()
    bound = counter.bump
    assert isinstance(bound, functools.partial)
    assert bound.__name__ == "bump"
    me, worker = await bound(3)
    assert me is counter
    assert counter.total == 3
    assert worker is not current_thread()


def test_async_to_sync_method_binds_self_with_name() -> None:
    """Tests that an @async_to_sync method gets self and its bound form is a named functools.partial."""

    class Greeter:
        @async_to_sync
        async def greet(self, name: str) -> tuple[Greeter, str]:
            return self, f"hello {name}"

    greeter = Greeter()
    bound = greeter.greet
    assert isinstance(bound, functools.partial)
    assert bound.__name__ == "greet"
    assert greeter.greet("ann") == (greeter, "hello ann")


async def test_sync_to_async_bound_method_copies_self() -> None:
    """Tests that wrapping bound methods copies __self__ onto both bridge instances."""

    class Thing:
        def get(self) -> Thing:
            return self

        async def aget(self) -> Thing:
            return self

    def plain() -> None:
        pass

    thing = Thing()
    wrapped = sync_to_async(thing.get)
    assert wrapped.__self__ is thing
    assert await wrapped() is thing
    assert async_to_sync(thing.aget).__self__ is thing
    assert not hasattr(sync_to_async(plain), "__self__")


def test_sync_to_async_copies_dict_and_overwrites_context_attribute() -> None:
    """Tests that update_wrapper copies the function's __dict__ but .context is the bridge's own."""

    def tagged() -> None:
        pass

    tagged.tag = "kept"  # type: ignore[attr-defined]
    tagged.context = "the function's own"  # type: ignore[attr-defined]
    wrapper = sync_to_async(tagged)
    assert wrapper.tag == "kept"  # type: ignore[attr-defined]
    assert wrapper.context is None
    ctx = contextvars.copy_context()
    assert sync_to_async(tagged, context=ctx).context is ctx


async def test_sync_to_async_partial_and_callable_instance_run_on_worker() -> None:
    """Tests that partials and callable instances are accepted and run off the loop thread."""

    def pair(a: int, b: int) -> tuple[int, int, threading.Thread]:
        return a, b, current_thread()

    class Adder:
        def __call__(self, x: int) -> tuple[int, threading.Thread]:
            return x + 1, current_thread()

    a, b, worker = await sync_to_async(functools.partial(pair, 1))(2)
    assert (a, b) == (1, 2)
    assert worker is not current_thread()
    value, worker = await sync_to_async(Adder())(1)
    assert value == 2
    assert worker is not current_thread()


def test_async_to_sync_partial_and_async_callable_instance_do_not_warn() -> None:
    """Tests that async partials and instances with async __call__ are accepted without a warning."""

    async def pair(a: int, b: int) -> tuple[int, int]:
        return a, b

    class AsyncAdder:
        async def __call__(self, x: int) -> int:
            return x + 1

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        partial_wrapper = async_to_sync(functools.partial(pair, 1))
        instance_wrapper = async_to_sync(AsyncAdder())
    assert caught == []
    assert partial_wrapper(2) == (1, 2)
    assert instance_wrapper(1) == 2


# --------------------------------------------------------------------------- argument validation


async def _coroutine_function() -> None:
    pass


class _AsyncCallable:
    async def __call__(self) -> None:
        pass


def _marked_sync() -> None:
    pass


markcoroutinefunction(_marked_sync)


@pytest.mark.parametrize(
    "target",
    [
        _coroutine_function,
        functools.partial(_coroutine_function),
        _AsyncCallable(),
        _marked_sync,
        42,
    ],
    ids=["coroutine-function", "async-partial", "async-call-instance", "marked", "non-callable"],
)
def test_sync_to_async_non_sync_target_raises_type_error(target: Any) -> None:
    """Tests that sync_to_async rejects async or non-callable targets at wrap time, in every form."""
    for wrap in (
        sync_to_async,
        sync_to_async(thread_sensitive=False),
        SyncToAsync,
    ):
        with pytest.raises(TypeError) as excinfo:
            wrap(target)
        assert str(excinfo.value) == NOT_SYNC


def test_sync_to_async_decorating_coroutine_function_raises_at_definition() -> None:
    """Tests that @sync_to_async on an async def fails when the decorator is applied."""
    with pytest.raises(TypeError) as excinfo:

        @sync_to_async
        async def handler() -> None:
            pass

    assert str(excinfo.value) == NOT_SYNC


def test_sync_to_async_executor_with_thread_sensitive_raises_type_error() -> None:
    """Tests that an executor is refused while thread_sensitive is True (the default)."""

    def work() -> None:
        pass

    with ThreadPoolExecutor(max_workers=1) as pool:
        attempts: list[Callable[[], Any]] = [
            lambda: sync_to_async(work, executor=pool),
            lambda: sync_to_async(work, thread_sensitive=True, executor=pool),
            lambda: sync_to_async(executor=pool)(work),
            lambda: SyncToAsync(work, True, pool),
        ]
        for attempt in attempts:
            with pytest.raises(TypeError) as excinfo:
                attempt()
            assert str(excinfo.value) == EXECUTOR_WITH_THREAD_SENSITIVE


def test_sync_to_async_positional_thread_sensitive_raises_type_error() -> None:
    """Tests that thread_sensitive cannot be passed positionally to sync_to_async."""

    def work() -> None:
        pass

    with pytest.raises(TypeError):
        sync_to_async(work, False)  # type: ignore[call-overload]


def _plain_function() -> None:
    pass


@pytest.mark.parametrize(
    "target", [_plain_function, 42, lambda: None], ids=["function", "non-callable", "lambda"]
)
def test_async_to_sync_non_async_target_warns(target: Any) -> None:
    """Tests that async_to_sync only warns (UserWarning, exact text) for non-async targets."""
    with pytest.warns(UserWarning) as record:
        wrapper = async_to_sync(target)
    assert [str(w.message) for w in record] == [NOT_ASYNC]
    assert isinstance(wrapper, AsyncToSync)


def test_async_to_sync_warning_points_at_constructor_caller() -> None:
    """Tests that the non-async warning from AsyncToSync(...) is attributed to its caller (stacklevel 2)."""
    with pytest.warns(UserWarning) as record:
        AsyncToSync(_plain_function)
    assert len(record) == 1
    assert record[0].filename == __file__


def test_async_to_sync_unmarked_coroutine_factory_still_runs() -> None:
    """Tests that a plain function returning a coroutine works after the warning."""

    async def value() -> str:
        return "ran"

    with pytest.warns(UserWarning):
        wrapper = async_to_sync(lambda: value())
    assert wrapper() == "ran"


@pytest.mark.parametrize("force_new_loop", [False, True])
async def test_async_to_sync_in_event_loop_thread_raises_runtime_error(force_new_loop: bool) -> None:
    """Tests that calling AsyncToSync on a thread running a loop raises before calling the target."""
    calls = []

    def target() -> Any:
        calls.append(1)
        return asyncio.sleep(0)

    markcoroutinefunction(target)
    with pytest.raises(RuntimeError) as excinfo:
        async_to_sync(target, force_new_loop=force_new_loop)()
    assert str(excinfo.value) == IN_LOOP
    assert calls == []
    assert _current_executor() is None


# --------------------------------------------------------------------------- thread routing


def test_async_to_sync_from_sync_thread_runs_in_fresh_loop_thread() -> None:
    """Tests that async_to_sync from a loop-less thread runs each call in a new, then closed, loop thread."""
    caller = current_thread()
    first_thread, first_loop = async_to_sync(_where)()
    second_thread, second_loop = async_to_sync(_where)()
    assert first_thread is not caller
    assert second_thread is not caller
    assert first_loop is not second_loop
    assert first_loop.is_closed()
    assert _current_executor() is None


@pytest.mark.parametrize("caller", ["main-thread", "plain-thread"])
def test_sync_to_async_under_sync_outermost_runs_on_calling_thread(caller: str) -> None:
    """Tests that thread-sensitive calls under async_to_sync run on the calling sync thread, from tasks too."""
    where = sync_to_async(current_thread)

    async def main() -> list[threading.Thread]:
        direct = await where()
        gathered = await asyncio.gather(where(), where(), where())
        created = await asyncio.create_task(where())
        waited = await asyncio.wait_for(where(), timeout=5)
        shielded = await asyncio.shield(where())
        return [direct, *gathered, created, waited, shielded]

    def scenario() -> tuple[threading.Thread, list[threading.Thread]]:
        return current_thread(), async_to_sync(main)()

    if caller == "main-thread":
        calling, seen = scenario()
        assert calling is threading.main_thread()
    else:
        calling, seen = _run_in_thread(scenario)
        assert calling is not threading.main_thread()
    assert all(thread is calling for thread in seen), seen


def test_sync_to_async_task_without_inherited_context_uses_loop_registry() -> None:
    """Tests that a task created with an empty context still reaches the caller thread via the loop registry."""

    async def main() -> threading.Thread:
        loop = asyncio.get_running_loop()
        assert loop in AsyncToSync.loop_thread_executors
        task = loop.create_task(sync_to_async(current_thread)(), context=contextvars.Context())
        return await task

    assert async_to_sync(main)() is current_thread()


async def test_sync_to_async_async_outermost_uses_process_single_thread() -> None:
    """Tests that with async outermost every thread-sensitive call shares the process-wide sync thread."""
    where = sync_to_async(current_thread)
    first = await where()
    gathered = await asyncio.gather(where(), where(), where())
    created = await asyncio.create_task(where())
    shared = await asyncio.wrap_future(SyncToAsync.single_thread_executor.submit(current_thread))
    assert first is not current_thread()
    assert all(thread is first for thread in [*gathered, created, shared])


def test_sync_to_async_separate_event_loops_share_process_single_thread() -> None:
    """Tests that separate asyncio.run loops, on any thread, use the same process-wide sync thread."""
    where = sync_to_async(current_thread)
    first = asyncio.run(where())
    second = asyncio.run(where())
    from_other_thread = _run_in_thread(lambda: asyncio.run(where()))
    assert first is second is from_other_thread
    assert first is not current_thread()


async def test_sync_to_async_single_thread_runs_calls_one_at_a_time() -> None:
    """Tests that two concurrent thread-sensitive calls run one after the other, in submission order."""
    order: list[str] = []
    second_started = threading.Event()

    def first() -> bool:
        order.append("first")
        # If the second call could run now it would set the event well within this bound.
        return second_started.wait(0.2)

    def second() -> None:
        second_started.set()
        order.append("second")

    overlapped, _ = await asyncio.gather(sync_to_async(first)(), sync_to_async(second)())
    assert overlapped is False
    assert order == ["first", "second"]


async def test_sync_to_async_thread_sensitive_false_uses_loop_default_executor() -> None:
    """Tests that thread_sensitive=False without an executor runs on the loop's default executor."""
    loop = asyncio.get_running_loop()
    # asyncio.run shuts the default executor down when this test's loop ends.
    loop.set_default_executor(ThreadPoolExecutor(max_workers=2, thread_name_prefix="tb-default"))
    worker = await sync_to_async(current_thread, thread_sensitive=False)()
    assert worker.name.startswith("tb-default")


async def test_sync_to_async_duck_typed_executor_gets_exactly_one_submit() -> None:
    """Tests that a user executor needs only .submit() and receives exactly one submit per call."""

    class CountingExecutor:
        def __init__(self, pool: ThreadPoolExecutor) -> None:
            self.pool = pool
            self.submits = 0

        def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
            self.submits += 1
            return self.pool.submit(fn, *args, **kwargs)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tb-duck") as pool:
        executor = CountingExecutor(pool)
        wrapper = sync_to_async(current_thread, thread_sensitive=False, executor=executor)  # type: ignore[arg-type]
        worker = await wrapper()
        assert executor.submits == 1
        assert worker.name.startswith("tb-duck")
        await wrapper()
        assert executor.submits == 2


async def test_async_to_sync_inside_sync_to_async_runs_on_outer_loop_thread() -> None:
    """Tests that async_to_sync from a sync_to_async worker runs on the outer loop, and its sync calls on the worker."""
    loop_thread, loop = current_thread(), asyncio.get_running_loop()

    async def inner() -> tuple[threading.Thread, asyncio.AbstractEventLoop, threading.Thread]:
        return current_thread(), asyncio.get_running_loop(), await sync_to_async(current_thread)()

    def middle() -> tuple[threading.Thread, Any]:
        return current_thread(), async_to_sync(inner)()

    worker, (inner_thread, inner_loop, innermost) = await sync_to_async(middle)()
    assert worker is not loop_thread
    assert inner_thread is loop_thread
    assert inner_loop is loop
    assert innermost is worker


async def test_async_to_sync_force_new_loop_inside_sync_to_async_uses_new_loop() -> None:
    """Tests that force_new_loop=True ignores the outer loop and runs on a new loop thread."""
    loop_thread, loop = current_thread(), asyncio.get_running_loop()

    async def inner() -> tuple[threading.Thread, asyncio.AbstractEventLoop, threading.Thread]:
        return current_thread(), asyncio.get_running_loop(), await sync_to_async(current_thread)()

    def middle() -> tuple[threading.Thread, Any]:
        return current_thread(), async_to_sync(inner, force_new_loop=True)()

    worker, (inner_thread, inner_loop, innermost) = await sync_to_async(middle)()
    assert inner_loop is not loop
    assert inner_thread not in (loop_thread, worker)
    assert innermost is worker


async def test_async_to_sync_built_in_loop_called_from_plain_thread_uses_new_loop() -> None:
    """Tests that AsyncToSync captures no loop at construction (#562): a later plain-thread call gets a new loop."""
    loop = asyncio.get_running_loop()
    wrapper = async_to_sync(_where)  # built while this loop runs
    # The loop stays free while the thread runs, so a captured-loop bug shows as a wrong loop, not a hang.
    inner_thread, inner_loop = await asyncio.to_thread(_run_in_thread, wrapper)
    assert inner_loop is not loop
    assert inner_thread is not current_thread()


def test_async_to_sync_parent_loop_closed_falls_back_to_new_loop() -> None:
    """Tests that a worker remembering a closed parent loop runs async_to_sync on a new loop instead."""
    with ThreadPoolExecutor(max_workers=1) as pool:

        async def first() -> asyncio.AbstractEventLoop:
            await sync_to_async(lambda: None, thread_sensitive=False, executor=pool)()
            return asyncio.get_running_loop()

        old_loop = asyncio.run(first())
        assert old_loop.is_closed()
        # The pool's thread still has old_loop in SyncToAsync.threadlocal.
        inner_thread, inner_loop = pool.submit(async_to_sync(_where)).result(timeout=10)
        assert inner_loop is not old_loop
        assert inner_thread is not current_thread()


def test_async_to_sync_separate_sync_threads_each_keep_their_thread() -> None:
    """Tests that concurrent sync callers each get their own thread-sensitive routing (context-scoped binding)."""
    # Both sync parts must be inside at once: funnelling them onto one thread breaks the barrier.
    barrier = threading.Barrier(2, timeout=5)

    def sync_part() -> threading.Thread:
        barrier.wait()
        return current_thread()

    async def main() -> threading.Thread:
        return await sync_to_async(sync_part)()

    results: dict[threading.Thread, threading.Thread] = {}

    def caller() -> None:
        results[current_thread()] = async_to_sync(main)()

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert results == {thread: thread for thread in threads}


def test_async_to_sync_nested_frames_each_get_own_current_thread_executor() -> None:
    """Tests that every sync frame pushes its own CurrentThreadExecutor and pops it afterwards."""
    seen: dict[str, Any] = {}

    async def inner() -> None:
        seen["inner_executor"] = _current_executor()
        seen["innermost"] = await sync_to_async(current_thread)()

    def middle() -> None:
        seen["middle"] = current_thread()
        async_to_sync(inner)()

    async def outer() -> None:
        seen["outer_executor"] = _current_executor()
        await sync_to_async(middle)()
        seen["outer_executor_after"] = _current_executor()

    assert _current_executor() is None
    async_to_sync(outer)()
    assert _current_executor() is None
    assert isinstance(seen["outer_executor"], CurrentThreadExecutor)
    assert isinstance(seen["inner_executor"], CurrentThreadExecutor)
    assert seen["inner_executor"] is not seen["outer_executor"]
    assert seen["outer_executor_after"] is seen["outer_executor"]
    assert seen["middle"] is current_thread()
    assert seen["innermost"] is current_thread()


def test_async_to_sync_new_loop_cancels_leftover_tasks() -> None:
    """Tests that fire-and-forget tasks left in a new-loop async_to_sync are cancelled when it returns."""
    cancelled = threading.Event()
    tasks: list[asyncio.Task[None]] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def spawn() -> None:
        tasks.append(asyncio.create_task(forever()))
        await asyncio.sleep(0)  # let it start

    async_to_sync(spawn)()
    assert cancelled.is_set()


# --------------------------------------------------------------------------- AsyncSingleThreadContext


def test_async_single_thread_context_runs_new_loops_on_one_thread() -> None:
    """Tests that inside AsyncSingleThreadContext each new loop runs on one worker, shut down on exit."""
    where_sync = sync_to_async(current_thread)

    async def probe() -> tuple[threading.Thread, asyncio.AbstractEventLoop, threading.Thread]:
        return current_thread(), asyncio.get_running_loop(), await where_sync()

    with AsyncSingleThreadContext() as ctx:
        assert isinstance(ctx, AsyncSingleThreadContext)
        first_thread, first_loop, first_sync = async_to_sync(probe)()
        second_thread, second_loop, second_sync = async_to_sync(probe)()
    assert first_thread is second_thread
    assert first_thread is not current_thread()
    assert first_loop is not second_loop
    assert first_sync is second_sync is current_thread()
    assert not first_thread.is_alive()
    outside_a, _ = async_to_sync(_where)()
    outside_b, _ = async_to_sync(_where)()
    assert outside_a is not outside_b


def test_async_single_thread_context_nested_outermost_wins() -> None:
    """Tests that a nested AsyncSingleThreadContext is a no-op and its exit keeps the outer worker."""
    with AsyncSingleThreadContext():
        before, _ = async_to_sync(_where)()
        with AsyncSingleThreadContext():
            nested, _ = async_to_sync(_where)()
        after, _ = async_to_sync(_where)()
    assert before is nested is after


def test_async_single_thread_context_carries_contextvars_between_calls() -> None:
    """Tests that contextvar changes flow back to the caller between calls in the block."""
    counter: contextvars.ContextVar[int] = contextvars.ContextVar("counter")

    async def bump() -> None:
        counter.set(counter.get(0) + 1)

    def scenario() -> int:
        with AsyncSingleThreadContext():
            async_to_sync(bump)()
            async_to_sync(bump)()
            return counter.get()

    assert contextvars.copy_context().run(scenario) == 2


async def test_async_single_thread_context_ignored_under_parent_loop() -> None:
    """Tests that inside sync_to_async the context is ignored and calls go to the parent loop thread."""
    loop_thread, loop = current_thread(), asyncio.get_running_loop()

    def middle() -> tuple[threading.Thread, asyncio.AbstractEventLoop]:
        with AsyncSingleThreadContext():
            return async_to_sync(_where)()

    inner_thread, inner_loop = await sync_to_async(middle)()
    assert inner_thread is loop_thread
    assert inner_loop is loop


# --------------------------------------------------------------------------- exceptions, exc_info


def _frame_names(exc: BaseException) -> list[str]:
    return [frame.name for frame in traceback.extract_tb(exc.__traceback__)]


@pytest.mark.parametrize("thread_sensitive", [True, False])
async def test_sync_to_async_exception_propagates_same_object(thread_sensitive: bool) -> None:
    """Tests that the sync function's exception reaches the awaiting task as the same object with its frames."""
    error = ValueError("boom")

    def explode() -> None:
        raise error

    with pytest.raises(ValueError) as excinfo:
        await sync_to_async(explode, thread_sensitive=thread_sensitive)()
    assert excinfo.value is error
    assert "explode" in _frame_names(excinfo.value)
    assert SyncToAsync.deadlock_context.get(False) is False


def test_async_to_sync_exception_propagates_same_object() -> None:
    """Tests that the coroutine's exception reaches the sync caller as the same object and frames are kept."""
    error = KeyError("boom")

    async def explode() -> None:
        raise error

    with pytest.raises(KeyError) as excinfo:
        async_to_sync(explode)()
    assert excinfo.value is error
    assert "explode" in _frame_names(excinfo.value)
    assert _current_executor() is None


def test_bridges_nested_exception_crosses_both_ways_unchanged() -> None:
    """Tests that an exception raised deep in sync->async->sync->async nesting arrives unchanged at the top."""
    error = LookupError("deep")

    async def deepest() -> None:
        raise error

    def sync_inner() -> None:
        async_to_sync(deepest)()

    async def async_middle() -> None:
        await sync_to_async(sync_inner)()

    with pytest.raises(LookupError) as excinfo:
        async_to_sync(async_middle)()
    assert excinfo.value is error


@pytest.mark.parametrize("thread_sensitive", [True, False])
async def test_sync_to_async_in_except_block_preserves_exc_info_without_reraising(
    thread_sensitive: bool,
) -> None:
    """Tests that sys.exc_info() is carried into the sync function and the handled error is not re-raised."""

    def in_flight() -> BaseException | None:
        return sys.exc_info()[1]

    wrapper = sync_to_async(in_flight, thread_sensitive=thread_sensitive)
    handled = KeyError("handled")
    try:
        raise handled
    except KeyError:
        seen = await wrapper()
        still_handling = sys.exc_info()[1]
    assert seen is handled
    assert still_handling is handled
    assert sys.exc_info() == (None, None, None)
    assert await wrapper() is None


def test_async_to_sync_in_except_block_preserves_exc_info_without_reraising() -> None:
    """Tests that sys.exc_info() is carried into the coroutine (new loop and parent loop) without re-raising."""

    async def in_flight() -> BaseException | None:
        return sys.exc_info()[1]

    handled = ValueError("handled")
    try:
        raise handled
    except ValueError:
        seen_new_loop = async_to_sync(in_flight)()
        still_handling = sys.exc_info()[1]
    assert seen_new_loop is handled
    assert still_handling is handled
    assert async_to_sync(in_flight)() is None

    def worker() -> tuple[BaseException | None, BaseException | None]:
        inner_handled = RuntimeError("inner handled")
        try:
            raise inner_handled
        except RuntimeError:
            return inner_handled, async_to_sync(in_flight)()

    async def outer() -> tuple[BaseException | None, BaseException | None]:
        return await sync_to_async(worker)()

    expected, seen_parent_loop = asyncio.run(outer())
    assert seen_parent_loop is expected


# --------------------------------------------------------------------------- deadlock guard


async def test_sync_to_async_reentering_single_thread_executor_raises_would_deadlock() -> None:
    """Tests that a thread-sensitive call from a context already holding the process sync thread raises."""
    loop = asyncio.get_running_loop()

    async def inner() -> threading.Thread:
        return await sync_to_async(current_thread)()

    def blocking() -> threading.Thread:
        # Schedules inner in this worker's context (deadlock flag set) and blocks the only sync thread.
        return asyncio.run_coroutine_threadsafe(inner(), loop).result(timeout=5)

    with pytest.raises(RuntimeError) as excinfo:
        await sync_to_async(blocking)()
    assert str(excinfo.value) == WOULD_DEADLOCK
    assert SyncToAsync.deadlock_context.get(False) is False
    assert await sync_to_async(current_thread)() is not current_thread()


async def test_sync_to_async_deadlock_flag_set_during_call_and_reset_after_error() -> None:
    """Tests that the deadlock flag is set for the worker's context and reset in the caller, also after errors."""

    def flag() -> bool:
        return SyncToAsync.deadlock_context.get(False)

    def explode() -> None:
        raise ValueError("boom")

    assert await sync_to_async(flag)() is True
    assert SyncToAsync.deadlock_context.get(False) is False
    with pytest.raises(ValueError):
        await sync_to_async(explode)()
    assert SyncToAsync.deadlock_context.get(False) is False
    assert await sync_to_async(flag)() is True


# --------------------------------------------------------------------------- cancellation


async def test_sync_to_async_cancelled_raises_while_worker_runs_on() -> None:
    """Tests that cancelling a pending sync_to_async raises CancelledError at once while the thread keeps running."""
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    release, finished = threading.Event(), threading.Event()

    def blocking() -> None:
        loop.call_soon_threadsafe(started.set)
        release.wait(10)
        finished.set()

    task = asyncio.create_task(sync_to_async(blocking)())
    try:
        await asyncio.wait_for(started.wait(), timeout=5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)
        assert task.cancelled()
        assert not finished.is_set()  # orphaned sync work is still running
    finally:
        release.set()
    # Free the process-wide sync thread before the next test.
    assert await asyncio.to_thread(finished.wait, 5)


async def test_sync_to_async_cancellation_forwarded_to_inner_async_to_sync_task() -> None:
    """Tests that cancelling sync_to_async cancels the task its sync code started with async_to_sync."""
    inner_started = asyncio.Event()
    inner_cancelled = threading.Event()
    sync_done = threading.Event()

    async def inner() -> None:
        inner_started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            inner_cancelled.set()
            raise

    def middle() -> None:
        try:
            async_to_sync(inner)()
        finally:
            sync_done.set()

    task = asyncio.create_task(sync_to_async(middle)())
    await asyncio.wait_for(inner_started.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5)
    assert inner_cancelled.is_set()
    assert await asyncio.to_thread(sync_done.wait, 5)


async def test_sync_to_async_cancellation_absorbed_by_inner_task_returns_normally() -> None:
    """Tests that if the inner async_to_sync task swallows the cancellation the outer call returns normally."""
    inner_started = asyncio.Event()

    async def inner() -> str:
        inner_started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "absorbed"
        return "not cancelled"

    def middle() -> str:
        return async_to_sync(inner)()

    task = asyncio.create_task(sync_to_async(middle)())
    await asyncio.wait_for(inner_started.wait(), timeout=5)
    task.cancel()
    assert await asyncio.wait_for(task, timeout=5) == "absorbed"
    assert not task.cancelled()


# --------------------------------------------------------------------------- kwargs and call shapes

# Names the bridges use internally; a user function taking them must still receive them.
OVERLAPPING_KWARGS = {
    name: index
    for index, name in enumerate(
        [
            "context",
            "task_context",
            "loop",
            "exc_info",
            "func",
            "child",
            "awaitable",
            "call_result",
            "executor",
            "thread_sensitive",
            "force_new_loop",
            "args",
            "kwargs",
        ]
    )
}


@pytest.mark.parametrize("thread_sensitive", [True, False])
async def test_sync_to_async_kwargs_named_like_internals_reach_function(thread_sensitive: bool) -> None:
    """Tests that user kwargs named context/task_context/loop/exc_info/func/... reach the sync function."""

    def echo(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        return args, kwargs

    wrapper = sync_to_async(echo, thread_sensitive=thread_sensitive)
    assert await wrapper(1, 2, **OVERLAPPING_KWARGS) == ((1, 2), OVERLAPPING_KWARGS)


def test_async_to_sync_kwargs_named_like_internals_reach_coroutine() -> None:
    """Tests that user kwargs named like AsyncToSync internals reach the coroutine function."""

    async def echo(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        return args, kwargs

    assert async_to_sync(echo)(1, 2, **OVERLAPPING_KWARGS) == ((1, 2), OVERLAPPING_KWARGS)


async def test_sync_to_async_thread_handler_call_shape_allows_apm_patching() -> None:
    """Tests that thread_handler gets (loop, exc_info, task_context, func, child) with child a mutable partial."""
    calls: list[dict[str, Any]] = []

    class Recording(SyncToAsync):  # type: ignore[type-arg]
        def thread_handler(self, loop, exc_info, task_context, func, *args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(
                {
                    "loop": loop,
                    "exc_info": exc_info,
                    "task_context": task_context,
                    "func": func,
                    "args": args,
                    "kwargs": dict(kwargs),
                    "thread": current_thread(),
                }
            )
            # What APM agents do (#571): pop a kwarg they injected before the real call.
            args[0].keywords.pop("injected")
            return super().thread_handler(loop, exc_info, task_context, func, *args, **kwargs)

    def target(a: int, *, b: int) -> tuple[int, int, threading.Thread]:
        return a, b, current_thread()

    a, b, worker = await Recording(target)(1, b=2, injected=True)
    assert (a, b) == (1, 2)
    [call] = calls
    assert call["loop"] is asyncio.get_running_loop()
    assert call["exc_info"] == (None, None, None)
    assert isinstance(call["task_context"], list)
    assert callable(call["func"])
    assert call["kwargs"] == {}
    assert call["thread"] is worker is not current_thread()
    [child] = call["args"]
    assert isinstance(child, functools.partial)
    assert child.func is target
    assert child.args == (1,)
    assert child.keywords == {"b": 2}  # after the pop


# --------------------------------------------------------------------------- fork safety


def _wait_child(pid: int, timeout: float) -> int | None:
    """Exit code of a forked child, or None (after killing it) if it hung."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
async def test_async_to_sync_after_fork_in_worker_ignores_parent_loop() -> None:
    """Tests that a forked child of a sync_to_async worker does not schedule onto the parent's loop (#194)."""
    loop = asyncio.get_running_loop()

    async def child_loop() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def fork_and_bridge() -> int | None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
            pid = os.fork()
        if pid == 0:  # child: only this thread exists; the parent's loop never runs here
            code = 1
            try:
                code = 0 if async_to_sync(child_loop)() is not loop else 2
            finally:
                os._exit(code)
        return _wait_child(pid, 10)

    assert await sync_to_async(fork_and_bridge)() == 0


# --------------------------------------------------------------------------- subprocess helper smoke


def test_sync_to_async_process_exits_after_bridging() -> None:
    """Tests that a process that used both bridges exits promptly (no worker blocks interpreter exit)."""
    out = run_isolated(
        """
        import asyncio, threading
        import tracebridge
        from tracebridge.sync import async_to_sync, sync_to_async

        async def inner():
            return await sync_to_async(threading.current_thread)()

        def middle():
            return async_to_sync(inner)()

        assert asyncio.run(sync_to_async(middle)()) is not threading.main_thread()
        assert async_to_sync(inner)() is threading.main_thread()
        print(tracebridge.__file__)
        """
    )
    assert out.strip() == os.path.abspath(tracebridge.__file__)
