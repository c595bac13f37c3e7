"""Errors a user can fix, and interrupts: every script's handling of both lives here.

Three pieces: handle_interrupts() at the top of each script (before torch loads), critical() around a
write that a signal must not cut in half, and run_cli() around main, which prints a UserError or an
interrupt as one line instead of a traceback.
"""
import contextlib
import os
import signal
import sys

INTERRUPTED = 130  # the shell's code for a program ended by Ctrl-C


class UserError(Exception):
    """Bad input (a flag, a data file, a run folder): the message names the problem and the fix."""


def handle_interrupts():
    """From now on, Ctrl-C or SIGTERM ends the program with one line and exit code 130.

    Scripts call this first thing, before torch is imported: an interrupt while torch loads or the data
    is read would otherwise print a traceback (SIGINT) or end silently (SIGTERM). A write that must
    finish before the program stops (train.py's epoch records) runs inside critical().
    """
    catch_signals()
    sys.excepthook = _excepthook


def catch_signals():
    """Turn SIGINT and SIGTERM into KeyboardInterrupt, held back inside critical()."""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


_held = {"holding": False, "pending": False}


def _on_signal(signum, frame):
    if _held["holding"]:
        _held["pending"] = True
    else:
        raise KeyboardInterrupt


@contextlib.contextmanager
def critical():
    """Hold back Ctrl-C and SIGTERM while the block runs (a write that must not stop halfway); an
    interrupt that arrived meanwhile is raised when it ends."""
    _held["holding"] = True
    try:
        yield
    finally:
        _held["holding"] = False
    if _held["pending"]:
        _held["pending"] = False
        raise KeyboardInterrupt


def _excepthook(kind, value, traceback):
    if issubclass(kind, KeyboardInterrupt):
        print("\ninterrupted", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(INTERRUPTED)  # from an excepthook, sys.exit can no longer change the exit code
    sys.__excepthook__(kind, value, traceback)


def run_cli(main, interrupted="interrupted"):
    """Call main(); print a UserError as one `error:` line and exit 2, and an interrupt as one line
    (`interrupted`, the resume advice where there is one) and exit 130, instead of a traceback."""
    try:
        return main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"\n{interrupted}", file=sys.stderr)
        sys.exit(INTERRUPTED)
