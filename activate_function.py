"""Sweep every activation in the registry, each at the learning rate its search picks on the validation
set; see sweep.py."""
import errors

if __name__ == "__main__":
    errors.handle_interrupts()  # before torch loads: Ctrl-C while importing ends with one line too

import sweep  # noqa: E402
from registry import ACTIVATIONS  # noqa: E402

SETTING, VALUES = "activation", list(ACTIVATIONS)
DEFAULTS = dict(tune_lr=sweep.TUNE, seeds=sweep.SEEDS)  # the sweep options' own

if __name__ == "__main__":
    sweep.cli(SETTING, VALUES, __doc__, **DEFAULTS)
