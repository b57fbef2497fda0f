"""``hydra/launcher=joblib``: the jobs in parallel worker processes on this machine.

Like Hydra's own joblib launcher (``hydra-joblib-launcher``, whose ``execute_job`` this
follows), each job runs through ``hydra.core.utils.run_job`` in a ``loky`` worker process,
``n_jobs`` at a time. In addition each worker gets ``PJRT_NPROC`` = CPUs // jobs in parallel,
the size of XLA's CPU thread pools, so that the jobs do not oversubscribe the CPUs (joblib
sets ``OMP_NUM_THREADS`` and the BLAS variables the same way), and, with several jobs in
parallel, ``XLA_PYTHON_CLIENT_MEM_FRACTION`` = 0.75 / jobs in parallel, so that jobs sharing a
GPU fit in it. Variables already in the environment, or in ``hydra.job.env_set``, win.
"""

import logging
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from hydra_plugins.sim_launchers import JobsLauncher, cpu_count, environ_defaults, job_env, refuse_if_jax_started

log = logging.getLogger(__name__)


def execute_job(idx: int, overrides: Sequence[str], hydra_context: HydraContext,
                config: DictConfig, task_function: TaskFunction,
                singleton_state: Dict[Any, Any]) -> JobReturn:
    """Run job ``idx`` in a worker process."""
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, task_function=task_function,
                   config=sweep_config, job_dir_key="hydra.sweep.dir",
                   job_subdir_key="hydra.sweep.subdir")


class JoblibLauncher(JobsLauncher):
    def __init__(self, n_jobs: int = -1, timeout: Optional[float] = None, verbose: int = 0,
                 pre_dispatch: str = "2*n_jobs", **parallel: Any) -> None:
        # Other joblib.Parallel options pass through (hydra-joblib-launcher's config, where
        # that is installed too, adds some); the backend is always loky.
        for key in ("backend", "prefer", "require"):
            parallel.pop(key, None)
        self.parallel = dict(n_jobs=n_jobs, timeout=timeout, verbose=verbose,
                             pre_dispatch=pre_dispatch,
                             **{k: v for k, v in parallel.items() if v is not None})

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        from joblib import Parallel, delayed, effective_n_jobs

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)

        n_jobs = effective_n_jobs(self.parallel["n_jobs"])
        parallel = max(1, min(n_jobs, len(job_overrides)))
        env = job_env(cpu_count() // parallel, jobs_per_gpu=parallel)
        log.info(f"joblib: {len(job_overrides)} jobs, {parallel} at a time, each with "
                 + " ".join(f"{k}={v}" for k, v in env.items())
                 + f" unless set; sweep output dir: {sweep_dir}")
        for idx, overrides in enumerate(job_overrides):
            log.info(f"\t#{initial_job_idx + idx} : {' '.join(filter_overrides(overrides))}")
        if n_jobs > 1:  # else joblib runs the jobs one by one in this process
            refuse_if_jax_started()
        state = Singleton.get_state()
        with environ_defaults(env):  # the worker processes inherit it
            runs = Parallel(backend="loky", **self.parallel)(
                delayed(execute_job)(initial_job_idx + idx, overrides, self.hydra_context,
                                     self.config, self.task_function, state)
                for idx, overrides in enumerate(job_overrides))
        assert all(isinstance(run, JobReturn) for run in runs)
        return runs
