"""``python -m sim ARGS`` for the tests, in a child process that starts with the project
already imported.

Each command runs in a process of its own, as from a shell: its own working directory,
environment, standard output and error (captured), exit status, signals and exit handlers.
Only the interpreter's start and the imports are shared: the processes are forked from a
``multiprocessing`` fork server that imported ``sim.cli`` once, before any JAX backend
exists (JAX starts its threads only when a backend is made, so the fork is safe). An
interpreter start with those imports takes 2-3 s on a 2-core CPU, more than many
of the commands the suite runs; ``python -m sim`` itself still runs as a real interpreter
in CI's first command and in ``test_cli``'s help test.

Settings that JAX reads when it is imported (``JAX_*`` variables) cannot differ from the
server's: a test that needs them starts ``sys.executable`` itself.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Mapping

ROOT = Path(__file__).resolve().parents[1]
_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(["sim.cli"])


def environment() -> dict[str, str]:
    """This process's environment with the project importable and Hydra's errors short."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}


def _child(args: list[str], cwd: str, env: Mapping[str, str], out: str, err: str) -> None:
    """The child: as ``python -m sim ARGS`` would start, with Ctrl-C's default handling
    (a shell's background job ignores SIGINT, and a fork server may inherit that)."""
    for fd, path in ((1, out), (2, err)):
        file = os.open(path, os.O_WRONLY)
        os.dup2(file, fd)
        os.close(file)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = ["sim", *args]
    try:
        runpy.run_module("sim", run_name="__main__", alter_sys=True)
    finally:
        atexit._run_exitfuncs()


class Command:
    """A started command, with ``subprocess.Popen``'s ``args``, ``pid``, ``returncode``
    (negative for a signal, as there), ``poll``, ``wait``, ``send_signal`` and
    ``communicate`` (which may be called again)."""

    def __init__(self, args: tuple[str, ...], cwd: Path):
        self.args = [sys.executable, "-m", "sim", *args]
        self._files = tempfile.TemporaryDirectory(prefix="command")
        self._out, self._err = (os.path.join(self._files.name, name) for name in ("out", "err"))
        for path in (self._out, self._err):  # read even if the child fails before it starts
            Path(path).touch()
        self._process = _context.Process(
            target=_child, args=(list(args), str(cwd), environment(), self._out, self._err))
        self._process.start()
        self.pid = self._process.pid
        self._texts: tuple[str, str] | None = None

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Standard output and error, once the command has ended (killed after
        ``timeout`` seconds, raising ``subprocess.TimeoutExpired``)."""
        if self._texts is None:
            try:
                self.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.join()
                raise
            self._texts = tuple(Path(path).read_text() for path in (self._out, self._err))
            self._files.cleanup()
        return self._texts


def start(cwd: Path, *args: str) -> Command:
    """``python -m sim ARGS`` started in ``cwd``."""
    return Command(args, cwd)


def run(cwd: Path, *args: str, timeout: float = 300,
        fresh_interpreter: bool = False) -> subprocess.CompletedProcess:
    """``python -m sim ARGS`` run to its end in ``cwd``: its exit status and output (with
    ``fresh_interpreter``, in a new interpreter that imports everything itself)."""
    if fresh_interpreter:
        return subprocess.run([sys.executable, "-m", "sim", *args], cwd=cwd,
                              env=environment(), capture_output=True, text=True,
                              timeout=timeout)
    command = start(cwd, *args)
    out, err = command.communicate(timeout)
    return subprocess.CompletedProcess(command.args, command.returncode, out, err)
