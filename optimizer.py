"""Sweep every optimizer in the registry, each at the learning rate its search picks on the validation
set, around the optimizer's own default; see sweep.py."""
import errors

if __name__ == "__main__":
    errors.handle_interrupts()  # before torch loads: Ctrl-C while importing ends with one line too

import sweep  # noqa: E402
from registry import OPTIMIZERS  # noqa: E402

if __name__ == "__main__":
    sweep.cli("optimizer", list(OPTIMIZERS), __doc__, tune_lr=sweep.TUNE, seeds=sweep.SEEDS)
