"""One writer per output folder (``ray_jobs.lock``): refusal naming the holder, takeover of a dead or
silent holder's lock, exactly one winner when two runs race, on a local folder and on S3 (moto)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from ray_jobs.errors import UserError
from ray_jobs.lock import OutputLock


def _lock(uri: str, **kwargs) -> OutputLock:
    return OutputLock(uri, what="--out X", settle_s=0.2, heartbeat_s=0.2, **kwargs)


@pytest.fixture(params=["local", "s3"])
def lock_uri(request, tmp_path):
    if request.param == "s3":
        fs = request.getfixturevalue("s3")
        fs.mkdir("locks")
        return "s3://locks/out/_iqa/lock.json"
    return str(tmp_path / "out" / "_iqa" / "lock.json")


def test_a_held_lock_refuses_a_second_run_naming_the_holder_and_is_freed_on_exit(lock_uri):
    with _lock(lock_uri) as first:
        with pytest.raises(UserError, match=rf"--out X is being written by another run \(host {socket.gethostname()}, "
                                            r"pid \d+, started .*\): wait for it to finish"):
            _lock(lock_uri).acquire()
        time.sleep(0.5)  # the heartbeat keeps it alive
        assert json.loads(first._fs.cat_file(first._path))["token"] == first.token
    with _lock(lock_uri):  # released: the next run takes it
        pass


def test_dead_and_silent_holders_are_taken_over_a_live_remote_one_is_not(lock_uri):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holder = _lock(lock_uri)
    holder._fs.pipe_file(holder._path, json.dumps({"token": "t", "host": socket.gethostname(), "pid": dead.pid,
                                                   "started": "then", "heartbeat": time.time()}).encode())
    with _lock(lock_uri):  # same host, its pid is gone: a killed driver's lock
        pass
    remote = {"token": "r", "host": "other-node", "pid": 1, "started": "then"}
    holder._fs.pipe_file(holder._path, json.dumps({**remote, "heartbeat": time.time()}).encode())
    with pytest.raises(UserError, match=r"host other-node.*within \d+ s"):
        _lock(lock_uri, stale_after_s=60).acquire()
    holder._fs.pipe_file(holder._path, json.dumps({**remote, "heartbeat": time.time() - 120}).encode())
    with _lock(lock_uri, stale_after_s=60):  # its heartbeat stopped two minutes ago
        pass


def test_two_runs_racing_for_a_free_lock_give_exactly_one_winner(lock_uri):
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def run() -> None:
        lock = _lock(lock_uri)
        start.wait()
        try:
            lock.acquire()
        except UserError:
            outcomes.append("refused")
            return
        outcomes.append("held")
        time.sleep(1.0)
        lock.release()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["held", "refused"]
