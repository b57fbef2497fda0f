"""``sim``'s Hydra launchers: ``hydra/launcher=joblib`` and ``hydra/launcher=ray``.

Both run each job of a multirun in a process of its own, with its share of the CPUs
(``PJRT_NPROC``, the size of XLA's CPU thread pools) and, for jobs that share a GPU, of the
GPU's memory (``XLA_PYTHON_CLIENT_MEM_FRACTION``); a variable already set in the environment,
or set per job with ``hydra.job.env_set``, wins. Both refuse to start jobs from a process in
which JAX has already made a backend: it would hold GPU memory the jobs need, and a forked
JAX is unsafe. The configs are ``conf/hydra/launcher/{joblib,ray}.yaml``.

Hydra imports every module under ``hydra_plugins`` at start-up, so these import neither JAX,
joblib nor Ray at module level, and a missing optional extra costs nothing until it is used.
"""

import os
import sys
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional

from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

# JAX's default preallocation: 75% of each GPU's memory, split between the jobs sharing it.
JAX_DEFAULT_MEM_FRACTION = 0.75


def jax_backends() -> List[str]:
    """The JAX backends this process has made (empty if JAX is not imported or not started)."""
    bridge = sys.modules.get("jax._src.xla_bridge")
    return sorted(getattr(bridge, "_backends", None) or {})


def refuse_if_jax_started() -> None:
    """Raise if JAX made a backend in this (the launching) process."""
    backends = jax_backends()
    if backends:
        raise RuntimeError(
            f"JAX was initialised in the launching process (backends {backends}) before the "
            "jobs started: it would hold GPU memory the jobs need. Start JAX only inside jobs.")


def job_env(threads: int, jobs_per_gpu: float) -> Dict[str, str]:
    """The environment of a job with ``threads`` CPU threads and 1/``jobs_per_gpu`` of a GPU."""
    env = {"PJRT_NPROC": str(max(1, int(threads)))}
    if jobs_per_gpu > 1:
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{JAX_DEFAULT_MEM_FRACTION / jobs_per_gpu:.3g}"
    return env


@contextmanager
def environ_defaults(env: Dict[str, str]) -> Iterator[None]:
    """Set the variables of ``env`` that the environment lacks, and restore it afterwards."""
    added = {k: v for k, v in env.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask: taskset, SLURM, containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class JobsLauncher(Launcher):
    """What both launchers keep from ``setup``: the config, task and Hydra context."""

    config: Optional[DictConfig] = None
    task_function: Optional[TaskFunction] = None
    hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context
