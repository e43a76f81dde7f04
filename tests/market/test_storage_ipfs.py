"""IpfsStore and IpfsNode.

Unit tests run against a scripted fake RPC server and fake daemons; tests marked `integration`
start a real js-ipfs daemon (session-scoped, tmp repo, free loopback ports) and stop it by PID.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from devnet import toolpaths
from devnet.ipfsnode import IpfsNode
from devnet.ports import free_ports
from market.errors import (
    ContentNotFound,
    ContentTooLarge,
    IntegrityError,
    InvalidCid,
    StackError,
    StorageError,
    StorageUnavailable,
)
from market.storage import IpfsStore, cid_of, fetch_verified, raw_cid, same_multihash

# -- fake RPC server --------------------------------------------------------------------------


class FakeRpc:
    """Answers RPC calls from a script per path; records every call.

    A script entry is (status, body) or (status, body, delay, stall): wait `delay` seconds
    before the headers; with `stall`, send half the body, wait `stall` seconds, then the rest.
    The last entry of a path's script repeats.
    """

    def __init__(self) -> None:
        self.script: dict[str, list[tuple[Any, ...]]] = {}
        self.calls: list[str] = []
        self.stop = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                elif self.headers.get("Transfer-Encoding") == "chunked":
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        self.rfile.read(size + 2)
                        if size == 0:
                            break
                path = self.path.split("?")[0]
                fake.calls.append(path)
                queue = fake.script.get(path) or [
                    (404, b'{"Message":"no such path","Type":"error"}')
                ]
                entry = queue.pop(0) if len(queue) > 1 else queue[0]
                status, body = entry[0], entry[1]
                delay, stall = (entry[2], entry[3]) if len(entry) > 2 else (0.0, 0.0)
                if delay and fake.stop.wait(delay):
                    return
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if stall:
                        self.wfile.write(body[: len(body) // 2])
                        self.wfile.flush()
                        if fake.stop.wait(stall):
                            return
                        self.wfile.write(body[len(body) // 2 :])
                    else:
                        self.wfile.write(body)
                except OSError:
                    pass  # the client gave up

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def fake_rpc() -> Iterator[FakeRpc]:
    fake = FakeRpc()
    yield fake
    fake.close()


GOOD_CID = cid_of(b"x")


def test_retries_transient_5xx_then_succeeds(fake_rpc: FakeRpc) -> None:
    added = json.dumps({"Name": "f", "Hash": GOOD_CID, "Size": "7"}).encode()
    fake_rpc.script["/api/v0/add"] = [(503, b"busy"), (502, b"bad gateway"), (200, added)]
    store = IpfsStore(f"http://127.0.0.1:{fake_rpc.port}", retries=3, backoff=0.01)
    assert store.add(b"x") == GOOD_CID
    assert fake_rpc.calls.count("/api/v0/add") == 3
    store.close()


def test_gives_up_after_retries_with_a_clear_error(fake_rpc: FakeRpc) -> None:
    fake_rpc.script["/api/v0/add"] = [(500, b'{"Message":"repo busy","Code":0,"Type":"error"}')]
    store = IpfsStore(f"http://127.0.0.1:{fake_rpc.port}", retries=2, backoff=0.01)
    with pytest.raises(StorageError) as info:
        store.add(b"x")
    assert fake_rpc.calls.count("/api/v0/add") == 3
    assert "\n" not in str(info.value) and "repo busy" in str(info.value)


def test_cat_with_no_response_in_time_is_content_not_found_without_retry(
    fake_rpc: FakeRpc,
) -> None:
    fake_rpc.script["/api/v0/cat"] = [(200, b"late", 3.0, 0.0)]
    store = IpfsStore(
        f"http://127.0.0.1:{fake_rpc.port}", retries=3, backoff=0.01, find_timeout=0.3
    )
    with pytest.raises(ContentNotFound) as info:
        store.cat(GOOD_CID)
    assert GOOD_CID in str(info.value) and "0.3s" in str(info.value)
    assert fake_rpc.calls == ["/api/v0/cat"]


def test_node_timeout_answers_are_not_found_without_retry(fake_rpc: FakeRpc) -> None:
    fake_rpc.script["/api/v0/block/stat"] = [
        (500, b'{"Message":"Failed to get block stats: request timed out","Code":0,"Type":"error"}')
    ]
    fake_rpc.script["/api/v0/pin/ls"] = [(500, b'{"Message":"path is not pinned","Type":"error"}')]
    store = IpfsStore(
        f"http://127.0.0.1:{fake_rpc.port}", retries=3, backoff=0.01, find_timeout=0.2
    )
    with pytest.raises(ContentNotFound):
        store.pin(GOOD_CID)
    assert fake_rpc.calls == ["/api/v0/block/stat"]
    assert store.has(GOOD_CID) is False
    assert fake_rpc.calls == ["/api/v0/block/stat", "/api/v0/pin/ls", "/api/v0/block/stat"]


def test_cat_that_stalls_midway_is_retried_patiently(fake_rpc: FakeRpc) -> None:
    body = bytes(range(256)) * 64
    fake_rpc.script["/api/v0/cat"] = [(200, body, 0.0, 3.0), (200, body)]
    fake_rpc.script["/api/v0/block/stat"] = [(200, b'{"Key":"x","Size":10}')]
    store = IpfsStore(f"http://127.0.0.1:{fake_rpc.port}", retries=0, find_timeout=0.3)
    assert store.cat(GOOD_CID) == body
    assert fake_rpc.calls == ["/api/v0/cat", "/api/v0/block/stat", "/api/v0/cat"]


def test_cat_that_breaks_off_twice_is_a_storage_error(fake_rpc: FakeRpc) -> None:
    fake_rpc.script["/api/v0/cat"] = [(200, b"x" * 10_000, 0.0, 3.0)]
    fake_rpc.script["/api/v0/block/stat"] = [(200, b'{"Key":"x","Size":10}')]
    store = IpfsStore(f"http://127.0.0.1:{fake_rpc.port}", retries=0, find_timeout=0.3, timeout=0.5)
    with pytest.raises(StorageError) as info:
        store.cat(GOOD_CID)
    assert "broke off" in str(info.value) and "\n" not in str(info.value)


def test_not_an_ipfs_api(fake_rpc: FakeRpc) -> None:
    fake_rpc.script["/api/v0/add"] = [(200, b"<html>hello</html>")]
    store = IpfsStore(f"http://127.0.0.1:{fake_rpc.port}", retries=0)
    with pytest.raises(StorageError):
        store.add(b"x")


def test_node_down_is_storage_unavailable() -> None:
    (port,) = free_ports(1)
    store = IpfsStore(f"/ip4/127.0.0.1/tcp/{port}/http", retries=2, backoff=0.01)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as info:
        store.add(b"x")
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "market stack up" in message and "\n" not in message
    with pytest.raises(StorageUnavailable):
        store.cat(GOOD_CID)


def test_malformed_cid_is_refused_before_any_request(fake_rpc: FakeRpc) -> None:
    store = IpfsStore(f"http://127.0.0.1:{fake_rpc.port}")
    for call in (store.cat, store.pin, store.has):
        with pytest.raises(InvalidCid):
            call("not a cid")
    assert fake_rpc.calls == []


# -- IpfsNode with fake daemons -----------------------------------------------------------------


def fake_daemon(tmp_path: Path, source: str) -> tuple[IpfsNode, Path]:
    script = tmp_path / "fake-jsipfs.mjs"
    script.write_text(source)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "config").write_text("{}")
    api, gateway, rpc = free_ports(3)
    return IpfsNode(repo, api, gateway, rpc, jsipfs_bin=script), repo


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_daemon_dying_during_start_raises_with_log_tail(tmp_path: Path) -> None:
    node, repo = fake_daemon(tmp_path, "console.log('boom: cannot open repo'); process.exit(3)\n")
    with pytest.raises(StackError) as info:
        node.start(timeout=20)
    assert "boom: cannot open repo" in str(info.value)
    assert "exit" in str(info.value)
    assert not node.pid_file.exists()
    config = json.loads((repo / "config").read_text())
    assert config["Addresses"]["API"] == f"/ip4/127.0.0.1/tcp/{node.api_port}"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_daemon_never_answering_is_stopped_by_pid(tmp_path: Path) -> None:
    node, _ = fake_daemon(tmp_path, "console.log('pretending'); setInterval(() => {}, 1000)\n")
    with pytest.raises(StackError) as info:
        node.start(timeout=1.5)
    assert "did not answer" in str(info.value) and "pretending" in str(info.value)
    assert not node.is_running()
    assert not node.pid_file.exists()


def test_port_in_use_is_reported_before_spawning(tmp_path: Path) -> None:
    node, _ = fake_daemon(tmp_path, "process.exit(1)\n")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", node.api_port))
        holder.listen()
        with pytest.raises(StackError) as info:
            node.start(timeout=5)
    assert f"port {node.api_port}" in str(info.value)
    assert not node.log_file.exists()


def test_node_ports_must_differ(tmp_path: Path) -> None:
    with pytest.raises(StackError):
        IpfsNode(tmp_path / "repo", 5001, 5001, 5003)


# -- integration: a real js-ipfs daemon -----------------------------------------------------------

needs_jsipfs = pytest.mark.skipif(
    shutil.which("node") is None or not toolpaths.JSIPFS_BIN.exists(),
    reason="node or js-ipfs (npm ci) is missing",
)


@pytest.fixture()
def ipfs_store(ipfs_node: IpfsNode) -> Iterator[IpfsStore]:
    store = IpfsStore(ipfs_node.api_multiaddr, find_timeout=1.0, timeout=30)
    yield store
    store.close()


def _sockets_of(pid: int) -> tuple[list[str], list[tuple[str, str]]]:
    """(listening local addresses, established (local, peer) pairs) of `pid`, from `ss`."""
    listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    connected = subprocess.run(["ss", "-tnpH"], capture_output=True, text=True, check=True).stdout
    tag = f"pid={pid},"
    listen = [line.split()[3] for line in listening.splitlines() if tag in line]
    conns = [(line.split()[3], line.split()[4]) for line in connected.splitlines() if tag in line]
    return listen, conns


@needs_jsipfs
@pytest.mark.integration
@pytest.mark.skipif(shutil.which("ss") is None, reason="ss (iproute2) is missing")
def test_node_listens_on_loopback_only_and_dials_nothing(
    ipfs_node: IpfsNode, ipfs_store: IpfsStore
) -> None:
    ipfs_store.add(b"some traffic")
    pid = ipfs_node.status().pid
    assert pid is not None
    listen, conns = _sockets_of(pid)
    assert sorted(listen) == sorted(
        f"127.0.0.1:{p}" for p in (ipfs_node.api_port, ipfs_node.gateway_port, ipfs_node.rpc_port)
    )
    for local, peer in conns:  # only our own API clients, on loopback
        assert local.startswith("127.0.0.1:") and peer.startswith("127.0.0.1:")
        assert local == f"127.0.0.1:{ipfs_node.api_port}"


@needs_jsipfs
@pytest.mark.integration
def test_node_status_and_config(ipfs_node: IpfsNode) -> None:
    status = ipfs_node.status()
    assert status.running and status.pid and status.version == "0.18.1"
    assert ipfs_node.is_running()
    assert ipfs_node.pid_file.read_text().strip() == str(status.pid)
    config = json.loads((ipfs_node.repo_dir / "config").read_text())
    assert config["Addresses"]["API"] == f"/ip4/127.0.0.1/tcp/{ipfs_node.api_port}"
    assert config["Addresses"]["Gateway"] == f"/ip4/127.0.0.1/tcp/{ipfs_node.gateway_port}"
    assert config["Addresses"]["RPC"] == f"/ip4/127.0.0.1/tcp/{ipfs_node.rpc_port}"
    assert config["Addresses"]["Swarm"] == [] and config["Bootstrap"] == []
    assert config["Discovery"]["MDNS"]["Enabled"] is False
    # a second handle on the same repo sees the same daemon through the PID file
    other = IpfsNode(
        ipfs_node.repo_dir, ipfs_node.api_port, ipfs_node.gateway_port, ipfs_node.rpc_port
    )
    assert other.status().pid == status.pid
    assert other.start().pid == status.pid  # idempotent


@needs_jsipfs
@pytest.mark.integration
def test_add_cat_pin_has(ipfs_store: IpfsStore) -> None:
    data = os.urandom(700_000)
    cid = ipfs_store.add(data)
    assert cid.startswith("Qm") and cid == cid_of(data)
    assert ipfs_store.cat(cid) == data
    assert ipfs_store.is_pinned(cid)
    ipfs_store.pin(cid)
    assert ipfs_store.has(cid)
    assert ipfs_store.cat(cid, max_bytes=len(data)) == data
    with pytest.raises(ContentTooLarge):
        ipfs_store.cat(cid, max_bytes=len(data) - 1)


@needs_jsipfs
@pytest.mark.integration
@pytest.mark.parametrize(
    "size", [0, 1024, 262_144, 1_048_577], ids=["0", "1KiB", "256KiB", "1MiB+1"]
)
def test_cid_of_matches_the_node(ipfs_store: IpfsStore, size: int) -> None:
    data = os.urandom(size)
    assert ipfs_store.add(data) == cid_of(data)


@needs_jsipfs
@pytest.mark.integration
def test_raw_cid_equals_node_cidv1_for_a_single_block(ipfs_node: IpfsNode) -> None:
    data = os.urandom(10_000)
    answer = requests.post(
        f"{ipfs_node.api_url}/api/v0/add",
        params={"cid-version": "1"},
        files={"file": ("blob", data, "application/octet-stream")},
        timeout=30,
    ).json()
    node_cid = answer["Hash"]
    assert node_cid != raw_cid(data)  # js-ipfs spells it in base58btc
    assert same_multihash(node_cid, raw_cid(data))
    assert not same_multihash(cid_of(data), raw_cid(data))


@needs_jsipfs
@pytest.mark.integration
def test_cid_the_node_lacks_is_not_found_within_a_bounded_wait(ipfs_store: IpfsStore) -> None:
    missing = raw_cid(os.urandom(32))
    started = time.monotonic()
    with pytest.raises(ContentNotFound) as info:
        ipfs_store.cat(missing)
    assert missing in str(info.value) and "\n" not in str(info.value)
    assert ipfs_store.has(missing, timeout=0.5) is False
    with pytest.raises(ContentNotFound):
        ipfs_store.pin(missing)
    assert time.monotonic() - started < 30  # bounded, not a wall-clock assertion on speed


@needs_jsipfs
@pytest.mark.integration
def test_malformed_cid_against_the_node(ipfs_store: IpfsStore) -> None:
    with pytest.raises(InvalidCid):
        ipfs_store.cat("QmNotReallyACid")


@needs_jsipfs
@pytest.mark.integration
def test_fetch_verified_against_the_node(ipfs_store: IpfsStore) -> None:
    data = os.urandom(5000)
    cid = ipfs_store.add(data)
    assert fetch_verified(ipfs_store, cid, hashlib.sha256(data).digest(), 10_000) == data
    with pytest.raises(IntegrityError):
        fetch_verified(ipfs_store, cid, hashlib.sha256(b"something else").digest(), 10_000)


@needs_jsipfs
@pytest.mark.integration
def test_node_lifecycle_kill_stale_lock_restart(tmp_path: Path) -> None:
    api, gateway, rpc = free_ports(3)
    node = IpfsNode(tmp_path / "repo", api, gateway, rpc)
    try:
        node.init()
        node.init()  # idempotent
        status = node.start(timeout=90)
        store = IpfsStore(node.api_multiaddr, retries=1, backoff=0.01)
        cid = store.add(b"survives a crash")
        # simulate a crash: SIGKILL leaves repo.lock and api behind
        assert status.pid is not None
        os.kill(status.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while node.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not node.is_running()
        assert (node.repo_dir / "repo.lock").exists() or (node.repo_dir / "api").exists()
        with pytest.raises(StorageUnavailable):
            store.add(b"x")
        # another handle (e.g. `market stack down`) cleans up by PID file
        IpfsNode(node.repo_dir, api, gateway, rpc).stop()
        assert not (node.repo_dir / "repo.lock").exists()
        assert not (node.repo_dir / "api").exists()
        assert not node.pid_file.exists()
        node.start(timeout=90)
        assert store.cat(cid) == b"survives a crash"
        store.close()
    finally:
        node.stop()
    assert not node.is_running()
