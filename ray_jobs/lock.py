"""One writer per output folder: a lock file with a heartbeat, on any fsspec store (local or S3).

A job that writes into ``DST`` first takes ``DST/_iqa/lock.json``; a second run started while the first
one holds it is refused with one line naming the holder (host, pid, start) and what to do. How:

1. read the lock; a *live* lock (heartbeat younger than ``stale_after_s``, and on this host a process
   that still exists) refuses the run;
2. write our own token, wait ``settle_s`` and read it back: when two runs raced past step 1, the later
   write wins on every store (S3 is strongly consistent), so exactly one run reads back its own token
   and the other is refused;
3. a thread refreshes the heartbeat every ``heartbeat_s`` while the job runs; leaving deletes the lock.

A driver that was killed leaves its lock behind: on the same host the next run sees that the pid is gone
and takes it over at once; from another host it is taken over once its heartbeat is ``stale_after_s``
old (the refusal says how long to wait). Object stores have no atomic create-if-absent that every
S3-compatible server supports, hence the write-settle-read protocol: it relies on a run's read and write
in step 1-2 being less than ``settle_s`` apart, which holds for anything but a stalled driver.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
import uuid
from typing import Any

from ray_jobs.errors import UserError
from ray_jobs.runtime import filesystem_for


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputLock:
    """Context manager holding ``uri`` (a lock file) for one run; see the module docstring.

    Args:
        uri: the lock file (``DST/_iqa/lock.json``).
        what: how refusals name the folder and the job (``"--out s3://b/scores/"``).
        stale_after_s: a heartbeat older than this is a dead holder's.
        heartbeat_s: how often the holder refreshes its heartbeat.
        settle_s: wait between writing the token and reading it back.
    """

    def __init__(self, uri: str, *, what: str, stale_after_s: float = 120.0, heartbeat_s: float = 10.0,
                 settle_s: float = 1.0) -> None:
        self.uri = uri
        self.what = what
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s
        self.settle_s = settle_s
        self.token = uuid.uuid4().hex
        self.started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fs, self._path = filesystem_for(uri)

    def _read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self._fs.cat_file(self._path).decode("utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:  # a lock being written this instant: treat it as held
            return {"token": "?", "host": "?", "pid": -1, "started": "?", "heartbeat": time.time()}

    def _write(self) -> None:
        payload = json.dumps({"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                              "started": self.started, "heartbeat": time.time()}).encode()
        parent = self._path.rsplit("/", 1)[0]
        if "file" in (self._fs.protocol if isinstance(self._fs.protocol, tuple) else (self._fs.protocol,)):
            os.makedirs(parent, exist_ok=True)
            tmp = f"{self._path}.{self.token}.tmp"
            with open(tmp, "wb") as handle:
                handle.write(payload)
            os.replace(tmp, self._path)
        else:
            self._fs.pipe_file(self._path, payload)

    def _live(self, holder: dict[str, Any]) -> bool:
        age = time.time() - float(holder.get("heartbeat") or 0)
        if age > self.stale_after_s:
            return False
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) \
                and holder["pid"] > 0 and not _pid_alive(holder["pid"]):
            return False
        return True

    def _refuse(self, holder: dict[str, Any]) -> UserError:
        wait = max(0, round(self.stale_after_s - (time.time() - float(holder.get("heartbeat") or 0))))
        return UserError(
            f"{self.what} is being written by another run (host {holder.get('host')}, pid {holder.get('pid')}, "
            f"started {holder.get('started')}): wait for it to finish and run again (a run that died frees "
            f"the lock {self.uri} within {wait} s), or give a new --out")

    def acquire(self) -> None:
        """Take the lock or raise :class:`UserError` naming its holder."""
        holder = self._read()
        if holder is not None and holder.get("token") != self.token and self._live(holder):
            raise self._refuse(holder)
        self._write()
        time.sleep(self.settle_s)
        holder = self._read()
        if holder is None or holder.get("token") != self.token:
            raise self._refuse(holder or {})
        self._thread = threading.Thread(target=self._beat, name="output-lock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                holder = self._read()
                if holder is not None and holder.get("token") == self.token:
                    self._write()
            except Exception:  # noqa: BLE001 - a missed heartbeat only makes the lock look older
                pass

    def release(self) -> None:
        """Stop the heartbeat and delete the lock if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            holder = self._read()
            if holder is not None and holder.get("token") == self.token:
                self._fs.rm_file(self._path)
        except Exception:  # noqa: BLE001 - a lock left behind is taken over by the next run
            pass

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
