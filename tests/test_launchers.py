"""The launchers (``hydra/launcher=joblib|submitit_local|ray``) run a sweep's jobs elsewhere.

Each test runs the same tiny two-job sweep over a shape-changing key (``mix``) and checks that
every job wrote its results, that they combine into one Dataset, that the numbers equal those
of the same sweep run by Hydra's basic launcher, one job after the other in-process (same
config and seed, same numbers), and that the launching process never started JAX. A Hydra
callback (``Probe``, below) records in each job's directory the process, the time and the
environment the job ran with.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from hydra.experimental.callback import Callback

from analysis import load_sweep

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["world=gaussian", "mix=replace,accumulate", "generations=2", "seeds=3",
         "progress=false"]
PROBE = "+hydra.callbacks.probe._target_=test_launchers.Probe"

# Runs ``python -m sim`` and, as it exits, says which JAX backends the launching process made.
PARENT = """
import atexit, runpy, sys
def report():
    bridge = sys.modules.get("jax._src.xla_bridge")
    backends = sorted(getattr(bridge, "_backends", None) or {})
    print("parent JAX backends: " + ",".join(backends), file=sys.stderr)
atexit.register(report)
sys.argv[0] = "sim"
runpy.run_module("sim", run_name="__main__", alter_sys=True)
"""


class Probe(Callback):
    """Writes probe.json into each job's directory: pid, start and end times, XLA variables."""

    def on_job_start(self, config, **kwargs) -> None:  # with hydra.job.env_set applied
        self.env = {k: os.environ.get(k) for k in ("PJRT_NPROC", "XLA_PYTHON_CLIENT_MEM_FRACTION")}
        self.start = time.time()

    def on_job_end(self, config, job_return, **kwargs) -> None:
        out = Path(config.hydra.runtime.output_dir) / "probe.json"
        out.write_text(json.dumps({"pid": os.getpid(), "start": self.start,
                                   "end": time.time(), **self.env}))


RAY_TOKEN = uuid.uuid4().hex  # this test session's cluster's


def environment() -> dict:
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    env = {**os.environ, "PYTHONPATH": path, "HYDRA_FULL_ERROR": "1",
           # Ray's token authentication, with the token given to the head and the clients
           # (ray 2.60's `ray start` no longer writes ~/.ray/auth_token by itself)
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": RAY_TOKEN}
    for key in ("PJRT_NPROC", "XLA_PYTHON_CLIENT_MEM_FRACTION"):
        env.pop(key, None)
    return env


def sweep(cwd: Path, *args: str) -> tuple:
    """Run the sweep with ``args``; return its combined Dataset and the jobs' probes."""
    out = subprocess.run([sys.executable, "-c", PARENT, "-m", *SWEEP, *args], cwd=cwd,
                         env=environment(), capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "parent JAX backends: \n" in out.stderr, out.stderr[-2000:]  # none
    [sweep_dir] = (cwd / "runs" / "multirun").glob("*/*")
    jobs = sorted(p.parent for p in sweep_dir.glob("*/.hydra"))
    assert [p.name for p in jobs] == ["0", "1"]
    assert all((job / "results.nc").exists() for job in jobs)
    probes = [json.loads((job / "probe.json").read_text()) for job in jobs]
    return load_sweep(sweep_dir), probes


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """The sweep run by Hydra's basic launcher, in-process, one job after the other."""
    ds, probes = sweep(tmp_path_factory.mktemp("basic"), PROBE, "hydra/launcher=basic")
    assert probes[0]["pid"] == probes[1]["pid"]
    return ds


def assert_same_numbers(ds, reference) -> None:
    assert ds.sizes == reference.sizes == {"generation": 3, "seed": 3, "mix": 2}
    assert set(ds.data_vars) == set(reference.data_vars)
    for name in (n for n, v in reference.data_vars.items() if "seed" in v.dims):  # not costs
        np.testing.assert_array_equal(ds[name].sel(mix=reference.mix).values,
                                      reference[name].values, err_msg=name)


def overlap(probes) -> bool:
    return max(p["start"] for p in probes) < min(p["end"] for p in probes)


@pytest.mark.slow  # processes (and a Ray cluster): python -m pytest -m slow
def test_joblib_runs_jobs_in_parallel_with_the_cpus_split(tmp_path, sequential):
    ds, probes = sweep(tmp_path, PROBE, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                       "+hydra.job.env_set.XLA_PYTHON_CLIENT_MEM_FRACTION=0.2")
    assert_same_numbers(ds, sequential)
    assert len({p["pid"] for p in probes} | {os.getpid()}) == 3 and overlap(probes)
    threads = str(max(1, len(os.sched_getaffinity(0)) // 2))  # CPUs // jobs in parallel
    assert [p["PJRT_NPROC"] for p in probes] == [threads] * 2
    # the launcher's default would be 0.75 / 2; a setting of the job's wins
    assert [p["XLA_PYTHON_CLIENT_MEM_FRACTION"] for p in probes] == ["0.2"] * 2


@pytest.mark.slow  # processes (and a Ray cluster): python -m pytest -m slow
def test_submitit_local_runs_each_job_in_a_process(tmp_path, sequential):
    ds, probes = sweep(tmp_path, PROBE, "hydra/launcher=submitit_local",
                       "hydra.launcher.timeout_min=5")
    assert_same_numbers(ds, sequential)
    assert len({p["pid"] for p in probes} | {os.getpid()}) == 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster(tmp_path):
    """A one-node Ray cluster with 2 CPUs, started for the test and stopped after it."""
    ray = shutil.which("ray", path=str(Path(sys.executable).parent))
    if ray is None:
        pytest.fail('Ray is not installed: pip install -e ".[cluster]"')
    port, log = free_port(), tmp_path / "ray-start.log"
    with open(log, "w") as out:
        head = subprocess.Popen(
            [ray, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
             "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
             "--disable-usage-stats", "--block"],
            env=environment(), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)  # its own process group, so that all of it can be ended
    try:
        deadline = time.time() + 60
        while "Ray runtime started" not in log.read_text():
            if head.poll() is not None or time.time() > deadline:
                pytest.fail("ray start failed:\n" + log.read_text())
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()  # ray start --block drains the node and stops its processes
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            pass
        try:  # whatever is left of the cluster
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow  # processes (and a Ray cluster): python -m pytest -m slow
def test_ray_runs_jobs_as_tasks_on_a_cluster(tmp_path, sequential, ray_cluster):
    ds, probes = sweep(tmp_path, PROBE, "hydra/launcher=ray",
                       f"hydra.launcher.address={ray_cluster}")
    assert_same_numbers(ds, sequential)
    assert len({p["pid"] for p in probes} | {os.getpid()}) == 3 and overlap(probes)
    assert [p["PJRT_NPROC"] for p in probes] == ["1", "1"]  # remote.num_cpus


def test_launchers_refuse_to_start_jobs_after_jax_has_started():
    import jax

    from hydra_plugins.sim_launchers import refuse_if_jax_started

    jax.devices()
    with pytest.raises(RuntimeError, match="JAX was initialised in the launching process"):
        refuse_if_jax_started()
