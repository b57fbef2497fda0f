"""Run directories: an unwritable one is refused in one line; runs at the same time keep to
their own; a sweep still running shows only its finished jobs."""

import os
import signal
import time
from pathlib import Path

import pytest
import xarray as xr

from analysis import load_sweep
from analysis.load import find_runs
from commands import run as sim
from commands import start
from sim import rundir

TINY = ("world=gaussian", "world.dim=2", "world.n_samples=8", "seeds=2", "progress=false")


@pytest.mark.parametrize("key", ["hydra.run.dir", "hydra.sweep.dir"])
def test_an_unwritable_output_directory_is_refused_in_one_line(tmp_path, key):
    (tmp_path / "a_file").write_text("not a directory")
    multirun = ("-m",) if key == "hydra.sweep.dir" else ()
    out = sim(tmp_path, *multirun, *TINY, f"{key}=a_file/run")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"error: {key}='a_file/run' is not allowed: a directory this user can create and "
        f"write in ({tmp_path / 'a_file'} is not a directory)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in a read-only directory")
def test_a_read_only_parent_is_refused(tmp_path):
    (tmp_path / "locked").mkdir(mode=0o500)
    out = sim(tmp_path, *TINY, "hydra.run.dir=locked/run")
    assert out.returncode == 2 and "Permission denied" in out.stderr
    assert "Traceback" not in out.stderr


def test_unwritable_says_why():
    assert rundir.unwritable("/proc/no/such/run") is not None
    assert rundir.unwritable(Path.cwd() / "runs" / "new") is None


def test_a_run_directory_in_use_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    rundir.claim(run_dir, "")  # another process's run, still going
    try:
        out = sim(tmp_path, *TINY, f"hydra.run.dir={run_dir}")
    finally:
        rundir.release(run_dir)
    assert out.returncode == 2
    assert out.stderr.strip() == (f"error: hydra.run.dir={str(run_dir)!r} is not allowed: "
                                  f"another process (pid {os.getpid()}) is running in it")
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # Hydra wrote nothing


def test_a_sweep_rerun_with_another_config_leaves_the_finished_jobs_as_they_were(tmp_path):
    """A rerun into a finished sweep's directory with other settings is refused by its first
    job, before anything is written: the jobs' results, Hydra's record of them
    (``.hydra/config.yaml``, ``overrides.yaml``, ``hydra.yaml``) and the sweep's
    ``multirun.yaml`` stay those of the sweep."""
    sweep = ("-m", *TINY, "generations=1", "mix=replace,accumulate", "hydra.sweep.dir=sweep")
    assert sim(tmp_path, *sweep).returncode == 0
    job = tmp_path / "sweep" / "0"
    assert sorted(p.name for p in (job / ".hydra").iterdir()) == [
        "config.yaml", "hydra.yaml", "overrides.yaml"]
    assert "generations: 1" in (job / ".hydra" / "config.yaml").read_text()
    files = lambda: {p: p.read_bytes() for p in job.parent.rglob("*")  # noqa: E731
                     if p.is_file() and p.name != ".lock"}
    before = files()
    out = sim(tmp_path, *[a.replace("generations=1", "generations=2") for a in sweep])
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: generations=2 is not allowed: the finished "
                                         f"run in {job.absolute()} was made with generations=1")
    assert files() == before


def test_runs_at_the_same_time_keep_to_their_own_directories(tmp_path):
    runs = [start(tmp_path, *TINY, f"generations={g}") for g in (2, 3)]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.communicate()[1]
    paths = find_runs(tmp_path / "runs").results
    assert len(paths) == 2
    sizes = sorted(xr.load_dataset(p).sizes["generation"] for p in paths)
    assert sizes == [3, 4]


def test_load_sweep_on_a_running_sweep_sees_only_finished_jobs(tmp_path):
    sweep = start(tmp_path, "-m", *TINY, "generations=2,5000", "checkpoint.interval_s=0",
                  "hydra.sweep.dir=sweep")
    running = tmp_path / "sweep" / "1"
    deadline = time.monotonic() + 120
    try:  # job 0 has finished and job 1 has checkpointed
        while not (running / "checkpoint" / "state.npz").exists():
            assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()[1]
            time.sleep(0.01)
        ds = load_sweep(tmp_path / "sweep")
        assert ds.sizes["generation"] == 3
        assert find_runs(tmp_path / "sweep").pending == [running]
    finally:
        sweep.send_signal(signal.SIGKILL)
        sweep.wait()
