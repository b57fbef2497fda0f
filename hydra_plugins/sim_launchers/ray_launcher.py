"""``hydra/launcher=ray``: each job a Ray task, on a Ray cluster or a local Ray instance.

``address: null`` starts a Ray instance on this machine (``ray.init()``); ``address: auto``
joins the cluster this machine belongs to (``ray start``); ``address: HOST:PORT`` (or
``ray://HOST:10001``, Ray Client) joins another. Each job is a ``ray.remote`` task with the
``remote`` options (``num_cpus``, ``num_gpus``, ``max_calls``, ``resources``, ...), runs
through ``hydra.core.utils.run_job`` as Hydra's own launchers do, and gets ``PJRT_NPROC`` =
``num_cpus`` (XLA's CPU threads) and, with ``num_gpus`` < 1, ``XLA_PYTHON_CLIENT_MEM_FRACTION``
= 0.75 x ``num_gpus`` (its share of a GPU), unless the environment or ``hydra.job.env_set``
sets them. ``max_calls: 1`` gives every job a fresh worker process, so JAX starts with the
job's settings and frees its memory when the job ends.

The job works in the launching process's working directory where that exists on the node
(a shared file system), and writes to the sweep directory as an absolute path. The nodes
need ``sim`` installed, or ``init.runtime_env`` to ship it. This plugin replaces
``hydra-ray-launcher``, whose pin ``cloudpickle<3`` conflicts with ``joblib>=1.6``.
"""

import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_plugins.sim_launchers import JobsLauncher, job_env, refuse_if_jax_started

log = logging.getLogger(__name__)


def execute_job(hydra_context: HydraContext, sweep_config: DictConfig,
                task_function: TaskFunction, singleton_state: Dict[Any, Any], cwd: str,
                env: Dict[str, str]) -> Any:
    """Run one job in a Ray worker; a ``sys.exit`` of the job comes back as its exit code."""
    for key, value in env.items():
        os.environ.setdefault(key, value)
    if os.path.isdir(cwd):
        os.chdir(cwd)
    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(sweep_config)
    try:
        return run_job(hydra_context=hydra_context, task_function=task_function,
                       config=sweep_config, job_dir_key="hydra.sweep.dir",
                       job_subdir_key="hydra.sweep.subdir")
    except SystemExit as exit:
        return exit


class RayLauncher(JobsLauncher):
    def __init__(self, address: Optional[str] = None, init: Optional[DictConfig] = None,
                 remote: Optional[DictConfig] = None) -> None:
        self.address = address
        self.init = OmegaConf.to_container(init, resolve=True) if init else {}
        self.remote = OmegaConf.to_container(remote, resolve=True) if remote else {}

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        try:
            import ray
        except ImportError as error:
            raise ImportError("hydra/launcher=ray needs Ray: pip install -e \".[cluster]\"") \
                from error
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        refuse_if_jax_started()
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if not ray.is_initialized():
            log.info(f"ray.init(address={self.address!r}, **{self.init})")
            ray.init(address=self.address, **self.init)
        remote = {"num_cpus": 1, **self.remote}
        num_gpus = remote.get("num_gpus") or 0
        env = job_env(remote["num_cpus"], jobs_per_gpu=1 / num_gpus if 0 < num_gpus < 1 else 1)
        log.info(f"ray: {len(job_overrides)} jobs as tasks with {remote}, each with "
                 + " ".join(f"{k}={v}" for k, v in env.items())
                 + f" unless set; sweep output dir: {sweep_dir}")
        task = ray.remote(**remote)(execute_job)
        state, cwd, refs = Singleton.get_state(), os.getcwd(), []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
                sweep_config.hydra.job.num = idx
                sweep_config.hydra.sweep.dir = str(sweep_dir)
            refs.append(task.remote(self.hydra_context, sweep_config, self.task_function,
                                    state, cwd, env))
        runs = ray.get(refs)
        for run in runs:
            if isinstance(run, SystemExit):  # as the job would have exited the basic launcher
                raise run
        return runs
