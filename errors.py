"""Errors a user can fix, interrupts, and the wrapper that prints both without a traceback."""
import os
import signal
import sys

INTERRUPTED = 130  # the shell's code for a program ended by Ctrl-C


class UserError(Exception):
    """Bad input (a flag, a data file, a run folder): the message names the problem and the fix."""


def handle_interrupts():
    """From now on, Ctrl-C or SIGTERM ends the program with one line and exit code 130.

    Scripts call this first thing, before torch is imported: an interrupt while torch loads or the data
    is read would otherwise print a traceback (SIGINT) or end silently (SIGTERM). Code that must finish
    a write before stopping (train.py's epoch records) installs its own handlers on top.
    """
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    sys.excepthook = _excepthook


def _raise_interrupt(signum, frame):
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
