"""The Functions app's composition root: one :class:`~shared.app.Keysteward` per worker,
built on first use from the app settings (a missing setting fails that first invocation
loudly, with the setting's name). Tests hand in a prebuilt instance with :func:`install`.

The core (and with it every Azure SDK client and model) is imported on first use, not when
the Functions worker indexes the app: indexing runs on every cold start and only needs the
triggers' declarations.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.app import Keysteward

_lock = threading.Lock()
_app: Keysteward | None = None


def get_app() -> Keysteward:
    global _app  # noqa: PLW0603 - one composition root per worker process
    with _lock:
        if _app is None:
            from shared.app import build  # noqa: PLC0415 - deferred: a light cold start (see above)
            from shared.config import load_settings  # noqa: PLC0415
            from shared.errors import ConfigError  # noqa: PLC0415
            from shared.logs import configure  # noqa: PLC0415
            from shared.metrics import configure_exporter  # noqa: PLC0415

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
