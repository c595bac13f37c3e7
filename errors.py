"""Errors a user can fix, and the wrapper that prints them without a traceback."""
import sys


class UserError(Exception):
    """Bad input (a flag, a data file, a run folder): the message names the problem and the fix."""


def run_cli(main):
    """Call main(); print a UserError as one `error:` line and exit 2 instead of a traceback."""
    try:
        return main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
