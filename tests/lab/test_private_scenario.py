"""Scenarios are private by default: the project file they write names the recipients the
scenario made keys for, and an optional DP policy, and parses into an encrypted spec."""

from __future__ import annotations

from pathlib import Path

from lab.scenario import Scenario, _scenario_keys
from market.chain.accounts import Keystore
from market.cli.project_file import ProjectFile
from market.protocol.privacy import DpPolicy


class _Store:
    def add(self, data: bytes) -> str:
        return "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"


def test_scenario_project_file_is_encrypted_with_the_keys_it_made(tmp_path: Path) -> None:
    sc = Scenario(dataset="digits", architecture="digits_mlp", input_shape=[64], privacy=DpPolicy(noise_multiplier=1.5))
    assert sc.encrypted
    recipients, auditor_key = _scenario_keys(tmp_path)
    assert auditor_key.is_file() and (tmp_path / "aggregator" / "aggregator" / "keys" / "dev1.x25519.pem").is_file()
    path = tmp_path / "p.toml"
    path.write_text(sc.project_toml(recipients))
    spec = ProjectFile.load(path).spec(_Store())
    assert spec.encrypted and {n: r.role for n, r in spec.recipients.items()} == {
        "aggregator": "aggregator", "auditor": "auditor", "arbiter": "arbiter"}
    assert spec.recipients["auditor"].public_key == recipients["auditor"][1]
    assert spec.privacy == DpPolicy(noise_multiplier=1.5)
    assert Keystore(tmp_path / "keystore").encryption_keys("arbiter", "dev")
