"""The Python mirror of the contract agrees with the contract: the shipped artifact is what the
sources compile to, every error the client explains exists, and the records match the ABI."""

from __future__ import annotations

import pytest

from market.chain.artifact import shipped_artifact
from market.chain.records import ProjectParams
from market.chain.reverts import HINTS


def _abi_items(kind: str) -> dict[str, dict]:
    return {item["name"]: item for item in shipped_artifact().abi if item["type"] == kind}


def test_shipped_artifact_is_what_the_sources_compile_to():
    pytest.importorskip("solcx")
    from devnet import toolpaths
    from devnet.compiler import compile_contracts

    if not (toolpaths.NODE_MODULES / "solc").is_dir():
        pytest.skip("solc-js is not installed (npm)")
    fresh = compile_contracts()["LearningMarket"]
    shipped = shipped_artifact()
    assert shipped.abi == fresh.abi, "run `python -m devnet.compiler --ship` after changing contracts/src"
    assert shipped.bytecode == fresh.bytecode, "run `python -m devnet.compiler --ship` after changing contracts/src"


def test_every_hinted_error_is_a_contract_error():
    errors = _abi_items("error")
    assert set(HINTS) <= set(errors), sorted(set(HINTS) - set(errors))


def test_project_params_match_the_create_project_tuple():
    create = _abi_items("function")["createProject"]
    components = create["inputs"][0]["components"]
    p = ProjectParams(aggregator="0x" + "1" * 40, arbiter="0x" + "2" * 40, num_rounds=1, reward_per_round=1,
                      commit_window=1, reveal_window=1, challenge_window=1, spec_cid="x")
    assert len(p.as_tuple()) == len(components)
    names = [c["name"] for c in components]
    by_name = dict(zip(names, p.as_tuple(), strict=True))
    assert by_name.get("aggregator", by_name.get("_aggregator")) == p.aggregator
    assert by_name.get("numRounds") == p.num_rounds
