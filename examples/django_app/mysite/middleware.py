"""A middleware that can only run synchronously, like many older ones."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


class SyncOnlyMiddleware:
    """Stamps every response; sync-only, so under ASGI it costs two thread hops per request."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response["X-Sync-Middleware"] = "seen"
        return response
