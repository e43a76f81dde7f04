"""Turning exceptions into the one line a CLI prints."""

from __future__ import annotations

from typing import Any

__all__ = ["first_pydantic_error", "one_line"]


def one_line(exc: BaseException, limit: int = 200) -> str:
    """`exc`'s message on one line (whitespace collapsed), at most `limit` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def first_pydantic_error(exc: Any, where: str) -> str:
    """`"<where>.<field>: <message>"` for the first error of a pydantic `ValidationError`."""
    first = exc.errors()[0]
    loc = ".".join(str(part) for part in first.get("loc", ()))
    field = f"{where}.{loc}" if loc else where
    return f"{field}: {first.get('msg', 'invalid value')}"
