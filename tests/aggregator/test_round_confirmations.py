"""A round is read only once its reveal deadline is buried under the client's confirmations."""

from __future__ import annotations

import pytest

from aggregator.round import load_context
from devnet.anvil import Anvil
from market.chain import MarketClient, ProjectParams
from market.chain.accounts import dev_account
from market.errors import ChainError
from tests.aggregator.support import make_spec

pytestmark = pytest.mark.integration


def test_load_context_waits_for_the_deadline_to_be_buried(market: MarketClient, anvil: Anvil) -> None:
    pid, _ = market.create_project(ProjectParams(
        aggregator=dev_account(1).address, arbiter=dev_account(2).address, num_rounds=1, reward_per_round=10**18,
        commit_window=3, reveal_window=3, challenge_window=10, spec_cid="QmSpec"))
    opened = market.project(pid).opened_at
    # 10 blocks on: the project's creation is 10 deep (visible), its deadline (opened + 6) only 4
    anvil.mine(opened + 10 - market.block_number)
    deep = MarketClient(market.w3, market.address, market.abi, confirmations=10)
    spec = make_spec("QmBase")
    with pytest.raises(ChainError, match="not 10 blocks deep"):
        load_context(deep, None, pid, 0, 0, spec=spec,  # type: ignore[arg-type]
                     confirmation_timeout=0.2, poll_interval=0.05)
    anvil.mine(10)
    ctx = load_context(deep, None, pid, 0, 0, spec=spec,  # type: ignore[arg-type]
                       confirmation_timeout=0.2, poll_interval=0.05)
    assert (ctx.reveal_deadline, ctx.inputs) == (opened + 6, ())
