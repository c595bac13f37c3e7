"""Sweep every optimizer in the registry, around its default learning rate, tuned on the validation
set; see sweep.py."""
import errors

if __name__ == "__main__":
    errors.handle_interrupts()  # before torch loads: Ctrl-C while importing ends with one line too

import sweep  # noqa: E402
from registry import OPTIMIZERS  # noqa: E402

if __name__ == "__main__":
    sweep.cli("optimizer", list(OPTIMIZERS), __doc__, tune=sweep.TUNE)
