"""Sweep every activation in the registry over train.py's default configuration; see sweep.py."""
import sweep
from registry import ACTIVATIONS

if __name__ == "__main__":
    sweep.cli("activation", list(ACTIVATIONS), __doc__.split("\n")[0])
