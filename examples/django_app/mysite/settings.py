"""Settings for the example: no apps, one sync-only middleware, an in-memory SQLite database."""

SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

ROOT_URLCONF = "mysite.urls"
INSTALLED_APPS: list[str] = []

# Sync-only middleware: under ASGI Django must run it in a thread
# (sync_to_async) and call the rest of the chain back on the loop
# (async_to_sync), two extra hops per request.
MIDDLEWARE = ["mysite.middleware.SyncOnlyMiddleware"]

# A real database connection behind django.db.connection (kept in a
# thread-critical asgiref Local per thread); each thread gets its own
# in-memory database, which is all the views need.
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}

USE_I18N = True
USE_TZ = True
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"

LOGGING = {"version": 1, "disable_existing_loggers": False}
