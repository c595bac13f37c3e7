"""Sweep every optimizer in the registry, each at the learning rate its search picks on the validation
set, around the optimizer's own default; see sweep.py."""
import errors

if __name__ == "__main__":
    errors.handle_interrupts()  # before torch loads: Ctrl-C while importing ends with one line too

import sweep  # noqa: E402
from registry import OPTIMIZERS  # noqa: E402

SETTING, VALUES = "optimizer", list(OPTIMIZERS)
DEFAULTS = dict(tune_lr=sweep.TUNE, seeds=sweep.SEEDS)  # the sweep options' own

if __name__ == "__main__":
    sweep.cli(SETTING, VALUES, __doc__, **DEFAULTS)
