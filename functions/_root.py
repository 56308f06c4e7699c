"""The Functions app's composition root: one :class:`~shared.app.Keysteward` per worker,
built on first use from the app settings (a missing setting fails that first invocation
loudly, with the setting's name). Tests hand in a prebuilt instance with :func:`install`.
"""

from __future__ import annotations

import os
import threading

from shared.app import Keysteward, build
from shared.config import load_settings
from shared.errors import ConfigError
from shared.logs import configure
from shared.metrics import configure_exporter

_lock = threading.Lock()
_app: Keysteward | None = None


def get_app() -> Keysteward:
    global _app  # noqa: PLW0603 - one composition root per worker process
    with _lock:
        if _app is None:
            configure()
            configure_exporter(os.environ)  # Azure Monitor only with a connection string; else no exporter
            settings = load_settings(os.environ)
            if not settings.has_storage:
                # Without it the fan-out and confirm passes would have nowhere to go.
                raise ConfigError("AzureWebJobsStorage is required by the Functions app (queues and the run journal): "
                                  "a connection string, or AzureWebJobsStorage__accountName for identity-based access")
            _app = build(settings)
        return _app


def install(app: Keysteward | None) -> None:
    """Uses ``app`` for every trigger (``None``: build again from settings on next use)."""
    global _app  # noqa: PLW0603
    with _lock:
        _app = app
