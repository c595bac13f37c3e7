"""Locks between processes that share a results folder: a claim on a run key, so that two processes
never train the same settings at once, and a hold on a run folder, so that no two ever write it.

Both live in <out>/runs/.claims/ as operating-system locks (filelock), which end with their process in
any way; readers take none.
"""
import contextlib
import os
import socket
import time
from pathlib import Path

import filelock

from errors import UserError


@contextlib.contextmanager
def claim(out, key, say=print):
    """Hold the claim on training the run with this key in out; wait while another process holds it."""
    def busy(holder):
        say(f"waiting: {holder} is training a run with these settings; it will be reused when done", flush=True)
    with _locked(Path(out) / "runs" / ".claims" / key, busy):
        yield


@contextlib.contextmanager
def hold(run_dir, wait=False, check=None, say=print):
    """Hold run_dir against every other writer while this process writes it. Where another process
    holds it, stop with a UserError naming that process, or with wait (--once) wait for it to end.
    check(run_dir), where given, runs once it is held (a resume checks that the run is still unfinished:
    it may have finished while this process started). A process may hold a folder it already holds (a
    --once resuming the run it waited for)."""
    run_dir = Path(run_dir).resolve()

    def busy(holder):
        if not wait:
            raise UserError(f"{run_dir}: {holder} is writing this run; wait for it to end, or stop it "
                            f"first (Ctrl-C where it runs, or kill that process), then run this again")
        say(f"waiting: {holder} is writing {run_dir}; it will be resumed or reused when done", flush=True)
    with _locked(run_dir.parent / ".claims" / f"run-{run_dir.name}", busy):
        if check:
            check(run_dir)
        yield


@contextlib.contextmanager
def _locked(base, busy):
    """Hold the lock file <base>.lock; where another process holds it, call busy(who) first, which
    raises or returns to wait. <base>.holder says who holds it, for the next process's message.

    The lock is the operating system's (flock on Linux and macOS, LockFileEx on Windows, through
    filelock), so it ends with its process in any way: a killed job never leaves a stale claim. One
    lock object per path (is_singleton) makes a second hold by the same process a nested one.
    """
    base.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(f"{base}.lock", is_singleton=True)
    nested = lock.is_locked
    try:
        lock.acquire(blocking=False)
    except filelock.Timeout:
        busy(_holder(base))
        lock.acquire()
    try:
        if not nested:
            Path(f"{base}.holder").write_text(
                f"process {os.getpid()} on {host()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        yield
    finally:
        lock.release()


def _holder(base):
    """Who holds the lock <base>.lock, as its holder wrote it."""
    try:
        return Path(f"{base}.holder").read_text().strip() or "another process"
    except OSError:  # not written yet: the holder has only just started
        return "another process"



def host():
    """This machine's short name, as run folders and lock holders name it."""
    return socket.gethostname().split(".")[0][:16]
