"""Child processes that never outlive narro: every service narro starts runs under a guard.

A plain child is re-parented to init when its parent is killed with SIGKILL, and servers such
as `prefect server start` start children of their own, which a parent-death signal on the
direct child would not reach. So each service runs as `python -m narro.procs -- CMD...`:

- the guard starts CMD in a process group of its own;
- it asks the kernel for SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG), and also
  polls its parent id, in case the parent died before the request took effect;
- on SIGTERM, SIGINT or its parent's death it signals the whole group, waits a grace period,
  then SIGKILLs the group (some servers ignore the first SIGTERM), and exits.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1
GRACE_S = 8.0
"""How long a service may take to stop after SIGTERM before its group is killed."""
POLL_S = 0.5


def _die_with_parent(sig: int) -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except OSError:  # not Linux: the parent-id poll still catches it, a little later
        pass


def inherited_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment with `extra` on top, for a child service."""
    return {**os.environ, **extra}


def spawn(command: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None,
          stop_signal: int = signal.SIGTERM, cwd: Path | None = None) -> subprocess.Popen:
    """Start `command` under a guard that stops it (and all its children) when we die.

    Output goes to `log`. `stop_signal` is what the service is sent first (e.g. SIGINT for a
    Prefect worker, which ignores one SIGTERM). Stop it with `stop(process)`.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    guard = [sys.executable, "-m", "narro.procs", "--signal", str(int(stop_signal)), "--", *command]
    with log.open("ab") as output:
        return subprocess.Popen(guard, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(env) if env is not None else None, cwd=cwd,
                                preexec_fn=lambda: _die_with_parent(signal.SIGTERM))


def stop(process: subprocess.Popen, timeout_s: float = GRACE_S + 5) -> int | None:
    """Ask a guarded service to stop and wait for it; returns its exit code (None if it would not die)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    return process.returncode


def stop_pid(pid: int, timeout_s: float = GRACE_S + 5) -> bool:
    """Stop a guard we did not start ourselves (from a state file); True when it is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return not alive(pid)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie still answers kill(0); it is not alive for our purposes
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _guard(stop_signal: int, command: list[str]) -> int:
    parent = os.getppid()
    _die_with_parent(signal.SIGTERM)
    child = subprocess.Popen(command, start_new_session=True)
    stopping = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    while child.poll() is None and not stopping and os.getppid() == parent:
        time.sleep(POLL_S)
    if child.poll() is not None:
        return child.returncode
    _signal_group(child.pid, stop_signal)
    deadline = time.monotonic() + GRACE_S
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal_group(child.pid, signal.SIGKILL)  # also whatever the service left running in its group
    child.wait()
    return 0


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def main(argv: list[str]) -> int:
    stop_signal: int = signal.SIGTERM
    if argv[:1] == ["--signal"]:
        stop_signal, argv = int(argv[1]), argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m narro.procs [--signal N] -- COMMAND...", file=sys.stderr)
        return 2
    return _guard(stop_signal, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
