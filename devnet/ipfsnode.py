"""The local js-ipfs daemon: init a repo, start it offline on loopback, check it, stop it by PID.

js-ipfs (npm `ipfs` 0.66.1, `toolpaths.JSIPFS_BIN`, run with `node`) is the only IPFS node these
machines can install (no Kubo binary). It serves the Kubo-compatible RPC API. `IpfsNode`:

- `init()` runs `jsipfs init --profile=test --empty-repo` once (IPFS_PATH=repo_dir), then
  rewrites the repo config every time: API/Gateway/RPC on 127.0.0.1 at the given ports,
  `Swarm: []`, `Bootstrap: []`, no announce/delegates, MDNS and webRTCStar discovery off.
- `start()` runs `jsipfs daemon --offline --enable-preload=false` (preload is a daemon option,
  not a config key), output to `<parent>/<repo name>.log`, PID in `<parent>/<repo name>.pid`,
  then polls `POST /api/v0/id` until it answers (js-ipfs takes 2.5-6.5 s). If the process dies
  or the deadline passes: StackError with the log's tail (and the process is stopped).
- `stop()` sends SIGTERM to the PID (the daemon shuts down cleanly), SIGKILL after `timeout`,
  then removes the PID file and, once the process is gone, a stale `repo.lock` and `api` file.

With `--offline`, no swarm addresses and no bootstrap peers the daemon listens only on the three
loopback ports and dials nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from devnet import toolpaths
from devnet.process import pid_alive
from market.errors import StackError, ToolchainError

__all__ = ["IpfsNode", "IpfsNodeStatus"]

_LOG_TAIL_LINES = 25


@dataclass(frozen=True)
class IpfsNodeStatus:
    """What `IpfsNode.status()` reports."""

    running: bool
    pid: int | None
    api_url: str
    api_multiaddr: str
    version: str | None
    repo_dir: Path


class IpfsNode:
    """One js-ipfs daemon with its repo at `repo_dir`, bound to 127.0.0.1 on the given ports."""

    def __init__(
        self,
        repo_dir: Path | str,
        api_port: int = 5001,
        gateway_port: int = 8080,
        rpc_port: int = 5003,
        *,
        node_bin: str = "node",
        jsipfs_bin: Path | str = toolpaths.JSIPFS_BIN,
    ):
        ports = (api_port, gateway_port, rpc_port)
        if len(set(ports)) != 3 or not all(0 < int(p) < 65536 for p in ports):
            raise StackError(
                f"IPFS ports {ports} must be three distinct TCP ports: choose other ports"
            )
        self.repo_dir = Path(repo_dir).resolve()
        self.api_port = int(api_port)
        self.gateway_port = int(gateway_port)
        self.rpc_port = int(rpc_port)
        self.node_bin = node_bin
        self.jsipfs_bin = Path(jsipfs_bin)
        self.log_file = self.repo_dir.parent / f"{self.repo_dir.name}.log"
        self.pid_file = self.repo_dir.parent / f"{self.repo_dir.name}.pid"
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"IpfsNode({str(self.repo_dir)!r}, api_port={self.api_port})"

    @property
    def api_multiaddr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.api_port}/http"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    # -- init --------------------------------------------------------------------------------

    def init(self) -> None:
        """Create the repo if missing, then (always) pin its config to loopback and offline."""
        config_path = self.repo_dir / "config"
        if not config_path.exists():
            self._check_tools()
            self.repo_dir.parent.mkdir(parents=True, exist_ok=True)
            try:
                result = subprocess.run(
                    [self.node_bin, str(self.jsipfs_bin), "init", "--profile=test", "--empty-repo"],
                    env=self._env(),
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=120,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise StackError(
                    f"`jsipfs init` in {self.repo_dir} did not finish in 120 s: "
                    "remove the directory and try again"
                ) from None
            if result.returncode != 0 or not config_path.exists():
                tail = _tail_text((result.stdout + result.stderr).decode(errors="replace"))
                raise StackError(
                    f"`jsipfs init` failed in {self.repo_dir} (exit {result.returncode}): {tail}"
                )
        self._write_config(config_path)

    def _write_config(self, config_path: Path) -> None:
        try:
            config = json.loads(config_path.read_text())
        except (OSError, ValueError) as exc:
            raise StackError(
                f"cannot read the IPFS repo config {config_path}: {exc}; "
                "remove the repo directory and init again"
            ) from None
        addresses = config.setdefault("Addresses", {})
        addresses["API"] = f"/ip4/127.0.0.1/tcp/{self.api_port}"
        addresses["Gateway"] = f"/ip4/127.0.0.1/tcp/{self.gateway_port}"
        addresses["RPC"] = f"/ip4/127.0.0.1/tcp/{self.rpc_port}"
        addresses["Swarm"] = []
        addresses["Announce"] = []
        addresses["NoAnnounce"] = []
        addresses["Delegates"] = []
        config["Bootstrap"] = []
        discovery = config.setdefault("Discovery", {})
        discovery.setdefault("MDNS", {})["Enabled"] = False
        discovery.setdefault("webRTCStar", {})["Enabled"] = False
        config.setdefault("Swarm", {})["DisableNatPortMap"] = True
        tmp = config_path.with_name(config_path.name + ".tmp")
        tmp.write_text(json.dumps(config, indent=2) + "\n")
        os.replace(tmp, config_path)

    # -- start / stop ------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> IpfsNodeStatus:
        """Start the daemon (init first if needed) and wait until its API answers.

        Idempotent: if this repo's daemon already runs, returns its status.
        """
        pid = self._live_pid()
        if pid is not None:
            return self.status()
        self._check_tools()
        self.init()
        self._remove_stale_files()
        for port in (self.api_port, self.gateway_port, self.rpc_port):
            if not _port_free(port):
                raise StackError(
                    f"port {port} on 127.0.0.1 is in use, the IPFS daemon cannot bind it: "
                    "stop what holds it or choose other ports"
                )
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"\n--- start {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())
            log.flush()
            offset = log.tell()
            try:
                proc = subprocess.Popen(
                    [
                        self.node_bin,
                        str(self.jsipfs_bin),
                        "daemon",
                        "--offline",
                        "--enable-preload=false",
                    ],
                    env=self._env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ToolchainError(
                    f"cannot run {self.node_bin}: {exc.strerror}; install Node.js 20"
                ) from None
        self._proc = proc
        self.pid_file.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout
        while True:
            code = proc.poll()
            if code is not None:
                self._forget()
                raise StackError(
                    f"the IPFS daemon exited with code {code} during start: "
                    f"{self._log_tail(offset)} (log: {self.log_file})"
                )
            if self._api_answers():
                return self.status()
            if time.monotonic() > deadline:
                self.stop()
                raise StackError(
                    f"the IPFS daemon did not answer at {self.api_url} within {timeout:g}s: "
                    f"{self._log_tail(offset)} (log: {self.log_file})"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the daemon by PID, SIGKILL it after `timeout`; remove PID and stale files."""
        pid = self._live_pid()
        if pid is not None:
            _signal(pid, signal.SIGTERM)
            if not self._wait_gone(pid, timeout):
                _signal(pid, signal.SIGKILL)
                if not self._wait_gone(pid, 5.0):
                    raise StackError(
                        f"the IPFS daemon (PID {pid}) survived SIGKILL: check `ps -p {pid}`"
                    )
        self._forget()
        self._remove_stale_files()

    def is_running(self) -> bool:
        return self._live_pid() is not None

    def status(self) -> IpfsNodeStatus:
        pid = self._live_pid()
        version = None
        if pid is not None:
            answer = self._post_json("/api/v0/version", timeout=2.0)
            if isinstance(answer, dict):
                version = str(answer.get("Version")) if answer.get("Version") else None
        return IpfsNodeStatus(
            running=pid is not None,
            pid=pid,
            api_url=self.api_url,
            api_multiaddr=self.api_multiaddr,
            version=version,
            repo_dir=self.repo_dir,
        )

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["IPFS_PATH"] = str(self.repo_dir)
        env.pop("IPFS_MONITORING", None)
        return env

    def _check_tools(self) -> None:
        if shutil.which(self.node_bin) is None:
            raise ToolchainError(f"`{self.node_bin}` is not on PATH: install Node.js 20")
        if not self.jsipfs_bin.exists():
            raise ToolchainError(
                f"js-ipfs is missing at {self.jsipfs_bin}: run `npm ci` in {toolpaths.ROOT}"
            )

    def _read_pid(self) -> int | None:
        if self._proc is not None:
            return self._proc.pid
        try:
            text = self.pid_file.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def _live_pid(self) -> int | None:
        """The daemon's PID if it is alive and looks like our js-ipfs process."""
        pid = self._read_pid()
        if pid is None:
            return None
        if self._proc is not None and self._proc.pid == pid:
            return pid if self._proc.poll() is None else None
        return pid if pid_alive(pid) and _looks_like_ipfs(pid) else None

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                try:
                    self._proc.wait(timeout=0.1)
                    return True
                except subprocess.TimeoutExpired:
                    continue
            if not pid_alive(pid):
                return True
            time.sleep(0.05)
        return not pid_alive(pid)

    def _forget(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(Exception):
                self._proc.wait(timeout=0)  # reap
            self._proc = None
        self.pid_file.unlink(missing_ok=True)

    def _remove_stale_files(self) -> None:
        """Remove `repo.lock` and `api` left by a daemon that is gone (never while it runs)."""
        if self._live_pid() is not None:
            return
        lock = self.repo_dir / "repo.lock"
        if lock.is_dir():
            shutil.rmtree(lock, ignore_errors=True)
        else:
            lock.unlink(missing_ok=True)
        (self.repo_dir / "api").unlink(missing_ok=True)

    def _api_answers(self) -> bool:
        return self._post_json("/api/v0/id", timeout=1.0) is not None

    def _post_json(self, path: str, timeout: float) -> object | None:
        request = urllib.request.Request(self.api_url + path, data=b"", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if response.status != 200:
                    return None
                return json.loads(response.read() or b"null")
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def _log_tail(self, offset: int = 0) -> str:
        try:
            with self.log_file.open("rb") as handle:
                handle.seek(offset)
                text = handle.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return _tail_text(text)


def _tail_text(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-_LOG_TAIL_LINES:])[-2000:] or "(no output)"


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _looks_like_ipfs(pid: int) -> bool:
    """Guard against a recycled PID: the process must be node/js-ipfs."""
    try:
        cmdline = (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return True  # no /proc: trust the PID file
    return "ipfs" in cmdline or "ipfs" in comm or comm == "node"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
