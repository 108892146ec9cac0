"""Compiling a network's CPU kernels at load, in two processes when Numba's on-disk cache is cold.

``compile_steps`` compiles each kernel a network's steps call (or loads it from Numba's cache)
in this process, first to last. Numba compiles one function at a time per process (a global
lock), so a cold load of GoogLeNet spends some 50 s on one core. When compiling is still going
after HELPER_AFTER_SECONDS (a warm cache loads everything in less), a helper process starts that
compiles the same kernels last to first into the same on-disk cache: each one that it finishes
before this process gets to it is then loaded from the cache instead of compiled. The two meet
in the middle, and this process stops the helper when it is done. The helper only ever adds
entries to the cache; the kernels this process runs are the ones it compiled or loaded itself.

No helper where fewer than 2 cores are available, or with the environment variable
``DYNBATCH_COMPILE_HELPER=0``.
"""
from __future__ import annotations

import functools
import importlib
import os
import pickle
import subprocess
import sys
import threading

from .kernels import chain

#: Seconds of compiling after which the helper starts: a warm load of compare.py's GoogLeNet
#: takes about 0.5 s in all.
HELPER_AFTER_SECONDS = 1.0
#: Set to "0" to compile in this process only.
HELPER_VARIABLE = "DYNBATCH_COMPILE_HELPER"


def compile_jobs(steps) -> list[tuple]:
    """[(compile here, what the helper compiles)] for ``steps`` (``CompiledNetwork.bind``'s, for
    n = 0), each kernel and signature once: a chain's task functions first, then each step's
    kernel. The second item is picklable: ("task", kind) or ("kernel", module, name,
    signature); None for a kernel that is not a Numba dispatcher."""
    jobs, seen = [], set()
    for kind in sorted({kind for step in steps if step.kernel is chain.convolution_chain_cpu
                        for kind in chain.task_kinds(step.args)}):
        jobs.append((functools.partial(chain.task_function, kind), ("task", kind)))
    for step in steps:
        kernel, call = step.kernel, functools.partial(step.kernel, 0, *step.args)
        typeof, python_function = getattr(kernel, "typeof_pyval", None), getattr(kernel, "py_func", None)
        if typeof is None or python_function is None:
            jobs.append((call, None))
            continue
        signature = tuple(typeof(value) for value in (0, *step.args))
        if (kernel, signature) not in seen:
            seen.add((kernel, signature))
            jobs.append((call, ("kernel", python_function.__module__, python_function.__qualname__, signature)))
    return jobs


def compile_steps(steps) -> None:
    """Compile (or load) every kernel of ``steps``, with a helper process if that takes long."""
    jobs = compile_jobs(steps)
    helper = _Helper([description for _, description in reversed(jobs) if description is not None])
    timer = threading.Timer(HELPER_AFTER_SECONDS, helper.start)
    timer.daemon = True
    if helper.allowed():
        timer.start()
    try:
        for compile_here, _ in jobs:
            compile_here()
    finally:
        timer.cancel()
        helper.stop()


class _Helper:
    """The helper process: started at most once, from the timer's thread, and stopped (killed if
    still running) when this process has compiled everything."""

    def __init__(self, jobs):
        self._jobs = jobs
        self._lock = threading.Lock()
        self._stopped = False
        self._process = None

    def allowed(self) -> bool:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return bool(self._jobs) and cores >= 2 and os.environ.get(HELPER_VARIABLE, "1") != "0"

    def start(self):
        with self._lock:
            if self._stopped:
                return
            try:
                process = subprocess.Popen([sys.executable, "-c", HELPER_COMMAND], stdin=subprocess.PIPE,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                           env=dict(os.environ, **{HELPER_VARIABLE: "0"}))
            except (OSError, ValueError):  # no usable interpreter: compile alone
                return
            self._process = process  # (stop() kills and reaps it, whatever happens below)
            try:
                # This process's import path first, so that the helper imports the same dynbatch
                # and Numba (a source checkout, say), then the jobs.
                process.stdin.write(pickle.dumps(list(sys.path)) + pickle.dumps(self._jobs))
                process.stdin.close()
            except OSError:  # it exited at once (it could not import dynbatch, say)
                process.kill()

    def stop(self):
        with self._lock:
            self._stopped = True
            if self._process is not None:
                self._process.kill()
                self._process.wait()


#: The helper process's program: the loading process's import path, read from standard input,
#: then ``helper_main``.
HELPER_COMMAND = ("import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); "
                  "from dynbatch.compile_helper import helper_main; helper_main()")


def helper_main():
    """The helper process: compile the pickled jobs on standard input, in order, into Numba's
    on-disk cache. A job that fails is left to the loading process, which reports its error."""
    for job in pickle.load(sys.stdin.buffer):
        try:
            if job[0] == "task":
                chain.task_function(job[1])
            else:
                _, module, name, signature = job
                getattr(importlib.import_module(module), name).compile(signature)
        except Exception:  # noqa: BLE001 (the loading process compiles it again and raises)
            pass
