"""Hand finished spans to span processors in bulk (the drain thread's last step).

The drain thread builds a few hundred spans per pass.  Handing them over one
``on_end`` at a time costs, per span, two Python frames inside the SDK's
``BatchSpanProcessor`` and a ``getpid()`` system call (its fork check), which on
a virtual machine is the most expensive part of delivering a span.  A batch
processor takes the whole pass at once instead: the same checks once per pass,
then the same ``deque.appendleft`` per span.

Only where that is exactly what the SDK would do: a ``BatchSpanProcessor``
whose ``on_end`` is not overridden, over an SDK whose ``on_end`` and
``BatchProcessor.emit`` are the ones this was written against (their source
is fingerprinted).  Anything else gets plain ``on_end`` calls, so the SDK's
own warnings and drop counts stay intact.  A processor may also offer
``on_end_many(spans)`` itself (tracebridge's counting processor does).

**A full queue waits a little before it drops.**  The drain thread can build
spans faster than a batch processor's exporter thread takes them (a burst; or
one CPU, where the exporter thread runs only when the drain thread lets go), and
the SDK drops a span for every one it queues past ``max_queue_size``.  The
drain thread is tracebridge's own, never the traced application's: so on a full
queue it wakes the exporter thread and waits for room, up to
:data:`ROOM_WAIT_S` per hand-over, and only then lets ``on_end`` drop (and
warn, and count).  A wait that runs out means the exporter thread is stuck
(a hung exporter): hand-overs then drop at once for :data:`STUCK_COOLDOWN_S`,
so a backlog cannot turn into seconds of waiting (at exit, say).  Never the
application's time in any case.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections import deque
from collections.abc import Callable, Sequence
from time import monotonic as _monotonic
from time import sleep as _sleep
from typing import Any

__all__ = ["ROOM_WAIT_S", "batch_append", "deliver"]

# How long one hand-over may wait for room in a full batch queue, and how long
# after a wait ran out hand-overs do not wait at all (see above).
ROOM_WAIT_S = 0.05
STUCK_COOLDOWN_S = 1.0
_ROOM_POLL_S = 0.0005
_stuck_until = 0.0  # the monotonic time before which a full queue is not waited for

# sha256 of inspect.getsource(BatchSpanProcessor.on_end) + inspect.getsource(BatchProcessor.emit)
# in the SDK versions whose emit is mirrored below (opentelemetry-sdk 1.39-1.45 at least).
_KNOWN_SDK_SOURCES = frozenset({"bf27e8a1efc3da9e72380b175567ecec7346b4844181655d4516d1d5aa5260f8"})

# type(processor) -> whether batch_append may feed it directly (checked once per type).
_appendable: dict[type, bool] = {}


def _sdk_matches() -> bool:
    try:
        from opentelemetry.sdk._shared_internal import BatchProcessor
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        source = inspect.getsource(BatchSpanProcessor.on_end) + inspect.getsource(BatchProcessor.emit)
        return hashlib.sha256(source.encode()).hexdigest() in _KNOWN_SDK_SOURCES
    except Exception:
        return False


_SDK_MATCHES: bool | None = None  # computed on first use (inspect reads files)


def _can_append(processor: object) -> bool:
    kind = type(processor)
    known = _appendable.get(kind)
    if known is None:
        global _SDK_MATCHES
        if _SDK_MATCHES is None:
            _SDK_MATCHES = _sdk_matches()
        known = False
        if _SDK_MATCHES:
            from opentelemetry.sdk._shared_internal import BatchProcessor
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            engine = getattr(processor, "_batch_processor", None)
            known = (
                isinstance(processor, BatchSpanProcessor)
                and type(engine) is BatchProcessor
                and isinstance(getattr(engine, "_queue", None), deque)
            )
        _appendable[kind] = known
    return known


def batch_append(processor: Any, spans: Sequence[Any]) -> int:
    """Queue ``spans`` (sampled, ended) on a ``BatchSpanProcessor`` as its ``on_end`` would; how many it took.

    Stops at the first span the SDK would have to treat specially (shut down,
    forked since, queue still full after waiting up to :data:`ROOM_WAIT_S`):
    the caller hands that one and the rest to ``on_end``.  Returns 0 when the
    processor is not one this can feed.
    """
    if not spans or not _can_append(processor):
        return 0
    engine = processor._batch_processor
    if engine._shutdown or engine._pid != os.getpid():
        return 0
    queue = engine._queue
    limit = engine._max_queue_size
    batch_size = engine._max_export_batch_size
    taken = 0
    total = len(spans)
    deadline = 0.0
    while taken < total:
        room = limit - len(queue)
        if room <= 0:
            if not deadline:
                deadline = _monotonic() + ROOM_WAIT_S
            if not _wait_for_room(engine, queue, limit, deadline):
                break
            continue
        # As many as fit, in one C call: extendleft is appendleft span by span
        # (the exporter thread pops from the right, so the order is emit's).
        queue.extendleft(spans[taken : taken + room] if taken or room < total else spans)
        taken = min(total, taken + room)
        # As emit: wake the exporter thread once a batch is ready.
        if len(queue) >= batch_size and not engine._worker_awaken.is_set():
            engine._worker_awaken.set()
    return taken


def _wait_for_room(engine: Any, queue: deque[Any], limit: int, deadline: float) -> bool:
    # The drain thread, on a full queue: wake the exporter thread (a full queue
    # is at least one batch) and sleep, letting go of the GIL, until it has
    # taken a batch.  False when the deadline passes (then no waiting for a
    # while), the processor shuts down, or an earlier wait ran out recently.
    global _stuck_until
    if _monotonic() < _stuck_until:
        return False
    engine._worker_awaken.set()
    while len(queue) >= limit:
        if engine._shutdown:
            return False
        now = _monotonic()
        if now >= deadline:
            _stuck_until = now + STUCK_COOLDOWN_S
            return False
        _sleep(_ROOM_POLL_S)
    return True


def deliver(processor: Any, spans: Sequence[Any], failed: Callable[[str], None]) -> None:
    """Give every span of ``spans`` to ``processor``: in bulk where it can take them, else one by one.

    A processor that raises loses only the span it raised on (``failed`` is
    told), as with one ``on_end`` call per span.
    """
    many = getattr(processor, "on_end_many", None)
    if many is not None:
        try:
            many(spans)
        except Exception:
            failed("span processor on_end_many")
        return
    taken = batch_append(processor, spans) if type(processor).on_end is _bsp_on_end() else 0
    on_end = processor.on_end
    for span in spans[taken:] if taken else spans:
        try:
            on_end(span)
        except Exception:
            failed("span processor on_end")


_BSP_ON_END: Any = None


def _bsp_on_end() -> Any:
    global _BSP_ON_END
    if _BSP_ON_END is None:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        _BSP_ON_END = BatchSpanProcessor.on_end
    return _BSP_ON_END
