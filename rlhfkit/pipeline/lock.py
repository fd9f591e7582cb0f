"""One writer per run folder: ``<output_dir>/.rlhfkit.lock`` holds the pid and host of the run that writes there.

:class:`RunLock` is taken by ``rlhfkit run`` (the main process only, under ``torchrun``) before anything is written
and released when the run ends. A second run on the same folder is refused with one line naming the running pid and
host. A lock left by a process that no longer exists on this host (a SIGKILLed run) is stale: it is taken over with
a notice. A lock from another host cannot be checked from here; the message says how to remove it once that run is
known to be dead.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhfkit.core.errors import ConfigError

logger = logging.getLogger(__name__)

LOCK_FILE = ".rlhfkit.lock"


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (Linux: field 22 of ``/proc/PID/stat``), to tell a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict[str, Any]) -> bool:
    pid = holder["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        pass
    recorded, now = holder.get("pid_start"), _start_time(pid)
    return recorded is None or now is None or recorded == now  # another process with a reused pid: not alive


def read_lock(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The holder of a run folder's lock (``{"pid", "host", "started"}``), or None when it is not locked."""
    try:
        return json.loads((Path(folder) / LOCK_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pid": None, "host": None, "started": None}  # unreadable: treated as held by an unknown run


class RunLock:
    """The exclusive lock of a run folder (a context manager; see the module docstring).

    Args:
        folder: the run folder (created if missing).
        say: where the notice about a taken-over stale lock goes.
    """

    def __init__(self, folder: str | os.PathLike, say: Callable[[str], None] = logger.warning):
        self.path = Path(folder) / LOCK_FILE
        self.say = say
        self.held = False

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {
            "pid": os.getpid(),
            "pid_start": _start_time(os.getpid()),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        for _ in range(3):  # a competing run may take over the same stale lock at the same time: try again
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale(me["host"])
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        self._refuse(read_lock(self.path.parent) or {})

    def _take_over_if_stale(self, host: str) -> None:
        holder = read_lock(self.path.parent)
        if holder is None:
            return  # released meanwhile
        pid = holder.get("pid")
        if holder.get("host") != host or not isinstance(pid, int) or _alive(holder):
            self._refuse(holder)
        stale = self.path.with_name(f"{LOCK_FILE}.stale.{os.getpid()}")
        try:
            os.replace(self.path, stale)  # only one competing run gets to move it
        except FileNotFoundError:
            return
        stale.unlink()
        self.say(
            f"[lock] {self.path.parent}: took over the lock of run pid {pid} (started {holder.get('started')}), "
            "which no longer exists"
        )

    def _refuse(self, holder: dict[str, Any]) -> None:
        pid, host = holder.get("pid"), holder.get("host")
        here = host == socket.gethostname()
        raise ConfigError(
            f"output_dir {str(self.path.parent)!r} is in use by rlhfkit run pid {pid} on host {host} (since "
            f"{holder.get('started')}): one run per folder; wait for it to finish, or choose another output_dir"
            + ("" if here else f" (if that run is dead, delete {self.path})")
        )

    def release(self) -> None:
        """Remove the lock file if this process still holds it."""
        if self.held:
            holder = read_lock(self.path.parent) or {}
            if holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
