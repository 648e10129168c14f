"""Serve a WSGI application from an ASGI server, one traced span per request.

``WsgiToAsgi(app)`` is an ASGI 3 application.  Each call makes a
:class:`WsgiToAsgiInstance`, which, on the event loop thread, buffers the whole
request body (RAM up to 64 KiB, then a temporary file), then runs the WSGI
application on a sync thread through ``sync_to_async`` (thread-sensitive: under
a plain ASGI server every WSGI request of the process shares the one sync
thread, exactly as with asgiref).  The sync thread streams the response back
one message at a time through ``AsyncToSync(send)``: each ``send`` blocks it
until the loop has delivered the message, which is the back-pressure.

Tracing (when a TracerProvider is set): one :data:`~tracebridge.semconv.WSGI_CALL`
span per call, current while the request is served, so the ``sync_to_async``
hop into the sync thread and the ``async_to_sync`` hops of each ``send`` are its
children.  It carries the stable OpenTelemetry HTTP keys, the thread that ran
the application, request and response body sizes and the time to first byte.
Query strings and header values are *not* recorded unless you opt in with
:func:`set_http_capture` (or the ``TRACEBRIDGE_HTTP_CAPTURE_*`` environment
variables); then values of sensitive keys (authorization, cookies, tokens,
passwords, ...) are recorded as ``REDACTED``.

Unlike asgiref 3.13, the response iterable's ``close()`` is called when the
response is done or fails, as PEP 3333 requires (asgiref PR #587): Django
fires ``request_finished`` (and closes database connections) from there.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from tempfile import SpooledTemporaryFile
from time import time_ns
from typing import IO, Any
from urllib.parse import unquote_plus

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS_KEY
from opentelemetry.trace import NonRecordingSpan, Span, Status, StatusCode, Tracer

from . import _telemetry, semconv
from ._hop import (
    _SAMPLED_BIT,
    PlannedSpan,
    attach_context,
    context_with_span,
    current_context,
    detach_token,
    plan_span,
)
from .flow_snapshot import ThreadRef
from .sync import AsyncToSync, sync_to_async

_object_new = object.__new__
_tracer_state = _telemetry._state  # one object for the process; its fields change, it does not

__all__ = [
    "DEFAULT_REDACTED_KEYS",
    "HttpCapture",
    "WsgiToAsgi",
    "WsgiToAsgiInstance",
    "get_http_capture",
    "set_http_capture",
]

_SPOOL_MAX_SIZE = 65536  # request body bytes kept in RAM before spilling to a temporary file

# ---------------------------------------------------------------------------
# What the WSGI span may record beyond the defaults (opt-in).

DEFAULT_REDACTED_KEYS: frozenset[str] = frozenset(
    {
        "apikey",
        "api-key",
        "authorization",
        "cookie",
        "credential",
        "passwd",
        "password",
        "secret",
        "session",
        "signature",
        "token",
    }
)
"""Fragments that make a header name or query parameter name sensitive.

A name is sensitive when one of these occurs in it, compared in lower case with
``_`` read as ``-``: so ``Authorization``, ``Proxy-Authorization``,
``Set-Cookie``, ``X-CSRF-Token``, ``access_token`` and ``client_secret`` are all
redacted.
"""


def _names(values: Iterable[str]) -> frozenset[str]:
    if isinstance(values, str):  # a single name, not its letters
        values = (values,)
    return frozenset(value.strip().lower() for value in values if value.strip())


@dataclass(frozen=True)
class HttpCapture:
    """Opt-in recording of query strings and header values on WSGI spans.

    Args:
        query_string: record ``url.query``, with the values of sensitive
            parameters replaced by ``REDACTED``.
        request_headers: lower-case header names to record as
            ``http.request.header.<name>`` (a list of values); ``"*"`` records
            every header.  Values of sensitive headers become ``REDACTED``.
        response_headers: the same for ``http.response.header.<name>``.
        redact: the fragments that make a name sensitive (see
            :data:`DEFAULT_REDACTED_KEYS`); extend it rather than replace it.
    """

    query_string: bool = False
    request_headers: frozenset[str] = field(default_factory=frozenset)
    response_headers: frozenset[str] = field(default_factory=frozenset)
    redact: frozenset[str] = DEFAULT_REDACTED_KEYS

    def __post_init__(self) -> None:
        # Accept any iterable of names (a list, a set) and normalise once, here,
        # so the per-request check is a frozenset lookup.
        object.__setattr__(self, "request_headers", _names(self.request_headers))
        object.__setattr__(self, "response_headers", _names(self.response_headers))
        object.__setattr__(self, "redact", _names(n.replace("_", "-") for n in self.redact))

    @property
    def enabled(self) -> bool:
        """Whether anything beyond the defaults is recorded."""
        return bool(self.query_string or self.request_headers or self.response_headers)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> HttpCapture:
        """Settings from ``TRACEBRIDGE_HTTP_CAPTURE_QUERY`` (``1``/``true``),
        ``TRACEBRIDGE_HTTP_CAPTURE_REQUEST_HEADERS`` and
        ``TRACEBRIDGE_HTTP_CAPTURE_RESPONSE_HEADERS`` (comma-separated names or
        ``*``) and ``TRACEBRIDGE_HTTP_REDACT`` (extra comma-separated fragments)."""
        env = os.environ if environ is None else environ
        extra = env.get("TRACEBRIDGE_HTTP_REDACT", "").split(",")
        return cls(
            query_string=env.get("TRACEBRIDGE_HTTP_CAPTURE_QUERY", "").strip().lower() in ("1", "true", "yes"),
            request_headers=env.get("TRACEBRIDGE_HTTP_CAPTURE_REQUEST_HEADERS", "").split(","),
            response_headers=env.get("TRACEBRIDGE_HTTP_CAPTURE_RESPONSE_HEADERS", "").split(","),
            redact=DEFAULT_REDACTED_KEYS | _names(extra),
        )


_capture = HttpCapture.from_environ()


def set_http_capture(capture: HttpCapture) -> HttpCapture:
    """Make ``capture`` the process-wide setting for WSGI spans; returns the previous one."""
    global _capture
    previous, _capture = _capture, capture
    return previous


def get_http_capture() -> HttpCapture:
    """The process-wide setting in force (defaults: nothing beyond sizes and the stable keys)."""
    return _capture


def _is_sensitive(name: str, redact: frozenset[str]) -> bool:
    name = name.lower().replace("_", "-")
    return any(fragment in name for fragment in redact)


def _redact_query(query: str, redact: frozenset[str]) -> str:
    parts = query.split("&")
    for index, part in enumerate(parts):
        name, equals, _value = part.partition("=")
        if equals and _is_sensitive(unquote_plus(name), redact):
            parts[index] = f"{name}={semconv.REDACTED}"
    return "&".join(parts)


def _header_attributes(
    prefix: str, headers: Iterable[tuple[bytes, bytes]], wanted: frozenset[str], redact: frozenset[str]
) -> dict[str, tuple[str, ...]]:
    collected: dict[str, list[str]] = {}
    every = "*" in wanted
    for raw_name, raw_value in headers:
        name = bytes(raw_name).decode("latin1").lower()
        if every or name in wanted:
            value = semconv.REDACTED if _is_sensitive(name, redact) else bytes(raw_value).decode("latin1")
            collected.setdefault(name, []).append(value)
    return {prefix + name: tuple(values) for name, values in collected.items()}


# ---------------------------------------------------------------------------
# The span of one WSGI call.

_KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"})


# application object -> its ``module.QualName``: a server has one or a few
# applications and asks for the name on every request.  Keyed by id() with the
# object kept, so an id cannot be reused while its entry exists.
_application_names: dict[int, tuple[object, str]] = {}


def _application_name(application: object) -> str:
    entry = _application_names.get(id(application))
    if entry is not None and entry[0] is application:
        return entry[1]
    name = _telemetry.function_name(application)
    if len(_application_names) >= 64:  # many short-lived wrappers: start over
        _application_names.clear()
    _application_names[id(application)] = (application, name)
    return name


class _WsgiTrace(PlannedSpan):
    """The span of one call plus what the sync thread noted for it.

    The sync thread only writes plain fields; the loop thread reads them after
    the hop has returned (the hop's future orders the two), and only the loop
    thread touches the span.

    **Built off the hot path** (as bridge hops are): with an SDK tracer the
    trace is itself the current span while the call runs (a
    :class:`~tracebridge._hop.PlannedSpan`), so the hop into the sync thread
    parents to it; a successful call then leaves one record to the deferred
    buffer, whose drain thread builds the real span with the same ids, times
    and attributes.  Even the request attributes are read from the scope there
    (servers do not change a scope once the application has it), unless the
    sampler must see them first.  A call that failed (or answered 5xx) builds
    its span on the spot, still with the same ids, so its status and exception
    are recorded exactly.
    """

    # Slots: a write to anything else would give each call's trace a
    # __dict__ of its own.  The sync thread's notes are set only when they
    # happen (open() sets just what close() reads); _end_attributes reads the
    # others with getattr defaults.
    __slots__ = (
        "_span",  # None: the trace is its own span (see the span property)
        "token",
        "tracer",
        "start_ns",
        "end_ns",  # set by close when the span is left to the drain thread
        "capture",
        "scope",
        "application",
        "attributes",
        # Noted by the sync thread as the call goes.
        "request_bytes",
        "thread",
        "status",
        "first_byte_ns",
        "response_headers",
        "response_bytes",
        "chunks",
        "closed",
        "ran_app",
        "rejected",
    )

    _span: Span | None
    end_ns: int
    request_bytes: int | None
    thread: ThreadRef | None
    status: int | None
    first_byte_ns: int
    response_headers: Iterable[tuple[bytes, bytes]] | None
    response_bytes: int
    chunks: int
    closed: bool
    ran_app: bool
    rejected: BaseException | None

    @classmethod
    def open(cls, tracer: Tracer, scope: object, application: object) -> _WsgiTrace | None:
        try:
            context = current_context()
            if context.get(_SUPPRESS_KEY):
                return None  # an exporter or another instrumentation asked for silence
            trace = _object_new(cls)
            trace.tracer = tracer
            trace.start_ns = time_ns()
            trace.capture = _capture
            trace.scope = scope
            trace.application = application
            trace.status = trace.rejected = None  # read by close() on every call
            ids = _tracer_state.ids  # replay_ids(), inlined
            if (
                ids is None
                or not _tracer_state.samples_all_roots
                or type(scope) is not dict
                or type(scope.get("headers")) not in _REREADABLE
            ):
                # A sampler may look at them, a real span wants them now, or the
                # scope is unusual enough to be read right away.
                attributes = trace.attributes = trace.start_attributes()
            else:
                attributes = trace.attributes = None
            if ids is None:  # not an SDK tracer: a real span now
                span = trace._span = tracer.start_span(semconv.WSGI_CALL, attributes=attributes, start_time=trace.start_ns)
                span_context = trace._context = span.get_span_context()
                trace.trace_id, trace.trace_flags = span_context.trace_id, span_context.trace_flags
                trace.trace_state, trace.parent = span_context.trace_state, None
            else:
                plan_span(trace, tracer, semconv.WSGI_CALL, context, ids, attributes)
                trace._span = None  # itself, without a reference cycle (see Hop.span)
            # Current for the rest of the call, so the hop into the sync
            # thread (and every send's hop back) become children of this span.
            trace.token = attach_context(context_with_span(trace.span, context))
            return trace
        except Exception:
            _telemetry.tracing_failed("opening a WSGI span")
            return None

    @property
    def span(self) -> Span:
        """The call's span: the trace itself with an SDK tracer (not stored: no reference cycle), else the real one."""
        span = self._span
        return self if span is None else span

    def start_attributes(self) -> dict[str, Any]:
        """The attributes known when the call began (from the scope)."""
        attributes = _scope_attributes(self.scope, self.capture)
        attributes[semconv.WSGI_APPLICATION] = _application_name(self.application)
        return attributes

    def close(self, error: BaseException | None) -> None:
        # Detach first: this runs on the loop thread, in the task's context.
        detach_token(self.token)
        try:
            end_ns = time_ns()
            if error is None:
                error = self.rejected
            status = self.status
            # A 5xx the application answered with itself is an error per the
            # HTTP conventions, typed by its status code.
            status_error = error is None and status is not None and status >= 500
            if self._span is not None:
                self._end_now(self._span, error, status_error)
                return
            if not self.trace_flags & _SAMPLED_BIT:
                return
            if error is None and not status_error:
                # The attributes are computed on the drain thread: every field
                # they read is final now (the sync thread is done).
                self.end_ns = end_ns
                _telemetry.deferred.add(self)  # queued whole: see deferred_records
                return
            attributes = self.attributes
            if attributes is None:
                attributes = self.attributes = self.start_attributes()
            attributes.update(self._end_attributes())
            # Failures are rare: build the real span here, with the planned ids.
            parent = self.parent_context()
            context = otel_context.Context()
            if parent.is_valid:
                context = otel_trace.set_span_in_context(NonRecordingSpan(parent), context)
            ids = self.id_source
            ids.replay(self.trace_id if self.parent is None else None, self.get_span_context().span_id)
            try:
                span = self.tracer.start_span(
                    semconv.WSGI_CALL, context=context, attributes=attributes, start_time=self.start_ns
                )
            except Exception:
                ids.replay(None, None)  # type: ignore[arg-type]  # never hand these ids to another span
                raise
            self._end_now(span, error, status_error)
        except Exception:
            _telemetry.tracing_failed("closing a WSGI span")

    def deferred_records(self) -> tuple[tuple[Any, ...]]:
        """On the drain thread: the record of the call's span (all its fields are final)."""
        return ((_build_wsgi_span, self.tracer, self.parent, self.start_ns, self.end_ns, self),)

    def _end_now(self, span: Span, error: BaseException | None, status_error: bool) -> None:
        attributes = {} if self._span is None else self._end_attributes()
        if status_error:
            attributes[semconv.ERROR_TYPE] = str(self.status)
            span.set_status(Status(StatusCode.ERROR))
        _telemetry.end_span(span, error, attributes)

    def _end_attributes(self) -> dict[str, Any]:
        # Once the call is over (the sync thread is done): the drain thread, or close() for a failure.
        attributes: dict[str, Any] = {}
        thread = getattr(self, "thread", None)
        if thread is not None:
            attributes[semconv.THREAD_ID] = thread.ident
            attributes[semconv.THREAD_NAME] = thread.name
        request_bytes = getattr(self, "request_bytes", None)
        if request_bytes is not None:
            attributes[semconv.HTTP_REQUEST_BODY_SIZE] = request_bytes
            attributes[semconv.WSGI_REQUEST_BODY_SPOOLED] = request_bytes > _SPOOL_MAX_SIZE
        if self.status is not None:
            attributes[semconv.HTTP_RESPONSE_STATUS_CODE] = self.status
            attributes[semconv.WSGI_TIME_TO_FIRST_BYTE_MS] = _telemetry.ms(self.start_ns, self.first_byte_ns)
            attributes[semconv.HTTP_RESPONSE_BODY_SIZE] = getattr(self, "response_bytes", 0)
            attributes[semconv.WSGI_RESPONSE_CHUNKS] = getattr(self, "chunks", 0)
        if getattr(self, "ran_app", False):
            attributes[semconv.WSGI_ITERABLE_CLOSED] = getattr(self, "closed", False)
        capture = self.capture
        response_headers = getattr(self, "response_headers", None)
        if capture.response_headers and response_headers is not None:
            attributes.update(
                _header_attributes(
                    semconv.HTTP_RESPONSE_HEADER_PREFIX, response_headers, capture.response_headers, capture.redact
                )
            )
        return attributes


def _build_wsgi_span(trace: _WsgiTrace) -> tuple[Any, ...]:
    # On the drain thread: (name, attributes, ids, root trace id, span id, error, events, own context).
    attributes = trace.attributes
    if attributes is None:
        attributes = trace.start_attributes()
    attributes.update(trace._end_attributes())
    context = trace.get_span_context()  # drawn already if the hop under it asked: reused as the span's
    return (
        semconv.WSGI_CALL,
        attributes,
        trace.id_source,
        trace.trace_id if trace.parent is None else None,
        context.span_id,
        None,
        None,
        context,
    )


# Header containers the drain thread can read again (not a one-shot iterator).
_REREADABLE = (list, tuple, type(None))


def _scope_attributes(scope: object, capture: HttpCapture) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if type(scope) is not dict and not isinstance(scope, Mapping):
        return attributes  # bad input; the call itself will say what is wrong
    method = scope.get("method")
    if isinstance(method, str):
        if method in _KNOWN_METHODS:
            attributes[semconv.HTTP_REQUEST_METHOD] = method
        else:
            attributes[semconv.HTTP_REQUEST_METHOD] = semconv.HTTP_REQUEST_METHOD_OTHER
            attributes[semconv.HTTP_REQUEST_METHOD_ORIGINAL] = method
    path = scope.get("path")
    if isinstance(path, str):
        attributes[semconv.URL_PATH] = path
    if scope.get("type") == "http":
        attributes[semconv.URL_SCHEME] = scope.get("scheme") or "http"
    version = scope.get("http_version")
    if isinstance(version, str):
        attributes[semconv.NETWORK_PROTOCOL_VERSION] = version
    server = scope.get("server")
    if server is not None:
        host, port = server
        attributes[semconv.SERVER_ADDRESS] = str(host)
        if port is not None:
            attributes[semconv.SERVER_PORT] = int(port)
    headers = scope.get("headers")
    if headers is not None:
        if type(headers) is not list:
            headers = list(headers)  # an iterable is read once, here
        attributes[semconv.WSGI_REQUEST_HEADER_COUNT] = len(headers)
        if capture.request_headers:
            attributes.update(
                _header_attributes(semconv.HTTP_REQUEST_HEADER_PREFIX, headers, capture.request_headers, capture.redact)
            )
    if capture.query_string:
        query = scope.get("query_string")
        if query:
            attributes[semconv.URL_QUERY] = _redact_query(bytes(query).decode("latin1"), capture.redact)
    return attributes


# ---------------------------------------------------------------------------
# The adapter.


def _note(error: BaseException, text: str) -> None:
    # A note leaves the exception's type and message exactly as asgiref would
    # raise them; it only adds a line to the printed traceback.
    try:
        error.add_note(text)
    except Exception:  # pragma: no cover - a frozen exception type
        pass


class WsgiToAsgi:
    """Wraps a WSGI application to make it an ASGI 3 application.

    Args:
        wsgi_application: the ``(environ, start_response) -> iterable`` callable.
        duplicate_header_limit: most values one request header name may have
            (a request with more gets 400); ``None`` or ``0`` turns the check
            off.  The guard against CVE-2025-14550.
    """

    def __init__(self, wsgi_application: Any, duplicate_header_limit: int | None = 100) -> None:
        self.wsgi_application = wsgi_application
        self.duplicate_header_limit = duplicate_header_limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve one ASGI connection with a fresh :class:`WsgiToAsgiInstance`."""
        await WsgiToAsgiInstance(self.wsgi_application, self.duplicate_header_limit)(scope, receive, send)


class WsgiToAsgiInstance:
    """One request's worth of WSGI: its environ, its ``start_response``, its response."""

    def __init__(self, wsgi_application: Any, duplicate_header_limit: int | None = 100) -> None:
        self.wsgi_application = wsgi_application
        self.duplicate_header_limit = duplicate_header_limit
        self.response_started = False
        self.response_content_length: int | None = None
        # ``response_start`` is deliberately not set here: asgiref's
        # "second call" check is whether the attribute exists yet.
        self._trace: _WsgiTrace | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Buffer the request body (on the loop), then run the WSGI app (on a sync thread).

        Raises:
            ValueError: the scope is not ``http`` (a ``websocket`` or
                ``lifespan`` scope), or ``receive`` returned something other
                than ``http.request`` (a ``http.disconnect``) before the body
                was complete.
        """
        tracer = _telemetry.get_tracer()
        trace = None if tracer is None else _WsgiTrace.open(tracer, scope, self.wsgi_application)
        if trace is None:
            await self._serve(scope, receive, send)
            return
        self._trace = trace
        try:
            await self._serve(scope, receive, send)
        except BaseException as error:
            trace.close(error)
            raise
        trace.close(None)

    async def _serve(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            scope_type = scope["type"]
        except (KeyError, TypeError) as error:
            _note(error, "WsgiToAsgi: the ASGI scope must be a dict with a 'type' key")
            raise
        if scope_type != "http":
            raise ValueError("WSGI wrapper received a non-HTTP scope")
        self.scope = scope
        with SpooledTemporaryFile(max_size=_SPOOL_MAX_SIZE) as body:
            # All of the body arrives before the app starts: WSGI reads
            # wsgi.input synchronously, and the loop cannot be asked for more
            # from the sync thread without blocking both.
            while True:
                message = await receive()
                try:
                    message_type = message["type"]
                except (KeyError, TypeError) as error:
                    _note(error, "WsgiToAsgi: receive() must return a dict with a 'type' key")
                    raise
                if message_type != "http.request":
                    raise ValueError("WSGI wrapper received a non-HTTP-request message")
                body.write(message.get("body", b""))
                if not message.get("more_body"):
                    break
            if self._trace is not None:
                self._trace.request_bytes = body.tell()
            body.seek(0)
            # The app's thread calls this to send; each call waits for the loop.
            self.sync_send = AsyncToSync(send)
            if type(self) is WsgiToAsgiInstance:
                # Our own method: call the bridge straight, skipping the bound
                # wrapper SyncToAsync.__get__ builds on every attribute access
                # (~1 us of update_wrapper a request).  A subclass may override
                # run_wsgi_app: it is looked up as asgiref does.
                await _run_wsgi_app(self, body)
            else:
                await self.run_wsgi_app(body)

    def build_environ(self, scope: Any, body: IO[bytes] | None) -> dict[str, Any]:
        """Build the WSGI environ for ``scope`` with ``body`` as ``wsgi.input``.

        Headers are read from ``self.scope`` (set it first when calling this
        directly), everything else from ``scope``, as asgiref does.

        Raises:
            ValueError: a header name repeats more than ``duplicate_header_limit``
                times, or the query string is not ASCII.  ``run_wsgi_app``
                answers either with 400 Bad Request.
        """
        # WSGI strings are "bytes in latin-1 clothing": encode the ASGI text
        # as UTF-8 and decode those bytes as latin-1 (PEP 3333).
        script_name = scope.get("root_path", "").encode("utf8").decode("latin1")
        path_info = scope["path"].encode("utf8").decode("latin1")
        if path_info.startswith(script_name):
            path_info = path_info[len(script_name) :]
        environ: dict[str, Any] = {
            "REQUEST_METHOD": scope["method"],
            "SCRIPT_NAME": script_name,
            "PATH_INFO": path_info,
            "QUERY_STRING": scope["query_string"].decode("ascii"),
            "SERVER_PROTOCOL": "HTTP/%s" % scope["http_version"],  # noqa: UP031 - %-formatting, as asgiref (a tuple fails alike)
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.get("scheme", "http"),
            "wsgi.input": body,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        # WSGI requires a server name and port; ASGI may not know them (a
        # unix socket has no port).
        server = scope.get("server")
        if server is None:
            environ["SERVER_NAME"] = "localhost"
            environ["SERVER_PORT"] = "80"
        else:
            host, port = server[0], server[1]
            environ["SERVER_NAME"] = host
            environ["SERVER_PORT"] = str(0 if port is None else port)
        client = scope.get("client")
        if client is not None:
            environ["REMOTE_ADDR"] = client[0]

        limit = self.duplicate_header_limit
        values_by_key: defaultdict[str, list[str]] = defaultdict(list)
        for raw_name, raw_value in self.scope.get("headers", []):
            name = raw_name.decode("latin1")
            if name == "content-length":
                key = "CONTENT_LENGTH"
            elif name == "content-type":
                key = "CONTENT_TYPE"
            else:
                key = "HTTP_" + name.upper().replace("-", "_")
            values = values_by_key[key]
            if limit and len(values) >= limit:
                raise ValueError(
                    f"Too many duplicate headers: {key} exceeds limit of {limit} "
                    "(raise WsgiToAsgi's duplicate_header_limit, or pass None to disable it)"
                )
            # HTTP says header values are ASCII; latin-1 accepts any byte.
            values.append(raw_value.decode("latin1"))
        for key, values in values_by_key.items():
            environ[key] = ",".join(values)
        return environ

    def start_response(self, status: str, response_headers: Any, exc_info: Any = None) -> None:
        """The WSGI ``start_response`` callable (no ``write`` callable is returned).

        Raises:
            ValueError: called a second time without ``exc_info``.
            BaseException: ``exc_info[1]``, re-raised, when called with
                ``exc_info`` after the response has already started.
        """
        if self.response_started:
            # Too late to change the status: PEP 3333 says re-raise the error.
            try:
                error, traceback = exc_info[1], exc_info[2]
            except TypeError as type_error:
                _note(type_error, "start_response was called again after the response had started, without exc_info")
                raise
            raise error.with_traceback(traceback)
        if hasattr(self, "response_start") and exc_info is None:
            raise ValueError("You cannot call start_response a second time without exc_info")
        try:
            code, _reason = status.split(" ", 1)
            status_code = int(code)
        except ValueError as error:
            _note(error, f"start_response: the status must look like '200 OK', got {status!r}")
            raise
        headers = [(name.lower().encode("ascii"), value.encode("ascii")) for name, value in response_headers]
        # Remembered to clamp the body; the last start_response call decides.
        self.response_content_length = None
        for name, value in response_headers:
            if name.lower() == "content-length":
                self.response_content_length = int(value)
        self.response_start = {"type": "http.response.start", "status": status_code, "headers": headers}

    @sync_to_async
    def run_wsgi_app(self, body: IO[bytes]) -> None:
        """Run the WSGI app on the sync thread and stream its response.

        One method, so ``start_response`` runs on the same thread as the app.
        Every ``sync_send`` blocks this thread until the loop has sent the
        message.
        """
        trace = self._trace
        if trace is not None:
            trace.thread = _telemetry.current_thread_ref()
        try:
            environ = self.build_environ(self.scope, body)
        except ValueError as error:
            if trace is not None:
                trace.rejected = error
                trace.status = 400
                trace.first_byte_ns = time_ns()
                trace.response_bytes = len(_BAD_REQUEST_BODY)
                trace.chunks = 1
            self.sync_send(
                {"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"text/plain")]}
            )
            self.sync_send({"type": "http.response.body", "body": _BAD_REQUEST_BODY})
            return
        application = self.wsgi_application
        try:
            result = application(environ, self.start_response)
        except TypeError as error:
            if not callable(application):
                _note(error, f"WsgiToAsgi was given {application!r}, which is not a WSGI application")
            raise
        if trace is not None:
            trace.ran_app = True
        try:
            self._send_response(result, trace)
        finally:
            close: Callable[[], object] | None = getattr(result, "close", None)
            if close is not None:
                if trace is not None:
                    trace.closed = True
                close()

    def _send_response(self, result: Any, trace: _WsgiTrace | None) -> None:
        # On the sync thread.  Stops early once Content-Length bytes are out:
        # the iterable is not advanced further (asgiref behaviour).
        try:
            chunks = iter(result)
        except TypeError as error:
            _note(error, f"the WSGI application returned {type(result).__name__}; it must return an iterable of bytes")
            raise
        sync_send = self.sync_send
        bytes_sent = sent_chunks = 0
        for output in chunks:
            if not self.response_started:
                self.response_started = True
                self._send_start(trace)
            limit = self.response_content_length
            if limit is not None:
                allowed = limit - bytes_sent
                if len(output) > allowed:
                    output = output[:allowed]
            sync_send({"type": "http.response.body", "body": output, "more_body": True})
            bytes_sent += len(output)
            if trace is not None:
                sent_chunks += 1
                trace.response_bytes = bytes_sent
                trace.chunks = sent_chunks
            if bytes_sent == self.response_content_length:
                break
        if not self.response_started:
            # An empty iterable still owes the client a status line (#41).
            self.response_started = True
            self._send_start(trace)
        sync_send({"type": "http.response.body"})

    def _send_start(self, trace: _WsgiTrace | None) -> None:
        try:
            start = self.response_start
        except AttributeError as error:
            _note(error, "the WSGI application produced a body before calling start_response")
            raise
        if trace is not None:
            trace.first_byte_ns = time_ns()
            trace.status = start["status"]
            trace.response_headers = start["headers"]
        self.sync_send(start)


_BAD_REQUEST_BODY = b"Bad Request: Too many duplicate headers"
_run_wsgi_app = WsgiToAsgiInstance.__dict__["run_wsgi_app"]
