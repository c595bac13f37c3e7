"""Errors a user can fix, and interrupts: every script's handling of both lives here.

Three pieces: handle_interrupts() at the top of each script (before torch loads), critical() around a
write that a signal must not cut in half, and run_cli() around main, which prints a UserError, a failed
write or read (an OSError: a full disk, a quota, an I/O error) or an interrupt as one line instead of a
traceback.
"""
import contextlib
import errno
import os
import signal
import sys

INTERRUPTED = 130  # the shell's code for a program ended by Ctrl-C


class UserError(Exception):
    """Bad input (a flag, a data file, a run folder): the message names the problem and the fix."""
    code = 2  # the exit code


class WriteFailed(UserError):
    """A write that failed (a full disk, a quota, an I/O error): the message names the file, the cause
    and what to do."""
    code = 1


# errno has no EDQUOT on Windows, whose full quota is a full disk (ENOSPC).
FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def describe(error):
    """One line for an OSError: the file and the cause, and for a full disk or quota what to do."""
    text = f"{error.filename}: {error.strerror or error}" if error.filename else str(error)
    if error.errno in FULL:
        text += " (free some space there)"
    return text


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
    if _interrupted(value):
        print("\ninterrupted", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(INTERRUPTED)  # from an excepthook, sys.exit can no longer change the exit code
    sys.__excepthook__(kind, value, traceback)


def _interrupted(error):
    """Whether error is an interrupt, or an error an interrupt caused: a C extension interrupted while it
    initialises (matplotlib's ft2font) turns the KeyboardInterrupt into an ImportError."""
    while error is not None:
        if isinstance(error, KeyboardInterrupt):
            return True
        error = error.__cause__ or error.__context__
    return False


def run_cli(main, interrupted="interrupted"):
    """Call main(); print a UserError as one `error:` line and exit with its code (2, a failed write 1),
    an OSError as one `error:` line and exit 1, and an interrupt as one line (`interrupted`, the resume
    advice where there is one) and exit 130, instead of a traceback."""
    try:
        return main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.code)
    except OSError as e:
        print(f"error: {describe(e)}", file=sys.stderr)
        sys.exit(WriteFailed.code)
    except KeyboardInterrupt:
        print(f"\n{interrupted}", file=sys.stderr)
        sys.exit(INTERRUPTED)
