"""tracebridge.compatibility: ASGI 2 detection and adaptation, same rules as asgiref, and its trace mark."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NoOpTracerProvider

import tracebridge
from tracebridge import semconv
from tracebridge.compatibility import double_to_single_callable, guarantee_single_callable, is_double_callable
from tracebridge.testing import ApplicationCommunicator


@pytest.fixture(params=["asgiref", "tracebridge"])
def compat(request: pytest.FixtureRequest) -> ModuleType:
    """The compatibility module of asgiref (the reference) or of tracebridge."""
    return importlib.import_module(f"{request.param}.compatibility")


def double_application_function(scope: Any) -> Any:
    async def inner(receive: Any, send: Any) -> None:
        message = await receive()
        await send({"scope": scope["value"], "message": message["value"]})

    return inner


class DoubleApplicationClass:
    def __init__(self, scope: Any) -> None:
        self.scope = scope

    async def __call__(self, receive: Any, send: Any) -> None:
        await send({"class": True, "scope": self.scope["value"]})


class DoubleApplicationClassNestedFunction:
    def __call__(self, scope: Any) -> Any:
        async def inner(receive: Any, send: Any) -> None:
            pass

        return inner


async def single_application_function(scope: Any, receive: Any, send: Any) -> None:
    pass


class SingleApplicationClass:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        pass


def test_is_double_callable_each_application_shape_matches_asgiref(compat: ModuleType) -> None:
    """Tests that functions, classes and instances are classified as asgiref classifies them."""
    assert compat.is_double_callable(double_application_function) is True
    assert compat.is_double_callable(DoubleApplicationClass) is True
    assert compat.is_double_callable(DoubleApplicationClassNestedFunction()) is True
    assert compat.is_double_callable(single_application_function) is False
    assert compat.is_double_callable(SingleApplicationClass()) is False
    assert compat.is_double_callable(lambda scope: None) is True


def test_is_double_callable_hint_attributes_win(compat: ModuleType) -> None:
    """Tests that the _asgi_single_callable / _asgi_double_callable hints override detection."""

    def hinted_single(scope: Any) -> Any:
        return None

    hinted_single._asgi_single_callable = True  # type: ignore[attr-defined]

    async def hinted_double(scope: Any, receive: Any, send: Any) -> None:
        pass

    hinted_double._asgi_double_callable = True  # type: ignore[attr-defined]

    assert compat.is_double_callable(hinted_single) is False
    assert compat.is_double_callable(hinted_double) is True


def test_double_to_single_callable_result_is_single(compat: ModuleType) -> None:
    """Tests that the adapter is itself detected as a single callable."""
    assert compat.is_double_callable(compat.double_to_single_callable(double_application_function)) is False


def test_guarantee_single_callable_single_app_returned_unchanged(compat: ModuleType) -> None:
    """Tests that a single-callable application is returned as the same object."""
    app = SingleApplicationClass()
    assert compat.guarantee_single_callable(app) is app
    assert compat.guarantee_single_callable(single_application_function) is single_application_function


async def test_double_to_single_callable_adapted_app_serves_messages() -> None:
    """Tests that the adapted application builds the instance from the scope and serves the channels."""
    instance = ApplicationCommunicator(double_to_single_callable(double_application_function), {"value": "woohoo"})
    await instance.send_input({"value": 42})
    assert await instance.receive_output() == {"scope": "woohoo", "message": 42}


async def test_guarantee_single_callable_class_app_serves_messages() -> None:
    """Tests that an ASGI 2 class is instantiated per call and awaited with the channels."""
    instance = ApplicationCommunicator(guarantee_single_callable(DoubleApplicationClass), {"value": "x"})
    assert await instance.receive_output() == {"class": True, "scope": "x"}


@pytest.mark.parametrize("implementation", ["asgiref", "tracebridge"])
async def test_guarantee_single_callable_non_callable_fails_like_asgiref(implementation: str) -> None:
    """Tests that a non-callable application is adapted and fails only when called, with TypeError."""
    compat = importlib.import_module(f"{implementation}.compatibility")
    adapted = compat.guarantee_single_callable(42)
    with pytest.raises(TypeError, match="'int' object is not callable"):
        await adapted({}, None, None)


async def test_double_to_single_callable_traced_marks_current_span(spans: Any) -> None:
    """Tests that serving a call through the adapter marks the span current for that call."""
    tracer = spans.provider.get_tracer("test")
    adapted = double_to_single_callable(DoubleApplicationClass)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    with tracer.start_as_current_span("request"):
        await adapted({"value": 1}, None, send)

    assert sent == [{"class": True, "scope": 1}]
    (request,) = spans.named("request")
    assert dict(request.attributes or {}) == {
        semconv.ASGI_DOUBLE_CALLABLE_ADAPTED: True,
        semconv.ASGI_APPLICATION: f"{__name__}.DoubleApplicationClass",
    }


async def test_double_to_single_callable_no_current_span_records_nothing(spans: Any) -> None:
    """Tests that the adapter starts no span of its own when nothing is current."""
    adapted = double_to_single_callable(DoubleApplicationClass)

    async def send(message: Any) -> None:
        pass

    await adapted({"value": 1}, None, send)
    assert spans.finished() == []


async def test_double_to_single_callable_tracing_off_records_nothing() -> None:
    """Tests that with tracing off the adapter touches no span, even one made by another provider."""
    provider = TracerProvider()  # a real provider, but not tracebridge's: tracebridge is off
    tracebridge.set_tracer_provider(NoOpTracerProvider())  # off, whatever the global provider is
    adapted = double_to_single_callable(DoubleApplicationClass)

    async def send(message: Any) -> None:
        pass

    with provider.get_tracer("test").start_as_current_span("request") as span:
        await adapted({"value": 1}, None, send)
        assert dict(span.attributes or {}) == {}  # type: ignore[attr-defined]
    provider.shutdown()


def test_is_double_callable_module_exports_asgiref_names() -> None:
    """Tests that tracebridge.compatibility exports the asgiref names, sorted."""
    import tracebridge.compatibility as module

    assert module.__all__ == sorted(module.__all__)
    assert set(module.__all__) == {"double_to_single_callable", "guarantee_single_callable", "is_double_callable"}
    assert is_double_callable is module.is_double_callable
