"""The package surfaces and the one exception tree: what `market` exports exists, every error has an
exit code from the one table, no two meanings share a code, and the README lists the table."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import market
from market.errors import EXIT_CODES, ExitCode, MarketError

ROOT = Path(__file__).resolve().parents[2]


def test_every_name_in_market_all_resolves() -> None:
    assert sorted(market.__all__) == sorted(set(market.__all__))
    for name in market.__all__:
        assert getattr(market, name) is not None, name


def _error_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in ("market", "aggregator", "trainer", "lab", "devnet"):
        pkg = importlib.import_module(package)
        for info in pkgutil.walk_packages(pkg.__path__, f"{package}."):
            if info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, BaseException) and cls.__module__.split(".")[0] in ("market", "aggregator", "trainer", "lab", "devnet"):
                    found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return list(found.values())


def test_every_error_is_in_the_one_tree_with_a_listed_exit_code() -> None:
    classes = _error_classes()
    assert len(classes) > 30
    for cls in classes:
        if cls.__name__.startswith("_"):
            continue  # private control-flow exceptions never reach a user
        if not issubclass(cls, MarketError):
            # the only roots outside MarketError are mixins whose users are MarketErrors
            assert all(issubclass(sub, MarketError) for sub in cls.__subclasses__()), cls
            continue
        assert cls.exit_code in EXIT_CODES, (cls, cls.exit_code)


def test_exit_codes_are_unique_and_documented() -> None:
    assert len({int(c) for c in ExitCode}) == len(ExitCode)
    assert set(EXIT_CODES) == {int(c) for c in ExitCode}
    readme = (ROOT / "README.md").read_text()
    for code in ExitCode:
        assert f"| {int(code)} |" in readme, f"exit code {int(code)} missing from the README's table"
