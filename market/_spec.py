"""One spec language for everything chosen by name: `"name"` or `"name:key=value,key=value"`.

Rules, scorers, filters, behaviours, partitions and validation sets are all picked this way, from a
flag, a TOML value or a round record. A `Registry` maps names (and aliases) to dataclasses and
types every value by the dataclass field it sets, so `"krum:f=2"` and `"sign_flip:k=4"` are checked
the same way and a wrong key names the valid ones.

    >>> from dataclasses import dataclass
    >>> reg: Registry[object] = Registry("rule", error=ValueError)
    >>> @reg.register("trimmed_mean", aliases=("trimmed",))
    ... @dataclass
    ... class Trimmed:
    ...     beta: float = 0.1
    >>> reg.build("trimmed:beta=0.2")
    Trimmed(beta=0.2)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, Literal, TypeVar

__all__ = ["Registry", "closest", "convert", "split_spec"]

T = TypeVar("T")


def closest(word: str, choices: typing.Iterable[str]) -> str:
    """`" (did you mean 'x'?)"` when one of `choices` is close to `word`, else `""`."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def split_spec(text: str, error: type[Exception] = ValueError, *, positional: str | None = None) -> tuple[str, dict[str, str]]:
    """`"name:k=v,k=v"` -> (normalised name, raw values). Keys must be unique. With `positional`
    (a parameter name), a lone bare value sets that parameter: `"dirichlet:0.5"`."""
    head, _, tail = str(text).strip().partition(":")
    name = head.strip().lower().replace("-", "_")
    if not name:
        raise error(f"empty spec {text!r}; write name or name:key=value,key=value")
    raw: dict[str, str] = {}
    items = [s.strip() for s in tail.split(",") if s.strip()]
    if positional is not None and len(items) == 1 and "=" not in items[0]:
        return name, {positional: items[0]}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise error(f"parameter {item!r} in {text!r} is not key=value; write {name}:key=value,key=value")
        if key in raw:
            raise error(f"parameter {key!r} is given twice in {text!r}")
        raw[key] = value.strip()
    return name, raw


def convert(text: str, annotation: Any, where: str, error: type[Exception] = ValueError) -> Any:
    """`text` as a value of `annotation` (bool, int, float, str, Literal, Optional / unions of them)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return _guess(text)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        problems = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(text, arg, where, error)
            except error as e:
                problems.append(str(e))
        raise error("; ".join(problems))
    if origin is Literal:
        for arg in args:
            if str(arg) == text:
                return arg
        raise error(f"{where} must be one of {', '.join(map(str, args))}, got {text!r}")
    if annotation is bool:
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise error(f"{where} must be true or false, got {text!r}")
    if annotation in (int, float):
        try:
            value = annotation(text)
        except ValueError:
            kind = "an integer" if annotation is int else "a number"
            raise error(f"{where} must be {kind}, got {text!r}") from None
        if annotation is float and not math.isfinite(value):
            raise error(f"{where} must be finite, got {text!r}")
        return value
    if annotation is str:
        return text
    raise error(f"{where} cannot be given in a spec string; set it in code")


def _guess(text: str) -> Any:
    low = text.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


class Registry(Generic[T]):
    """Named dataclasses of one kind (`what`: "rule", "behaviour", ...), built from spec strings.

    A field whose metadata has `parse=False` cannot be set from a spec (it is set in code).
    """

    def __init__(self, what: str, error: type[Exception] = ValueError, *, positional: bool = False) -> None:
        self.what = what
        self.error = error
        #: whether `"name:value"` sets the entry's first parameter (`"dirichlet:0.5"`)
        self.positional = positional
        self._items: dict[str, Callable[..., T]] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, aliases: tuple[str, ...] = ()) -> Callable[[Any], Any]:
        def add(cls: Any) -> Any:
            if name in self._items:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._items[name] = cls
            for alias in aliases:
                self._aliases[alias] = name
            return cls

        return add

    def add(self, name: str, factory: Callable[..., T], aliases: tuple[str, ...] = ()) -> None:
        self.register(name, aliases)(factory)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.canonical(name) in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return sorted(self._items)

    def canonical(self, name: str) -> str:
        name = name.strip().lower().replace("-", "_")
        return self._aliases.get(name, name)

    def get(self, name: str) -> Callable[..., T]:
        canonical = self.canonical(name)
        if canonical not in self._items:
            raise self.error(
                f"unknown {self.what} {name!r}{closest(canonical, self._items)}; choose one of {', '.join(self.names())}"
            )
        return self._items[canonical]

    def parameters(self, name: str) -> dict[str, Any]:
        """Settable parameter names of `name`, with their annotations."""
        factory = self.get(name)
        if not dataclasses.is_dataclass(factory):
            return {}
        hints = typing.get_type_hints(factory)
        return {
            f.name: hints.get(f.name, Any)
            for f in dataclasses.fields(factory)
            if f.init and not f.name.startswith("_") and f.metadata.get("parse", True)
        }

    def parse(self, text: str, extras: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """(canonical name, typed keyword arguments) of a spec; `extras` are keys (with types) that
        the caller handles itself, such as a rule's `clip`."""
        canonical = self.canonical(split_spec(str(text).partition(":")[0], self.error)[0])
        self.get(canonical)
        params = self.parameters(canonical)
        _, raw = split_spec(text, self.error, positional=next(iter(params), None) if self.positional else None)
        allowed = {**params, **(extras or {})}
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in allowed:
                raise self.error(
                    f"{self.what} {canonical!r} has no parameter {key!r}{closest(key, allowed)}; "
                    f"it takes {', '.join(sorted(allowed)) or 'none'}"
                )
            kwargs[key] = convert(value, allowed[key], f"{canonical}.{key}", self.error)
        return canonical, kwargs

    def create(self, name: str, **kwargs: Any) -> T:
        """Construct `name` with keyword arguments (checked against its parameters)."""
        factory = self.get(name)
        params = self.parameters(name)
        if dataclasses.is_dataclass(factory):
            settable = {f.name for f in dataclasses.fields(factory) if f.init}
            unknown = sorted(set(kwargs) - settable)
            if unknown:
                raise self.error(
                    f"{self.what} {self.canonical(name)!r} has no parameter {', '.join(unknown)}; "
                    f"it takes {', '.join(sorted(params)) or 'none'}"
                )
        try:
            return factory(**kwargs)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, self.error):
                raise
            raise self.error(f"bad parameters for {self.what} {self.canonical(name)!r}: {exc}") from None

    def build(self, text: str, **overrides: Any) -> T:
        """Parse `text` and construct it; `overrides` win over the spec's values."""
        name, kwargs = self.parse(text)
        kwargs.update(overrides)
        return self.create(name, **kwargs)
