"""Settings of each Tiled app of ours, in a process that may hold several.

Tiled's ``build_app`` configures the one ``Settings`` object ``get_settings()`` caches for
the whole process (authentication, ``expose_raw_assets``, limits), and its routes read that
object: every app built later in a process changed every earlier one's. An archive opened
with an API key answered 401 to its own key, and the other archive's key, once another
archive was opened (docs/upstream.md). Here the cached object is a stand-in that answers
for the app whose request (or build) is under way, a context variable saying which; outside
any app of ours (Tiled's own apps), for the process's own settings, as before.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

_CURRENT: ContextVar[Any] = ContextVar("tiled_archive_settings", default=None)
_INSTALLED = threading.Lock()


class _PerAppSettings:
    """Stands in for Tiled's process-wide settings: the current app's, else the process's."""

    def __init__(self, process: Any):
        object.__setattr__(self, "_process", process)

    def _target(self) -> Any:
        return _CURRENT.get() or object.__getattribute__(self, "_process")

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(settings, Settings), as Tiled asks
        return type(self._target())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target(), name, value)


def _install() -> None:
    """Make the object Tiled's ``get_settings()`` caches the stand-in (once a process)."""
    from tiled.server import settings as module

    with _INSTALLED:
        process = module.get_settings()
        if isinstance(process, _PerAppSettings):
            return
        module.get_settings.cache_clear()
        made = module.Settings
        module.Settings = lambda: _PerAppSettings(process)  # what get_settings() calls
        try:
            module.get_settings()
        finally:
            module.Settings = made


@contextlib.contextmanager
def settings_of(settings: Any) -> Iterator[None]:
    """Within the block, Tiled's settings are ``settings``."""
    token = _CURRENT.set(settings)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def new_settings() -> Any:
    """A fresh settings object (from the environment, as a new process has), for one app."""
    from tiled.server.settings import Settings

    _install()
    return Settings()


class WithSettings:
    """ASGI middleware: the app inside answers (and starts and stops) with its own settings."""

    def __init__(self, app: Any, settings: Any):
        self.app = app
        self.settings = settings

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        with settings_of(self.settings):
            await self.app(scope, receive, send)


__all__ = ["WithSettings", "new_settings", "settings_of"]
