"""Sweep the batch size (16 to 256), the learning rate scaled linearly with it and tuned on the
validation set; --lr-scaling none --tune-lr 1 shows a fixed learning rate instead. See sweep.py."""
import errors

if __name__ == "__main__":
    errors.handle_interrupts()  # before torch loads: Ctrl-C while importing ends with one line too

import sweep  # noqa: E402

if __name__ == "__main__":
    sweep.cli("batch_size", [16, 32, 64, 128, 256], __doc__, lr_scaling="linear",
              tune=sweep.TUNE)
