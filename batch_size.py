"""Sweep the batch size (16 to 256) over train.py's default configuration; see sweep.py."""
import sweep

if __name__ == "__main__":
    sweep.cli("batch_size", [16, 32, 64, 128, 256], __doc__.split("\n")[0])
