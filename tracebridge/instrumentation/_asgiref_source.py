"""Recognising asgiref code we have read: the gate of the fused replacements.

``_asgiref_local`` and ``_asgiref_s2a`` replace some of asgiref's methods with
tracebridge's own implementation of asgiref's rules.  That is only right for
an asgiref whose source is the one those replacements were written against
(a hash of the source, not a version number: a patched or repackaged asgiref
is not guessed at), and only for asgiref's own functions, not another tool's
wrappers around them (which must keep running).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping
from types import FunctionType, ModuleType

__all__ = ["checked_version", "is_asgiref_own"]


def checked_version(sources: Callable[[], list[object]], known: Mapping[str, str]) -> str | None:
    """The entry of ``known`` (sha256 -> version) matching the source of the objects ``sources()`` names, else None.

    None too when a name is missing or the source cannot be read (no ``.py`` shipped).
    """
    try:
        parts = [inspect.getsource(obj) for obj in sources()]  # type: ignore[arg-type]
    except Exception:
        return None
    return known.get(hashlib.sha256("\n".join(parts).encode()).hexdigest())


def is_asgiref_own(function: object, module: ModuleType | None) -> bool:
    """Whether ``function`` is the plain function ``module``'s source defines, not someone's wrapper of it.

    The source check reads the file, and ``inspect.getsource`` sees through
    ``functools.wraps`` and wrapt proxies; an APM agent's wrapper around the
    method must keep running, so a replacement that does not call the
    original is only for asgiref's own, unwrapped function.
    """
    return (
        module is not None
        and type(function) is FunctionType
        and getattr(function, "__wrapped__", None) is None
        and function.__module__ == module.__name__
        and function.__code__.co_filename == getattr(module, "__file__", None)
    )
