"""Sweep every loss in the registry over train.py's default configuration; see sweep.py."""
import sweep
from registry import LOSSES

if __name__ == "__main__":
    sweep.cli("loss", list(LOSSES), __doc__.split("\n")[0])
