"""`[model_readers]` in the project file: mirrors `[recipients]` (keys as hex or `account:NAME`),
ends up in `ProjectSpec.model_readers`, and anything wrong is one line naming the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from market.chain.accounts import Keystore
from market.cli.project_file import ProjectFile
from market.errors import ConfigError
from market.protocol.documents import ProjectSpec
from tests.market.test_private_project_file import _project, _Store

AGGREGATOR = '[recipients.aggregator]\nrole = "aggregator"\nkey = "%s"\n' % ("11" * 32)


def test_model_readers_by_hex_and_by_keystore_account(tmp_path: Path) -> None:
    keystore = Keystore(tmp_path / "keys")
    keystore.directory.mkdir()
    owner = keystore.new_encryption_key("owner", "pw")
    trainer = "22" * 32
    path = _project(tmp_path, AGGREGATOR + '[model_readers.owner]\nkey = "account:owner"\n'
                                           f'[model_readers."trainer.0"]\nkey = "0x{trainer.upper()}"\n')
    spec = ProjectFile.load(path).spec(_Store(), keystore=keystore.directory, password=lambda _name: "pw")
    assert spec.encrypts_models and spec.model_readers == {"owner": owner, "trainer.0": trainer}
    assert ProjectSpec.from_bytes(spec.to_bytes()) == spec


def test_no_table_keeps_public_models(tmp_path: Path) -> None:
    spec = ProjectFile.load(_project(tmp_path, AGGREGATOR)).spec(_Store())
    assert not spec.encrypts_models and b"model_readers" not in spec.to_bytes()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[model_readers.owner]\nkey = "%s"\nrole = "auditor"\n' % ("22" * 32), r"model_readers\.owner\.role: Extra inputs"),
        ('[model_readers.owner]\nkey = "abc"\n', r"\[model_readers\.owner\]\.key: 'abc' is not 64 hex digits"),
        ('[model_readers.owner]\nkey = "%s"\n' % ("zz" * 32), "is not 64 hex digits nor account:NAME"),
        ('[model_readers.owner]\nkey = "%s"\n' % ("11" * 32), r"\[model_readers\]: .*shares a public key"),
    ],
)
def test_bad_model_readers_give_one_line(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        ProjectFile.load(_project(tmp_path, AGGREGATOR + extra)).spec(_Store())
    assert "\n" not in str(info.value)


def test_model_readers_need_recipients(tmp_path: Path) -> None:
    path = _project(tmp_path, '[model_readers.owner]\nkey = "%s"\n' % ("22" * 32))
    with pytest.raises(ConfigError, match=r"\[model_readers\]: .*need recipients"):
        ProjectFile.load(path).spec(_Store())
