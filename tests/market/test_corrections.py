"""Issue 13, corrections instead of all-or-nothing voids, on the real stack (anvil + js-ipfs): an
aggregator finalizes a wrong rewards split, the wronged trainer disputes, `market audit
--corrected-out --publish` writes and publishes the corrected record, the arbiter upholds with
`market resolve --record CID`, and the trainer client claims the corrected amount from it (the
correction's record is the ruling's reasonCID). Bad `--record` inputs give one line each; a
correction whose record cannot be read or is not this round's is refused with one line. The next round
builds on the correction's cumulative amounts, so it does not take the correction back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aggregator.round import RoundConfig, compute_round, load_context
from aggregator.service import available_for
from aggregator.valset import load_validation_set
from devnet.anvil import Anvil
from devnet.ipfsnode import IpfsNode
from market.chain import DisputeRuling, DisputeStatus, Finalized, MarketClient
from market.chain.accounts import dev_account
from market.errors import ContentNotFound, ExitCode
from market.protocol.documents import RoundRecord
from market.protocol.merkle import RewardTree
from market.storage import IpfsStore
from tests.aggregator.support import AGGREGATOR, ARBITER, MODEL, VALIDATION, create_project, encode, honest_deltas
from tests.trainer.support import BlobStore, RoundWithRoot, record_paying
from trainer.errors import StaleReceipt
from trainer.participant import Participant
from trainer.receipts import Receipts

ETHER = 10**18


# ---------------------------------------------------------------------- unit: no chain, no IPFS

T, U = dev_account(12).address, dev_account(13).address


class _Client:
    """The chain after an upheld ruling whose reason is `reason` and whose root is `root`."""

    def __init__(self, root: bytes, reason: str):
        self.root, self.reason = root, reason

    def round(self, project_id: int, round_: int) -> RoundWithRoot:
        return RoundWithRoot(self.root)

    def rulings(self, project_id: int) -> list[DisputeRuling]:
        return [DisputeRuling(project_id, 0, 0, DisputeStatus.UPHELD, self.reason, self.root, 20)]


def test_a_correction_is_claimed_from_the_rulings_record_and_a_wrong_one_is_refused_in_one_line(tmp_path: Path) -> None:
    wrong, right = record_paying(1, 0, {T: ETHER // 4, U: 3 * ETHER // 4}), record_paying(1, 0, {T: 3 * ETHER // 4, U: ETHER // 4})
    root = bytes.fromhex(right.rewards_root[2:])
    f = Finalized(1, 0, "QmModel", "QmWrong", bytes.fromhex(wrong.rewards_root[2:]), ETHER, 10)
    blobs = {"QmWrong": wrong.to_bytes(), "QmRight": right.to_bytes(),
             "QmOther": record_paying(1, 1, {T: 3 * ETHER // 4, U: ETHER // 4}).to_bytes(), "QmJunk": b"{}"}
    for reason, error, words in (
        ("QmMissing", ContentNotFound, "cannot be read: no provider for QmMissing"),  # transient: retry later
        ("QmJunk", StaleReceipt, "malformed round record"),
        ("QmOther", StaleReceipt, "is the record of project 1 round 1"),
        ("QmWrong", StaleReceipt, "not round 0's corrected record"),
    ):
        with pytest.raises(error) as e:
            Receipts(tmp_path / reason).obtain(BlobStore(blobs), _Client(root, reason), f, T)  # type: ignore[arg-type]
        assert "\n" not in str(e.value) and words in str(e.value), str(e.value)
        assert "does not match the round's rewards root on chain" in str(e.value)
    receipts = Receipts(tmp_path / "ok")
    kept = receipts.obtain(BlobStore(blobs), _Client(root, "QmRight"), f, T)  # type: ignore[arg-type]
    assert (kept.cumulative, kept.record_cid, kept.rewards_root) == (3 * ETHER // 4, "QmRight", right.rewards_root)
    assert kept.proves(root) and receipts.kept_record(1, 0) == right.to_bytes()
    # kept for the corrected root: answered offline from then on
    assert receipts.obtain(BlobStore({}), _Client(root, "QmRight"), f, T) == kept  # type: ignore[arg-type]


# ---------------------------------------------------------------------- integration: anvil + js-ipfs


def _cli(app: Any, *args: object) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], terminal_width=200)


def _one_line(out: Any) -> str:
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return str(lines[0])


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore:.*'strict' parameter:FutureWarning")
def test_a_wrong_split_is_corrected_by_the_audits_record_and_the_wronged_trainer_claims_it(
    anvil: Anvil, market: MarketClient, ipfs: IpfsStore, ipfs_node: IpfsNode, deployment_file: Path, tmp_path: Path
) -> None:
    from aggregator.cli import app as aggregator_app
    from market.cli.app import app as market_app

    # four honest trainers; the aggregator computes the round honestly, then pays the best one's
    # share to another (a self-consistent record: its own tree, proofs and root)
    p = create_project(market, anvil.url, ipfs, trainers=4, rounds=2)
    pid = p.project_id
    deltas = honest_deltas()
    p.submit(0, {t.address: encode(deltas[i], pid, 0, p.base_cid, t.address) for i, t in enumerate(p.trainers)})
    valset = load_validation_set(VALIDATION, MODEL)
    vcid = ipfs.add(valset.to_npz())
    ctx = load_context(market, ipfs, pid, 0, available_for(market, market.project(pid), 0))
    computed = compute_round(ctx, ipfs, RoundConfig(), valset, vcid)
    model_cid = ipfs.add(computed.model_bytes)
    honest = computed.record(model_cid)
    victim = max(honest.rewards, key=lambda a: honest.rewards[a])
    thief = next(a for a in honest.rewards if a != victim)
    moved = honest.rewards[victim] // 2
    assert moved > 0
    rewards = dict(honest.rewards) | {victim: honest.rewards[victim] - moved, thief: honest.rewards[thief] + moved}
    tree = RewardTree.build(rewards)
    forged = RoundRecord(**(honest.model_dump() | {
        "rewards": rewards, "cumulative_rewards": rewards, "rewards_root": "0x" + tree.root.hex(),
        "proofs": tree.proofs_hex()}))
    agg = market.with_account(dev_account(AGGREGATOR))
    agg.finalize_round(pid, 0, model_cid, ipfs.add(forged.to_bytes()), tree.root, forged.allocation)
    by_address: dict[str, Any] = {a.address: a for a in p.trainers}
    market.with_account(by_address[victim]).dispute(pid, 0, "QmEvidenceOfTheWrongSplit")

    # the audit fails the round and writes (and publishes) the record its rebuild gives
    out_dir = tmp_path / "corrected"
    audit = _cli(aggregator_app, "audit", pid, "--rpc", anvil.url, "--deployment", deployment_file,
                 "--ipfs", ipfs_node.api_multiaddr, "--corrected-out", out_dir, "--publish", "--json")
    assert audit.exit_code == ExitCode.CHECK_FAILED, audit.stdout + audit.stderr
    [correction] = json.loads(audit.stdout)["corrected"]
    assert correction["rewards_root"] == honest.rewards_root and correction["round"] == 0
    written = Path(correction["path"]).read_bytes()
    assert written == honest.to_bytes() and ipfs.cat(correction["cid"]) == written
    cid = correction["cid"]

    # bad --record inputs: one line each, nothing sent
    common = ["--rpc", anvil.url, "--deployment", deployment_file, "--ipfs", ipfs_node.api_multiaddr,
              "--dev-account", ARBITER]
    other_round = ipfs.add(honest.model_copy(update={"round": 1}).to_bytes())
    for args, code, words in (
        (["--record", "QmNotACid"], ExitCode.STORAGE, "--record QmNotACid"),
        (["--record", p.spec_cid], ExitCode.STORAGE, "malformed round record"),
        (["--record", other_round], ExitCode.CONFIG, f"is the record of project {pid} round 1"),
        (["--record", cid, "--root", "0x" + "11" * 32], ExitCode.CONFIG, "is not the root of --record"),
        (["--record", cid, "--reason", "QmWhy"], ExitCode.CONFIG, "not both"),
    ):
        bad = _cli(market_app, "resolve", pid, 0, "--uphold", *args, *common)
        assert bad.exit_code == code and words in _one_line(bad), bad.stderr
    dismiss = _cli(market_app, "resolve", pid, 0, "--dismiss", "--record", cid, *common)
    assert dismiss.exit_code == ExitCode.CONFIG and "drop it to dismiss" in _one_line(dismiss)
    assert market.round(pid, 0).pending_disputes == 1

    ruled = _cli(market_app, "resolve", pid, 0, "--uphold", "--record", cid, "--root", honest.rewards_root, *common,
                 "--json")
    assert ruled.exit_code == 0, ruled.stderr
    assert json.loads(ruled.stdout) | {"tx": None} == {
        "project_id": pid, "round": 0, "upheld": True, "root": honest.rewards_root, "record": cid, "reason": cid,
        "tx": None}
    assert market.round(pid, 0).rewards_root == honest.rewards_root and market.round(pid, 0).corrected
    p.mine_to(market.settles_after(pid, 0) + 1)

    # the wronged trainer (and the one overpaid) claim what the corrected record pays them
    for who in (victim, thief):
        me = Participant(market.with_account(by_address[who]), ipfs, tmp_path / who)
        claimed = me.claim(pid)
        assert (claimed.amount, claimed.round) == (honest.cumulative_rewards[who], 0)
        assert market.claimed_by(pid, who) == honest.cumulative_rewards[who]
        kept = me.receipts.kept(pid, 0, who)
        assert kept is not None and kept.record_cid == cid
    assert honest.cumulative_rewards[victim] == forged.cumulative_rewards[victim] + moved

    # the next round builds on what round 0 pays by (the correction), not on the forged record
    p.mine_to(market.project(pid).reveal_deadline + 1)
    nxt = load_context(market, ipfs, pid, 1, available_for(market, market.project(pid), 1))
    assert nxt.cumulative_rewards == honest.cumulative_rewards != forged.cumulative_rewards
