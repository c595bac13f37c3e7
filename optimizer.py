"""Sweep every optimizer in the registry, each at its default learning rate; see sweep.py."""
import sweep
from registry import OPTIMIZERS

if __name__ == "__main__":
    sweep.cli("optimizer", list(OPTIMIZERS), __doc__.split("\n")[0])
