"""function_app.py loaded as a module of its own, for tests that list its functions."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_names = itertools.count()


def fresh_function_app() -> Any:
    """A new ``FunctionApp`` from function_app.py: an app object lists its functions only once
    (``get_functions()`` refuses a second call), and other tests of this process may have
    listed the shared module's app already."""
    spec = importlib.util.spec_from_file_location(f"function_app_{next(_names)}", ROOT / "function_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app
