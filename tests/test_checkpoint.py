"""Checkpoints: a run resumed from any checkpoint ends with the Dataset of an uninterrupted
run, in process and through ``python -m sim`` killed (SIGKILL) or interrupted (Ctrl-C)."""

import dataclasses
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import xarray as xr

import commands
from commands import run as sim
from sim import checkpoint, experiment
from sim.config import Config
from sim.distill import StudentConfig, TrainConfig
from sim.lanes import LanesConfig
from sim.mix import MixConfig, MixPolicy
from sim.worlds.gaussian import GaussianConfig
from sim.worlds.markov_lm import MarkovLMConfig

COSTS = ("wall_time_s", "peak_memory_bytes")  # per-generation costs: they differ by run
CHAIN = ("world=gaussian", "world.dim=2", "world.n_samples=8", "mix=accumulate_subsample",
         "mix.subsample_size=12", "generations=400", "seeds=3", "progress=false",
         "checkpoint.interval_s=0")


def comparable(ds: xr.Dataset) -> xr.Dataset:
    """A results Dataset without what legitimately differs between two runs of one config:
    when it was made, its wall time, and each generation's wall time and memory peak."""
    ds = ds.copy()
    for name in ("wall_time_s", "created"):
        ds.attrs.pop(name)
    for name in COSTS:
        ds[name] = ds[name].copy(data=np.zeros_like(ds[name].values))
    return ds


GAUSSIAN = Config(world=GaussianConfig(dim=2, n_samples=8),
                  mix=MixConfig(policy=MixPolicy.accumulate_subsample, subsample_size=12),
                  generations=4, seeds=3, progress=False, lanes=LanesConfig(chunk_size=2))
LM = Config(world=MarkovLMConfig(n_samples=32, seq_len=8, vocab_size=8, width=16, layers=1,
                                 heads=2, eval_sequences=8),
            generations=2, seeds=1, progress=False,
            train=TrainConfig(steps=4, batch_size=8),
            student=StudentConfig(width=8, layers=1, heads=1))


@pytest.mark.filterwarnings("ignore:Some donated buffers were not usable")
@pytest.mark.parametrize("cfg,resume_from", [
    pytest.param(GAUSSIAN, None, id="gaussian_in_chunks"),
    pytest.param(LM, [1], id="lm_smaller_student", marks=pytest.mark.slow),
    pytest.param(dataclasses.replace(LM, student=StudentConfig()), [0, 1], id="lm_one_fit",
                 marks=pytest.mark.slow)])
def test_resuming_from_a_checkpoint_gives_the_uninterrupted_dataset(cfg, resume_from, tmp_path):
    """From every checkpoint of a chain in two chunks of lanes (the last one padded); from
    the student's first generation of an LM chain whose student is smaller (its state has
    other shapes than generation 0's); from generations 0 and 1 of an LM chain that
    compiles one fit for every generation (``Chain.shares_fit``)."""
    built = experiment.build(cfg)
    snapshots = []
    full = experiment.run(built, save=lambda make: snapshots.append(make()))
    chunks = -(-cfg.seeds // (cfg.lanes.chunk_size or cfg.seeds))
    assert [(s.chunk, s.generation) for s in snapshots] == [
        (c, g) for c in range(chunks) for g in range(cfg.generations + 1)]
    for snapshot in [snapshots[i] for i in resume_from or range(len(snapshots))]:
        checkpoint.save(tmp_path, "config", snapshot)  # through the file
        config, loaded = checkpoint.load(tmp_path)
        assert config == "config"
        resumed = experiment.run(built, resume=loaded)
        xr.testing.assert_identical(comparable(resumed), comparable(full))
        # the generations run before the checkpoint keep their recorded costs
        g = snapshot.generation + 1 if snapshot.chunk == chunks - 1 else 0
        np.testing.assert_array_equal(resumed.wall_time_s[:g], snapshot.wall_time_s[:g])


def test_a_checkpoint_with_other_metrics_is_refused_before_compute():
    """A checkpoint made by another version of sim, which records other metrics, is
    refused in one line, not met with a KeyError when the results are written."""
    built = experiment.build(dataclasses.replace(GAUSSIAN, generations=1))
    snapshots = []
    experiment.run(built, save=lambda make: snapshots.append(make()))
    first, last = snapshots[0], snapshots[-1]  # in the first chunk, and after it
    assert set(last.history) == set(first.history) == set(built.chain.metric_info)
    older = first._replace(history={("old_name" if k == "w2_to_truth" else k): v
                                    for k, v in first.history.items()})
    with pytest.raises(checkpoint.ConfigError, match=r"^the checkpoint's metrics are not this "
                       r"program's \(it lacks w2_to_truth; it has old_name besides: made by"):
        experiment.run(built, resume=older)
    fewer = last._replace(done={k: v for k, v in last.done.items() if k != "w2_to_truth"})
    with pytest.raises(checkpoint.ConfigError, match=r"\(it lacks w2_to_truth: made by"):
        experiment.run(built, resume=fewer)


def test_a_checkpoint_restores_keys_and_weak_types_and_refuses_other_shapes():
    state = {"key": jax.random.split(jax.random.key(3), 4), "x": np.arange(6.0).reshape(2, 3)}
    host = checkpoint.to_host(state)
    restored = checkpoint.from_host(host, state)
    assert restored["key"].dtype == state["key"].dtype
    np.testing.assert_array_equal(jax.random.key_data(restored["key"]),
                                  jax.random.key_data(state["key"]))
    weak = {"x": jax.numpy.asarray(2.0)}  # a Python scalar's weak type comes back
    assert weak["x"].weak_type
    restored = checkpoint.from_host(checkpoint.to_host(weak), jax.eval_shape(lambda: weak))
    assert restored["x"].weak_type and restored["x"] == 2.0
    with pytest.raises(checkpoint.ConfigError, match="does not fit this program"):
        checkpoint.from_host(host, {**state, "x": np.zeros((3, 2))})


def _snapshot() -> checkpoint.Snapshot:
    return checkpoint.Snapshot(2, 0, 1, checkpoint.to_host({"w": np.ones(3)}),
                               {"m": np.zeros((2, 2))}, {}, np.ones(3), np.ones(3, np.int64))


def test_a_full_disk_leaves_the_last_checkpoint_and_the_run_goes_on(tmp_path, monkeypatch,
                                                                    capsys):
    checkpoint.save(tmp_path, "first", _snapshot())

    def full(file, **arrays):
        file.write(b"part of a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    checkpoint.Writer(tmp_path, "second", interval_s=0)(_snapshot)
    assert "warning: no checkpoint written ([Errno 28] No space left on device)" in \
        capsys.readouterr().err
    assert [p.name for p in (tmp_path / checkpoint.DIRECTORY).iterdir()] == [checkpoint.FILE]
    assert checkpoint.load(tmp_path)[0] == "first"


CTRL_C_MID_SAVE = """
import signal, sys
import numpy as np
from sim import checkpoint
signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a shell (not inherited)
savez = np.savez

def interrupted(file, **arrays):  # Ctrl-C halfway through the zip
    file.write(b"part of a checkpoint")
    signal.raise_signal(signal.SIGINT)
    file.seek(0)
    file.truncate()
    savez(file, **arrays)

np.savez = interrupted
snapshot = checkpoint.load(sys.argv[1])[1]  # the test's, saved whole
try:
    checkpoint.save(sys.argv[2], "config", snapshot)
except KeyboardInterrupt:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    print("interrupted")
"""


def test_ctrl_c_during_a_save_arrives_after_a_whole_checkpoint(tmp_path):
    # in a process of its own: signal handlers live in the main thread, and pytest-xdist
    # runs tests in another
    checkpoint.save(tmp_path / "whole", "config", _snapshot())
    out = subprocess.run([sys.executable, "-c", CTRL_C_MID_SAVE, str(tmp_path / "whole"),
                          str(tmp_path / "interrupted")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "interrupted\n"
    assert checkpoint.load(tmp_path / "interrupted")[0] == "config"


def test_an_unreadable_checkpoint_is_refused_in_one_line(tmp_path):
    (tmp_path / checkpoint.DIRECTORY).mkdir()
    (tmp_path / checkpoint.DIRECTORY / checkpoint.FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.ConfigError, match="state.npz cannot be read") as error:
        checkpoint.load(tmp_path)
    assert "\n" not in str(error.value)


def test_a_negative_interval_is_refused():
    with pytest.raises(checkpoint.ConfigError, match=r"checkpoint.interval_s=-1.0 is not allowed"):
        experiment.build(dataclasses.replace(
            GAUSSIAN, checkpoint=checkpoint.CheckpointConfig(interval_s=-1.0)))


def test_differing_keys_ignore_settings_that_do_not_change_numbers():
    saved = ("seeds: 4\nprogress: true\ntrain:\n  lr: 0.01\n  steps: 10\n"
             "checkpoint:\n  keep: false\n")
    now = ("seeds: 4\nprogress: false\ntrain:\n  lr: 0.02\n  steps: 10\n"
           "checkpoint:\n  keep: true\n")
    assert checkpoint.differing_keys(saved, now) == {"train.lr": (0.01, 0.02)}
    assert checkpoint.differing_keys(saved, saved + "generations: 3\n") == {
        "generations": ("<unset>", 3)}


def test_a_config_mismatch_names_another_world_once():
    """Resuming with another world: its own settings are named as one group, not key by
    key (the shared ones too), beside the other keys that differ."""
    saved = "seeds: 4\nworld:\n  n_samples: 100\n  dim: 2\n"
    now = "seeds: 8\nworld:\n  n_samples: 512\n  seq_len: 32\n  width: 64\n"
    with pytest.raises(checkpoint.ConfigError) as error:
        checkpoint.check_config(saved, now, "the run in d")
    assert str(error.value) == (
        "seeds=8, world.* (another world) are not allowed: the run in d was made with "
        "seeds=4, world.* (another world); resume with those, or choose a new "
        "hydra.run.dir")
    with pytest.raises(checkpoint.ConfigError, match=r"^seeds=8 is not allowed: the run in d "
                       r"was made with seeds=4;"):
        checkpoint.check_config(saved, saved.replace("seeds: 4", "seeds: 8"), "the run in d")


# ---- python -m sim, interrupted and resumed ----------------------------------------------

def _checkpointed_generation(run_dir: Path) -> int:
    try:
        return checkpoint.load(run_dir)[1].generation
    except (TypeError, OSError, ValueError, KeyError):  # none yet
        return -1


def interrupt(cwd: Path, run_dir: Path, sig: int, *args: str) -> subprocess.CompletedProcess:
    """Start ``python -m sim ARGS`` (with ``hydra.run.dir=run_dir`` unless a multirun), send
    ``sig`` once ``run_dir`` has a checkpoint of generation >= 1 (the command starts with
    Ctrl-C's default handling, as from an interactive shell)."""
    where = () if "-m" in args else (f"hydra.run.dir={run_dir}",)
    process = commands.start(cwd, *args, *where)
    deadline = time.monotonic() + 120
    while _checkpointed_generation(run_dir) < 1 and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(sig)
    out, err = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> xr.Dataset:
    cwd = tmp_path_factory.mktemp("uninterrupted")
    out = sim(cwd, *CHAIN, "hydra.run.dir=run")
    assert out.returncode == 0, out.stderr
    assert not (cwd / "run" / checkpoint.DIRECTORY).exists()  # removed once results.nc is there
    return xr.load_dataset(cwd / "run" / "results.nc")


@pytest.mark.parametrize("sig", [  # a kill: 20 s of processes, with the slow tests
    pytest.param(signal.SIGKILL, id="sigkill", marks=pytest.mark.slow),
    pytest.param(signal.SIGINT, id="ctrl_c")])
def test_an_interrupted_run_resumes_to_the_uninterrupted_dataset(tmp_path, uninterrupted, sig):
    run_dir = tmp_path / "run"
    out = interrupt(tmp_path, run_dir, sig, *CHAIN)
    assert out.returncode != 0, "the run ended before it was interrupted"
    assert not (run_dir / "results.nc").exists()
    assert not [p for p in run_dir.rglob("*") if "results" in p.name]  # no partial file
    saved = checkpoint.load(run_dir)[1]
    stopped = saved.generation
    assert 1 <= stopped < 400
    if sig == signal.SIGINT:  # a clean exit, one line saying how to resume
        assert out.returncode == 130
        _assert_resume_line(out.stderr, run_dir)
    stale = run_dir / ".results.nc.99999.tmp"  # as a process killed while writing leaves it
    stale.write_bytes(b"half a file")
    resumed = sim(tmp_path, *CHAIN, f"hydra.run.dir={run_dir}")
    assert resumed.returncode == 0, resumed.stderr
    ds = xr.load_dataset(run_dir / "results.nc")
    xr.testing.assert_identical(comparable(ds), comparable(uninterrupted))
    # it went on from the checkpoint: the generations before it kept their recorded costs
    np.testing.assert_array_equal(ds.wall_time_s[:stopped + 1], saved.wall_time_s[:stopped + 1])
    assert not (run_dir / checkpoint.DIRECTORY).exists() and not stale.exists()


def _assert_resume_line(stderr: str, run_dir: Path) -> None:
    [line] = stderr.strip().splitlines()
    assert line.startswith("interrupted; resume with: python -m sim world=gaussian")
    assert line.endswith(f"hydra.run.dir={run_dir}")


def test_sigterm_stops_a_run_as_ctrl_c_does(tmp_path):
    """What a scheduler sends before it stops a job: the checkpoint stays, one line says how
    to resume, exit 143 (the resume itself is Ctrl-C's test above)."""
    run_dir = tmp_path / "run"
    out = interrupt(tmp_path, run_dir, signal.SIGTERM, *CHAIN)
    assert out.returncode == 128 + signal.SIGTERM
    _assert_resume_line(out.stderr, run_dir)
    assert checkpoint.load(run_dir)[1].generation >= 1
    assert not (run_dir / "results.nc").exists()


def test_a_resume_with_another_config_is_refused_in_one_line(tmp_path):
    run_dir = tmp_path / "run"
    args = ("world=gaussian", "generations=3", "checkpoint.interval_s=0", "checkpoint.keep=true",
            f"hydra.run.dir={run_dir}")
    assert sim(tmp_path, *args, "seeds=3").returncode == 0
    assert (run_dir / checkpoint.DIRECTORY / checkpoint.FILE).exists()  # kept
    (run_dir / "results.nc").unlink()  # as if it had stopped after its last generation
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    out = sim(tmp_path, *args, "seeds=4", "world.n_samples=9", "progress=true")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"error: seeds=4, world.n_samples=9 are not allowed: the checkpoint in {run_dir} was "
        "made with seeds=3, world.n_samples=100; resume with those, or choose a new hydra.run.dir")
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before  # the checkpoint and Hydra's record of the run stay as they were
    out = sim(tmp_path, *args, "seeds=3")  # the same settings resume after the last generation
    assert out.returncode == 0 and (run_dir / "results.nc").exists()


@pytest.mark.slow
def test_a_killed_sweep_reruns_only_what_it_had_left(tmp_path):
    """Job 0 finished, job 1 killed mid-chain: the rerun skips job 0 and resumes job 1."""
    sweep = ("-m", *[a for a in CHAIN if not a.startswith("mix")], "mix=replace,accumulate")
    killed = interrupt(tmp_path, tmp_path / "sweep" / "1", signal.SIGKILL, *sweep,
                       "hydra.sweep.dir=sweep")
    assert killed.returncode == -signal.SIGKILL
    done, resumed = (tmp_path / "sweep" / str(job) / "results.nc" for job in (0, 1))
    assert done.exists() and not resumed.exists()
    created = xr.load_dataset(done).attrs["created"], done.stat().st_mtime_ns
    out = sim(tmp_path, *sweep, "hydra.sweep.dir=sweep")
    assert out.returncode == 0, out.stderr
    assert f"{done.absolute()} is complete: nothing to run" in out.stdout
    assert (xr.load_dataset(done).attrs["created"], done.stat().st_mtime_ns) == created
    assert sim(tmp_path, *sweep, "hydra.sweep.dir=whole").returncode == 0
    for job in (0, 1):
        xr.testing.assert_identical(
            comparable(xr.load_dataset(tmp_path / "sweep" / str(job) / "results.nc")),
            comparable(xr.load_dataset(tmp_path / "whole" / str(job) / "results.nc")))
