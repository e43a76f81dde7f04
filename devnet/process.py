"""A background process the stack owns: started detached, tracked by a PID file, health-checked,
and stopped by its own PID (TERM, then KILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from market.errors import StackError


def pid_alive(pid: int) -> bool:
    """Whether `pid` still runs. Our own child counts as alive until reaped (reaping it here);
    another process's zombie counts as gone."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child
    except OSError:
        pass
    else:
        return done != pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class ManagedProcess:
    """One long-running process with `<name>.pid` and `<name>.log` in `run_dir`."""

    def __init__(self, name: str, run_dir: Path):
        self.name = name
        self.run_dir = Path(run_dir)
        self.pid_file = self.run_dir / f"{name}.pid"
        self.log_file = self.run_dir / f"{name}.log"

    @property
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def start(
        self,
        argv: Sequence[str],
        healthy: Callable[[], bool],
        *,
        env: dict[str, str] | None = None,
        timeout: float = 30.0,
        cwd: Path | None = None,
    ) -> int:
        """Start `argv` unless already running; wait until `healthy()`; return the PID."""
        existing = self.pid
        if existing is not None:
            return existing
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,  # survives the CLI that started it; stopped by PID
            )
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise StackError(
                    f"{self.name} exited with code {proc.returncode} while starting; log {self.log_file}:\n"
                    + self.log_tail()
                )
            try:
                if healthy():
                    return proc.pid
            except Exception:  # noqa: BLE001, S110 - not up yet
                pass
            time.sleep(0.1)
        self.stop()
        raise StackError(f"{self.name} did not become healthy within {timeout:.0f} s; log {self.log_file}:\n" + self.log_tail())

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop by PID; True if something was running."""
        pid = self.pid
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return True
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not pid_alive(pid):
                    return True
                time.sleep(0.05)
        raise StackError(f"{self.name} (pid {pid}) did not stop: kill it by hand")
