"""Sweep every activation in the registry, each at the learning rate its search picks on the validation
set; see sweep.py."""
import errors

if __name__ == "__main__":
    errors.handle_interrupts()  # before torch loads: Ctrl-C while importing ends with one line too

import sweep  # noqa: E402
from registry import ACTIVATIONS  # noqa: E402

if __name__ == "__main__":
    sweep.cli("activation", list(ACTIVATIONS), __doc__, tune_lr=sweep.TUNE, seeds=sweep.SEEDS)
