"""nanobragg-dataset on Ray, on this machine only: a local Ray instance, and a two-node cluster on 127.0.0.1
(a head and a worker node started here with `ray start`) whose worker node is killed mid-run. Both must give
the local engine's manifest, shot for shot. Every Ray process started here is stopped here, even on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from nanobragg_torch.dataset import make_dataset

pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
import psutil  # noqa: E402  (a dependency of Ray)

FLAGS = "-cell 100 100 100 90 90 90 -default_F 100 -lambda 1 -distance 100 -detpixels 48 -pixel 0.2 -N 3"
SPEC = f"""[experiment]
flags = "{FLAGS}"
[shots]
count = 16
seed = 5
shard_size = 1
[vary]
orientation = "random"
N = [2, 3]
noise = true
"""
# no token (loopback only), no usage report
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def spec_and_local(tmp_path_factory):
    """The SPEC and its manifest from the local engine (the reference for every Ray run)."""
    folder = tmp_path_factory.mktemp("ray_spec")
    spec = folder / "spec.toml"
    spec.write_text(SPEC)
    make_dataset(str(spec), str(folder / "local"), progress=False)
    return spec, manifest(folder / "local")


def _processes_under(root: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(root in arg for arg in proc.info["cmdline"] or ()):
                found.append(proc)
    return found


@contextlib.contextmanager
def ray_root():
    """A private Ray temp folder (short: Ray's socket paths must fit 107 bytes); on exit, no Ray process that
    names it survives (they are killed, and the test fails if any had been left behind)."""
    root = tempfile.mkdtemp(prefix="nbray", dir="/tmp")
    try:
        yield root
    finally:
        time.sleep(1.0)
        left = _processes_under(root)
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"Ray processes left behind: {[p.pid for p in left]}"


def _cli(spec: Path, out: Path, *args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "nanobragg_torch.dataset.cli", str(spec), "--out", str(out), "--no-progress",
           "--engine", "ray", "--threads", "1", *args]
    return subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)


def test_local_ray_instance_matches_the_local_engine(spec_and_local, tmp_path):
    spec, local = spec_and_local
    with ray_root() as root:
        run = _cli(spec, tmp_path / "ray", "--workers", "2", env={**RAY_ENV, "RAY_TMPDIR": root})
        assert run.returncode == 0, run.stderr[-3000:]
        assert "2 worker(s) (ray), 0 failure(s) retried" in run.stdout
        assert list(Path(root).rglob("session_*")), "Ray did not use the private folder (the leak check would miss)"
    assert manifest(tmp_path / "ray") == local


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _node_args(ports: list[int]) -> list[str]:
    """Every port a node opens, chosen here (so that nothing collides with another cluster on this machine)."""
    return ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--block", "--disable-usage-stats",
            "--node-manager-port", str(ports[0]), "--object-manager-port", str(ports[1]),
            "--metrics-export-port", str(ports[2]), "--dashboard-agent-listen-port", str(ports[3]),
            "--dashboard-agent-grpc-port", str(ports[4]), "--runtime-env-agent-port", str(ports[5]),
            "--worker-port-list", ",".join(map(str, ports[6:14]))]


def _start(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    ray = str(Path(sys.executable).with_name("ray"))
    return subprocess.Popen([ray, "start", *args], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group: the node's processes die together


def _wait_for_cpus(address: str, cpus: int, env: dict, timeout: float = 120) -> None:
    probe = ("import ray, time, sys\nray.init(address=sys.argv[1], log_to_driver=False)\n"
             "t = time.time()\nwhile ray.cluster_resources().get('CPU', 0) < int(sys.argv[2]):\n"
             "    assert time.time() - t < 100, ray.cluster_resources()\n    time.sleep(0.2)\nray.shutdown()\n")
    subprocess.run([sys.executable, "-c", probe, address, str(cpus)], env=env, check=True, timeout=timeout,
                   capture_output=True)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_two_node_cluster_survives_a_killed_worker_node(spec_and_local, tmp_path):
    """Head and worker node on 127.0.0.1; the worker node is SIGKILLed once shards are finishing; the run
    completes with every shot exactly once, one shard retried, the same bytes as the local engine."""
    spec, local = spec_and_local
    out = tmp_path / "cluster"
    with ray_root() as root:
        env = {**os.environ, **RAY_ENV}
        ports = _free_ports(30)
        head = _start(["--head", "--port", str(ports[0]), "--include-dashboard", "false", "--dashboard-port",
                       str(ports[1]), "--temp-dir", root, *_node_args(ports[2:16])], tmp_path / "head.log", env)
        worker = None
        driver = None
        try:
            address = f"127.0.0.1:{ports[0]}"
            _wait_for_cpus(address, 1, env)
            worker = _start(["--address", address, *_node_args(ports[16:30])], tmp_path / "worker.log", env)
            _wait_for_cpus(address, 2, env)
            cmd = [sys.executable, "-m", "nanobragg_torch.dataset.cli", str(spec), "--out", str(out),
                   "--no-progress", "--engine", "ray", "--address", address, "--threads", "1"]
            driver = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 180
            while len(list(out.glob("shards/shard-*.jsonl"))) < 2:  # both nodes busy by now
                assert driver.poll() is None, driver.communicate()
                assert time.monotonic() < deadline, "no shards finished in 180 s"
                time.sleep(0.05)
            assert list(Path(root).rglob("session_*"))
            _kill_group(worker)
            stdout, stderr = driver.communicate(timeout=300)
            assert driver.returncode == 0, stderr[-3000:]
        finally:
            if driver is not None and driver.poll() is None:
                driver.kill()
                driver.wait()
            if worker is not None:
                _kill_group(worker)
            _kill_group(head)
    assert "1 failure(s) retried" in stdout, stdout
    lines = manifest(out)
    assert [x["index"] for x in lines] == list(range(16))
    assert lines == local
    assert sorted(p.name for p in out.glob("shards/*")) == sorted(
        f"shard-{k:06d}.{ext}" for k in range(16) for ext in ("h5", "jsonl"))
