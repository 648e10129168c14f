"""Behaviour tests for tracebridge.sync.ThreadSensitiveContext (asgiref 3.13 semantics).

Plain contexts (one lazily created worker per outermost context) and the 3.13
``executor=`` variant (caller-owned single-thread executor, hides an inherited
CurrentThreadExecutor, entered once). Scenarios that could deadlock or block the loop
(#535) run in a subprocess with a timeout.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tracebridge.current_thread_executor import CurrentThreadExecutor
from tracebridge.sync import (
    AsyncToSync,
    SyncToAsync,
    ThreadSensitiveContext,
    async_to_sync,
    sync_to_async,
)

from isolated import run_isolated

pytestmark = pytest.mark.timeout(30)

ALREADY_ENTERED = "ThreadSensitiveContext is already entered"
ENTERED_AGAIN = "ThreadSensitiveContext with an executor cannot be entered again"
EXITED = (
    "ThreadSensitiveContext has exited. Tasks created inside a context with an executor "
    "must finish before it exits."
)

current_thread = threading.current_thread
where = sync_to_async(current_thread)


def _active_context() -> ThreadSensitiveContext | None:
    return SyncToAsync.thread_sensitive_context.get(None)


def _current_executor() -> CurrentThreadExecutor | None:
    return getattr(AsyncToSync.executors, "current", None)


def _single_worker(name: str) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)


# --------------------------------------------------------------------------- plain contexts


async def test_thread_sensitive_context_same_context_shares_one_thread() -> None:
    """Tests that all tasks inheriting one context share one new thread, joined when the context exits."""
    async with ThreadSensitiveContext() as ctx:
        assert isinstance(ctx, ThreadSensitiveContext)
        assert _active_context() is ctx
        first = await where()
        assert SyncToAsync.context_to_thread_executor.get(ctx) is not None
        gathered = await asyncio.gather(where(), where(), where())
        created = await asyncio.create_task(where())
        waited = await asyncio.wait_for(where(), timeout=5)
    process_thread = await asyncio.wrap_future(SyncToAsync.single_thread_executor.submit(current_thread))
    assert all(thread is first for thread in [*gathered, created, waited])
    assert first not in (process_thread, current_thread())
    assert _active_context() is None
    assert ctx not in SyncToAsync.context_to_thread_executor
    assert not first.is_alive()  # exit shut the executor down and waited for the join


async def test_thread_sensitive_context_different_contexts_run_in_parallel() -> None:
    """Tests that two concurrent contexts get two threads that run at the same time."""
    # A shared thread would run the two calls one after the other and break the barrier.
    barrier = threading.Barrier(2, timeout=5)

    def meet() -> threading.Thread:
        barrier.wait()
        return current_thread()

    async def request() -> threading.Thread:
        async with ThreadSensitiveContext():
            return await sync_to_async(meet)()

    first, second = await asyncio.wait_for(asyncio.gather(request(), request()), timeout=10)
    assert first is not second


async def test_thread_sensitive_context_nested_plain_context_is_no_op() -> None:
    """Tests that a nested plain context keeps the outer one active and its exit keeps the outer thread."""
    async with ThreadSensitiveContext() as outer:
        before = await where()
        async with ThreadSensitiveContext():
            assert _active_context() is outer
            nested = await where()
        assert _active_context() is outer
        after = await where()
    assert before is nested is after


def test_thread_sensitive_context_under_sync_outermost_keeps_calling_thread() -> None:
    """Tests that an inherited CurrentThreadExecutor wins over a plain context (sync outermost)."""

    async def main() -> threading.Thread:
        async with ThreadSensitiveContext():
            return await where()

    assert async_to_sync(main)() is current_thread()


async def test_thread_sensitive_context_outliving_task_gets_fresh_executor() -> None:
    """Tests that a task outliving a plain context gets a new executor registered for that context."""
    release = asyncio.Event()

    async def late() -> threading.Thread:
        await release.wait()
        return await where()

    async with ThreadSensitiveContext() as ctx:
        inside = await where()
        task = asyncio.create_task(late())
    assert ctx not in SyncToAsync.context_to_thread_executor
    release.set()
    late_thread = await asyncio.wait_for(task, timeout=5)
    assert late_thread is not inside
    # Nobody exits the context again, so the caller owns cleaning this executor up.
    executor = SyncToAsync.context_to_thread_executor.pop(ctx)
    await asyncio.to_thread(executor.shutdown)


def test_thread_sensitive_context_exit_keeps_loop_running_535() -> None:
    """Tests that leaving a context whose worker waits on the loop does not block the loop (#535)."""
    out = run_isolated(
        """
        import asyncio
        from tracebridge.sync import ThreadSensitiveContext, async_to_sync, sync_to_async

        async def main():
            loop = asyncio.get_running_loop()
            in_worker = asyncio.Event()
            gate = asyncio.Event()

            async def needs_loop():
                await gate.wait()
                return "done"

            def worker():
                loop.call_soon_threadsafe(in_worker.set)
                return async_to_sync(needs_loop)()

            async with ThreadSensitiveContext():
                task = asyncio.create_task(sync_to_async(worker)())
                await in_worker.wait()
                # Runs only if __aexit__ yields to the loop instead of joining the worker on it.
                loop.call_soon(gate.set)
            assert await task == "done"
            print("ok")

        asyncio.run(main())
        """
    )
    assert out.strip() == "ok"


def test_thread_sensitive_context_exit_does_not_use_default_executor_535() -> None:
    """Tests that the exit's executor join does not queue behind busy default-executor work (#535)."""
    out = run_isolated(
        """
        import asyncio, threading
        from concurrent.futures import ThreadPoolExecutor
        from tracebridge.sync import ThreadSensitiveContext, sync_to_async

        async def main():
            loop = asyncio.get_running_loop()
            loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
            unblock = threading.Event()
            blocker = loop.run_in_executor(None, unblock.wait)  # holds the only default worker
            async with ThreadSensitiveContext():
                await sync_to_async(threading.current_thread)()
            unblock.set()
            await blocker
            print("ok")

        asyncio.run(main())
        """
    )
    assert out.strip() == "ok"


# --------------------------------------------------------------------------- executor= contexts


async def test_thread_sensitive_context_executor_runs_on_it_and_restores_parent() -> None:
    """Tests that an executor context uses the given executor, nests plain contexts, and restores the parent."""
    with _single_worker("tb-given") as given:
        async with ThreadSensitiveContext() as parent:
            parent_thread = await where()
            async with ThreadSensitiveContext(executor=given) as child:
                assert _active_context() is child
                child_thread = await where()
                assert child_thread.name.startswith("tb-given")
                assert await asyncio.create_task(where()) is child_thread
                async with ThreadSensitiveContext():
                    assert _active_context() is child
                    assert await where() is child_thread
            assert _active_context() is parent
            assert child not in SyncToAsync.context_to_thread_executor
            assert await where() is parent_thread
            # The caller owns the executor: still running after the context exited.
            assert child_thread.is_alive()
            assert await asyncio.wrap_future(given.submit(current_thread)) is child_thread
    assert not child_thread.is_alive()


async def test_thread_sensitive_context_executor_nested_opens_new_context() -> None:
    """Tests that an executor context inside another executor context switches executor and back."""
    with _single_worker("tb-child") as child_pool, _single_worker("tb-grandchild") as grandchild_pool:
        async with ThreadSensitiveContext(executor=child_pool) as child:
            child_thread = await where()
            async with ThreadSensitiveContext(executor=grandchild_pool) as grandchild:
                assert _active_context() is grandchild
                grandchild_thread = await where()
            assert _active_context() is child
            assert await where() is child_thread
    assert child_thread.name.startswith("tb-child")
    assert grandchild_thread.name.startswith("tb-grandchild")


async def test_thread_sensitive_context_executor_without_parent_then_default_again() -> None:
    """Tests that an executor context works with no outer context and later calls use the process thread."""
    before = await where()
    with _single_worker("tb-alone") as given:
        async with ThreadSensitiveContext(executor=given):
            inside = await where()
    after = await where()
    assert inside is not before
    assert after is before
    assert _active_context() is None


def test_thread_sensitive_context_executor_hides_inherited_current_thread_executor() -> None:
    """Tests that under async_to_sync an executor context routes calls to its executor, then restores the binding."""
    with _single_worker("tb-hidden") as given:

        async def main() -> tuple[threading.Thread, threading.Thread, threading.Thread]:
            inherited = _current_executor()
            assert isinstance(inherited, CurrentThreadExecutor)
            before = await where()
            async with ThreadSensitiveContext(executor=given):
                assert _current_executor() is None
                inside = await where()
            assert _current_executor() is inherited
            after = await where()
            return before, inside, after

        before, inside, after = async_to_sync(main)()
    assert before is current_thread()
    assert after is current_thread()
    assert inside.name.startswith("tb-hidden")


@pytest.mark.parametrize("async_outermost", [False, True], ids=["sync-outermost", "async-outermost"])
def test_thread_sensitive_context_executor_across_bridges_no_deadlock(async_outermost: bool) -> None:
    """Tests that a nested async_to_sync inside an executor context uses its own frame's thread, no deadlock."""
    out = run_isolated(
        f"""
        import asyncio, threading
        from concurrent.futures import ThreadPoolExecutor
        from tracebridge.sync import AsyncToSync, ThreadSensitiveContext, async_to_sync, sync_to_async

        where = sync_to_async(threading.current_thread)

        async def innermost(expected):
            assert await where() is expected
            assert await asyncio.create_task(where()) is expected

        def middle():
            me = threading.current_thread()
            async_to_sync(innermost)(me)
            return me

        async def outer(parent_thread):
            inherited = AsyncToSync.executors.current
            assert await where() is parent_thread
            with ThreadPoolExecutor(max_workers=1) as given:
                async with ThreadSensitiveContext(executor=given):
                    child = await where()
                    assert child is not parent_thread
                    assert await sync_to_async(middle)() is child
            assert AsyncToSync.executors.current is inherited
            assert await where() is parent_thread

        def sync_outer():
            async_to_sync(outer)(threading.current_thread())

        if {async_outermost!r}:
            asyncio.run(sync_to_async(sync_outer)())
        else:
            sync_outer()
        print("ok")
        """
    )
    assert out.strip() == "ok"


async def test_thread_sensitive_context_executor_reentry_raises_runtime_error() -> None:
    """Tests that entering an executor context while active or after exit raises with asgiref's messages."""
    with _single_worker("tb-once") as given:
        ctx = ThreadSensitiveContext(executor=given)
        async with ctx:
            first = await where()
            with pytest.raises(RuntimeError) as excinfo:
                async with ctx:
                    pass
            assert str(excinfo.value) == ALREADY_ENTERED
            assert _active_context() is ctx
            assert await where() is first
        assert _active_context() is None
        with pytest.raises(RuntimeError) as excinfo:
            async with ctx:
                pass
        assert str(excinfo.value) == ENTERED_AGAIN
        assert _active_context() is None


async def test_thread_sensitive_context_executor_reused_by_later_contexts() -> None:
    """Tests that contexts entered one after another with the same executor share its thread."""
    with _single_worker("tb-reused") as given:
        async with ThreadSensitiveContext(executor=given):
            first = await where()
        async with ThreadSensitiveContext(executor=given):
            second = await where()
        outside = await where()
    assert first is second
    assert outside is not first


async def test_thread_sensitive_context_executor_outliving_task_raises_runtime_error() -> None:
    """Tests that a task outliving an executor context fails its thread-sensitive call with asgiref's message."""
    release = asyncio.Event()

    async def late() -> threading.Thread:
        await release.wait()
        return await where()

    with _single_worker("tb-exited") as given:
        async with ThreadSensitiveContext(executor=given) as ctx:
            task = asyncio.create_task(late())
        release.set()
        with pytest.raises(RuntimeError) as excinfo:
            await asyncio.wait_for(task, timeout=5)
    assert str(excinfo.value) == EXITED
    assert ctx not in SyncToAsync.context_to_thread_executor


async def test_thread_sensitive_context_executor_error_restores_parent() -> None:
    """Tests that an exception leaving an executor context restores the parent and keeps the executor usable."""
    with _single_worker("tb-error") as given:
        async with ThreadSensitiveContext() as parent:
            parent_thread = await where()
            with pytest.raises(ValueError):
                async with ThreadSensitiveContext(executor=given) as child:
                    child_thread = await where()
                    raise ValueError("boom")
            assert _active_context() is parent
            assert child not in SyncToAsync.context_to_thread_executor
            assert await where() is parent_thread
        assert await asyncio.wrap_future(given.submit(current_thread)) is child_thread


def test_thread_sensitive_context_executor_cancellation_exits_without_waiting_for_worker() -> None:
    """Tests that cancelling inside an executor context restores context and binding while the worker still runs."""
    after: dict[str, Any] = {}

    async def main() -> threading.Thread:
        loop = asyncio.get_running_loop()
        started = asyncio.Event()
        release = threading.Event()
        inherited = _current_executor()
        workers: list[threading.Thread] = []

        def blocking() -> None:
            workers.append(current_thread())
            loop.call_soon_threadsafe(started.set)
            release.wait(10)

        with _single_worker("tb-cancel") as given:
            async with ThreadSensitiveContext() as parent:

                async def run() -> None:
                    try:
                        async with ThreadSensitiveContext(executor=given):
                            await sync_to_async(blocking)()
                    finally:
                        after["context"] = _active_context()
                        after["executor"] = _current_executor()

                task = asyncio.create_task(run())
                try:
                    await asyncio.wait_for(started.wait(), timeout=5)
                    task.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await asyncio.wait_for(task, timeout=5)
                    after["released_before_exit"] = release.is_set()
                finally:
                    release.set()
                assert after["context"] is parent
                assert after["executor"] is inherited
                # The worker finished the orphaned call and the executor is still usable.
                assert await asyncio.wrap_future(given.submit(current_thread)) is workers[0]
        return workers[0]

    worker = async_to_sync(main)()
    assert after["released_before_exit"] is False
    assert worker.name.startswith("tb-cancel")


async def test_thread_sensitive_context_executor_siblings_isolated() -> None:
    """Tests that sibling tasks with their own executor contexts run on separate threads at the same time."""
    barrier = threading.Barrier(2, timeout=5)

    def meet() -> threading.Thread:
        barrier.wait()
        return current_thread()

    async def sibling(name: str) -> tuple[threading.Thread, threading.Thread]:
        with _single_worker(name) as given:
            async with ThreadSensitiveContext(executor=given):
                met = await sync_to_async(meet)()
                # Tasks created inside inherit the context, hence the thread.
                return met, await asyncio.create_task(where())

    async with ThreadSensitiveContext():
        parent_thread = await where()
        (a_met, a_task), (b_met, b_task) = await asyncio.wait_for(
            asyncio.gather(sibling("tb-a"), sibling("tb-b")), timeout=10
        )
        assert await where() is parent_thread
    assert a_met is a_task and a_met.name.startswith("tb-a")
    assert b_met is b_task and b_met.name.startswith("tb-b")
    assert parent_thread not in (a_met, b_met)


async def test_thread_sensitive_context_executor_leaves_non_thread_sensitive_calls() -> None:
    """Tests that thread_sensitive=False calls keep their own executor inside an executor context."""
    with _single_worker("tb-other") as other, _single_worker("tb-given") as given:
        elsewhere = sync_to_async(current_thread, thread_sensitive=False, executor=other)
        async with ThreadSensitiveContext(executor=given):
            assert (await elsewhere()).name.startswith("tb-other")
            assert (await where()).name.startswith("tb-given")


async def test_thread_sensitive_context_executor_unused_exits_cleanly() -> None:
    """Tests that an executor context with no sync work enters and exits, restoring the parent."""
    with _single_worker("tb-unused") as given:
        async with ThreadSensitiveContext() as parent:
            async with ThreadSensitiveContext(executor=given) as child:
                assert _active_context() is child
            assert _active_context() is parent
            assert child not in SyncToAsync.context_to_thread_executor
