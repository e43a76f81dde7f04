"""The `market` command line: the app (`app`), shared options and error handling (`kit`),
configuration (`config`) and project files (`project_file`)."""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from market.cli.app import app

        return app
    raise AttributeError(f"module 'market.cli' has no attribute {name!r}")
