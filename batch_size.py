"""Sweep the batch size (16 to 256), the learning rate scaled linearly with it, then searched per batch
size on the validation set; --lr-scaling none --tune-lr 1 shows one fixed learning rate instead. See
sweep.py; for the steps each batch size needs to reach an accuracy, see batch_scaling.py."""
import errors

if __name__ == "__main__":
    errors.handle_interrupts()  # before torch loads: Ctrl-C while importing ends with one line too

import sweep  # noqa: E402

SETTING, VALUES = "batch_size", [16, 32, 64, 128, 256]
DEFAULTS = dict(lr_scaling="linear", tune_lr=sweep.TUNE, seeds=sweep.SEEDS)  # the sweep options' own

if __name__ == "__main__":
    sweep.cli(SETTING, VALUES, __doc__, **DEFAULTS)
