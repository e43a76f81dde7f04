"""`[recipients]` and `[privacy]` in the project file: keys given as hex or as `account:NAME`
(resolved from the local keystore), a DP policy, and one clear line for what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from market.chain.accounts import Keystore
from market.cli.project_file import ProjectFile
from market.errors import ConfigError
from market.protocol.documents import ProjectSpec
from market.protocol.envelope import generate_key, public_key_hex
from market.protocol.privacy import DpPolicy


class _Store:
    def add(self, data: bytes) -> str:
        return "QmInitialWeights"


def _project(tmp: Path, extra: str) -> Path:
    path = tmp / "proj.toml"
    path.write_text(
        "[project]\nrounds = 3\nreward_per_round = 1\ncommit_window = 5\nreveal_window = 5\nchallenge_window = 3\n"
        'aggregator = "dev:1"\narbiter = "dev:2"\n'
        '[model]\narchitecture = "digits_mlp"\ninput_shape = [64]\nnum_classes = 10\ndataset = "digits"\n' + extra
    )
    return path


def test_recipients_by_hex_and_by_keystore_account_and_a_privacy_policy(tmp_path: Path) -> None:
    keystore = Keystore(tmp_path / "keys")
    keystore.directory.mkdir()
    agg = keystore.new_encryption_key("agg", "pw")
    arbiter = public_key_hex(generate_key())
    path = _project(tmp_path, f'[recipients.aggregator]\nrole = "aggregator"\nkey = "account:agg"\n'
                              f'[recipients.arbiter]\nrole = "arbiter"\nkey = "0x{arbiter.upper()}"\n'
                              "[privacy]\nmax_epsilon = 4.0\nnoise_multiplier = 2.5\n")
    asked: list[str] = []

    def password(name: str) -> str:
        asked.append(name)
        return "pw"

    spec = ProjectFile.load(path).spec(_Store(), keystore=keystore.directory, password=password)
    assert asked == ["agg"]
    assert spec.encrypted and spec.recipient_keys() == {"aggregator": agg, "arbiter": arbiter}
    assert spec.privacy == DpPolicy(max_epsilon=4.0, noise_multiplier=2.5)
    assert ProjectSpec.from_bytes(spec.to_bytes()) == spec


def test_a_project_file_without_the_sections_keeps_plaintext_specs(tmp_path: Path) -> None:
    spec = ProjectFile.load(_project(tmp_path, "")).spec(_Store())
    assert not spec.encrypted and spec.privacy is None
    assert b"recipients" not in spec.to_bytes()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[recipients.a]\nrole = "aggregator"\nkey = "abc"\n', "is not 64 hex digits nor account:NAME"),
        ('[recipients.a]\nrole = "auditor"\nkey = "%s"\n' % ("11" * 32), "exactly one aggregator"),
        ('[recipients.a]\nrole = "aggregator"\nkey = "account:nobody"\n', "has no encryption key"),
    ],
)
def test_bad_recipients_give_one_line(tmp_path: Path, extra: str, message: str) -> None:
    (tmp_path / "keys").mkdir()
    with pytest.raises(ConfigError, match=message) as info:
        ProjectFile.load(_project(tmp_path, extra)).spec(_Store(), keystore=tmp_path / "keys", password=lambda _n: "pw")
    assert "\n" not in str(info.value)


def test_account_keys_need_the_keystore(tmp_path: Path) -> None:
    path = _project(tmp_path, '[recipients.a]\nrole = "aggregator"\nkey = "account:agg"\n')
    with pytest.raises(ConfigError, match="needs the local keystore"):
        ProjectFile.load(path).spec(_Store())


def test_a_bad_privacy_table_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="privacy"):
        ProjectFile.load(_project(tmp_path, "[privacy]\nnoise_multiplier = -1\n"))
