"""gunicorn stops cleanly on SIGTERM while it is busy: exit code 0, round after round.

`docker stop` sends SIGTERM to PID 1, the gunicorn master. Each worker exits once its requests
in flight are answered, so with inference calls of different lengths the workers exit one
after another, and the master runs its child_exit hook (gunicorn.conf.py) in a SIGCHLD
handler that the next worker's exit can interrupt.
"""

import subprocess
import sys
import textwrap
import threading

import pytest
import requests
from conftest import SLOW, built_app, service_env
from service_process import ROOT, Processes
from waiting import wait_for

ROUNDS = 5
CLIENTS = 32
PATHS = ("/api/models", "/metrics", "/healthz", "/api/lifecycle-events")


# The master runs its child_exit hook in a SIGCHLD handler, and the next worker's exit can
# interrupt it anywhere: also halfway through an import the hook makes, while that module is
# half made. Interrupted at each of its imports in turn (each time as on a first call), the
# hook must come through. None at all is best: gunicorn.conf.py imports what it needs at load.
NESTED_CHILD_EXIT = textwrap.dedent(
    """
    import importlib.abc, os, runpy, signal, sys

    hooks = runpy.run_path("gunicorn.conf.py")

    class Worker:
        pid = 999999

    class NextWorkerExits(importlib.abc.MetaPathFinder):
        def __init__(self, at):
            self.left = at

        def find_spec(self, name, path=None, target=None):
            self.left -= 1
            if self.left == 0:
                os.kill(os.getpid(), signal.SIGCHLD)
            return None

    before = set(sys.modules)
    hooks["child_exit"](None, Worker())
    imported = set(sys.modules) - before
    signal.signal(signal.SIGCHLD, lambda signum, frame: hooks["child_exit"](None, Worker()))
    for at in range(1, len(imported) + 1):
        for name in imported:
            sys.modules.pop(name, None)
        finder = NextWorkerExits(at)
        sys.meta_path.insert(0, finder)
        try:
            hooks["child_exit"](None, Worker())
        finally:
            sys.meta_path.remove(finder)
    os.kill(os.getpid(), signal.SIGCHLD)
    print(f"came through; the hook imported {len(imported)} modules on its first call")
    """
)


def test_child_exit_hook_comes_through_a_sigchld_at_any_point(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "INSTANCE_PATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", NESTED_CHILD_EXIT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "came through" in done.stdout, done.stderr[-3000:]


@pytest.fixture
def procs(database, docker_client, tmp_path):
    with built_app(docker_client):  # clean tables; the model containers removed afterwards
        running = Processes(tmp_path)
        yield running
        running.stop_all()


class Load:
    """Clients that keep every worker busy until told to stop; how many answers they got."""

    def __init__(self, base: str, model_id: int):
        self.base = base
        self.model_id = model_id
        self.answered = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(CLIENTS)]
        for thread in self._threads:
            thread.start()

    def _client(self, index: int) -> None:
        """Even clients call the slow model (0.1 to 0.7 s), odd ones the service's own pages."""
        infer = f"{self.base}/api/models/{self.model_id}/infer?seconds=0.{index % 8 + 1}"
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    if index % 2:
                        session.get(f"{self.base}{PATHS[index // 2 % len(PATHS)]}", timeout=10)
                    else:
                        session.post(infer, data=b"{}", timeout=10)
                except requests.RequestException:
                    continue  # the server is going away: that is the point
                with self._lock:
                    self.answered += 1

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


@pytest.mark.parametrize("round_", range(1, ROUNDS + 1))
def test_busy_web_server_exits_0_on_sigterm(procs, round_):
    web = procs.web(service_env(web_concurrency=8, gunicorn_threads=8), name=f"web{round_}")
    body = {"user_id": "alice", "model_name": "slow", "image": SLOW}
    model = requests.post(f"{web.base}/api/models", json=body, timeout=10).json()
    assert requests.post(f"{web.base}/api/models/{model['id']}/start", timeout=60).status_code == 200
    load = Load(web.base, model["id"])
    try:
        wait_for(lambda: load.answered >= 200, 60, "the clients never got going")
        code = web.terminate()
    finally:
        load.stop()
    log = web.log()
    assert code == 0, log[-4000:]
    assert "Shutting down: Master" in log, log[-4000:]
