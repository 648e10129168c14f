"""The views: an async one that calls ORM-style sync code, and a plain sync one."""

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone, translation


def load_user(user_id: int) -> dict[str, object]:
    """Blocking database code, as an ORM query would be: must not run on the event loop."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s, %s || %s", [user_id, "user-", str(user_id)])
        row = cursor.fetchone()
    return {"id": row[0], "name": row[1]}


async def user_profile(request: HttpRequest, user_id: int) -> JsonResponse:
    """An async view: the database call goes through sync_to_async, as Django's docs say."""
    user = await sync_to_async(load_user)(user_id)
    return JsonResponse({"user": user, "language": translation.get_language()})


def health(request: HttpRequest) -> HttpResponse:
    """A sync view: under ASGI Django runs it through sync_to_async by itself."""
    return HttpResponse(f"ok {timezone.get_current_timezone_name()}", content_type="text/plain")
