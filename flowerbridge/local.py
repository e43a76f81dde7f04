"""A local Flower SuperLink for `flwr run` in the simulation engine: loopback, a free port, no
phone-home, stopped by its PID.

`flwr run` with the default `:local:` connection starts a detached SuperLink on fixed ports
(39091/39093) that outlives it and has no PID to stop it by; tests, benchmarks and anyone sharing a
machine use `LocalSuperLink` instead: it starts `flower-superlink --simulation` on 127.0.0.1 and a
free port, writes a Flower config (`$FLWR_HOME/config.toml`) naming it, and `stop()` stops it and
every process under it (SuperExec, ServerApp, simulation, Ray) by PID.

`flower_env` is what every flwr process of ours runs with: Flower's telemetry and update check off,
no `uv sync` of the app's dependencies (the app runs in this environment), Ray's usage stats off and
Ray's node address on loopback (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` makes Ray take 127.0.0.1,
as `ray.init(_node_ip_address="127.0.0.1")` would), `FLWR_HOME` in the given directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from devnet.ports import free_port
from market.errors import StackError

__all__ = ["CONNECTION", "LocalSuperLink", "flower_env", "flwr_bin"]

#: The name of the Flower connection `LocalSuperLink` writes (`flwr run APP market-local`).
CONNECTION = "market-local"
_ROOT = Path(__file__).resolve().parent.parent


def flwr_bin(name: str) -> str:
    """A Flower executable of this environment (beside the running Python)."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        raise StackError(f"{name} is not installed: pip install -e '.[flower]'")
    return found


def flower_env(flwr_home: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every flwr process (see the module docstring)."""
    env = dict(os.environ if base is None else base)
    env.update({
        "FLWR_HOME": str(flwr_home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
    })
    # SuperLink runs flower-superexec, flwr-serverapp and flwr-simulation by name
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    # the ServerApp and ClientApps import the repository's packages (an editable install maps only
    # the packages it was built with)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


@dataclass
class LocalSuperLink:
    """`flower-superlink --simulation` on 127.0.0.1:`port`, its state and log in `home`."""

    home: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _federation: str = field(default="", repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.home / "superlink.log"

    def env(self) -> dict[str, str]:
        return flower_env(self.home)

    def healthy(self) -> bool:
        try:
            return httpx.get(f"http://{self.address}/health", timeout=0.5).is_success
        except httpx.HTTPError:
            return False

    def write_connection(self, num_supernodes: int, cpus_per_client: int = 1, ray_cpus: int | None = None) -> Path:
        """`$FLWR_HOME/config.toml` with the connection `market-local` as the default; the simulation
        gets `num_supernodes` nodes and as many logical Ray CPUs as they need to all run at once
        (Flower and Ray take whole CPUs here), so no node waits behind another for a worker while
        the commit window runs."""
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / "config.toml"
        path.write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n'
            f'[superlink.{CONNECTION}]\naddress = "{self.address}"\ninsecure = true\n'
        )
        self._federation = (f"num-supernodes={num_supernodes} client-resources-num-cpus={cpus_per_client}"
                            f" init-args-num-cpus={ray_cpus or num_supernodes * cpus_per_client}"
                            " init-args-log-to-driver=false")
        return path

    @property
    def federation_config(self) -> str:
        """`flwr run --federation-config` for the simulation `write_connection` described."""
        if not self._federation:
            raise StackError("no simulation described yet: call write_connection(num_supernodes) first")
        return self._federation

    def start(self, timeout: float = 60.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        argv = [
            flwr_bin("flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
            "--host", "127.0.0.1", "--port", str(self.port), "--database", str(self.home / "state.db"),
            "--disable-runtime-dependency-installation", "--log-file", str(self.log_file),
        ]
        out = (self.home / "superlink.out").open("ab")
        self.process = subprocess.Popen(argv, env=self.env(), stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        out.close()
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.process.poll() is not None:
                raise StackError(f"flower-superlink exited with code {self.process.returncode}: see {self.log_file}")
            if time.monotonic() > deadline:
                self.stop()
                raise StackError(f"flower-superlink did not answer on {self.address} within {timeout:.0f} s:"
                                 f" see {self.log_file}")
            time.sleep(0.2)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the SuperLink and every process under it, SIGKILL what is left after `timeout`.

        Flower detaches its SuperExec (and that its ServerApp and simulation processes) into sessions
        of their own, so the tree is read by parent PID, before anything is stopped: once a parent
        exits its children are re-parented and cannot be told from anyone else's."""
        proc = self.process
        if proc is None:
            return
        try:
            root = psutil.Process(proc.pid)
            tree = [*root.children(recursive=True), root]
        except psutil.NoSuchProcess:
            tree = []
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.terminate()
        _, alive = psutil.wait_procs(tree, timeout=timeout)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=5)
        proc.poll()
        self.process = None
