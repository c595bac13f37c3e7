"""Shared test fixtures: small synthetic MNIST-format data sets and a way to run the scripts."""
import gzip
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def idx_file(path, tensor, compress=True):
    """Write a uint8 tensor as an IDX file (gzip-compressed by default)."""
    magic = struct.pack(">HBB", 0, 0x08, tensor.dim())
    raw = magic + struct.pack(f">{tensor.dim()}I", *tensor.shape) + tensor.numpy().tobytes()
    Path(path).write_bytes(gzip.compress(raw) if compress else raw)


def make_digits(n, seed):
    """n learnable 28x28 'digits': a fixed random template per class plus noise, and their labels."""
    templates = torch.rand(10, 28, 28, generator=torch.Generator().manual_seed(1234)) * 255
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    noise = torch.randn(n, 28, 28, generator=g) * 400
    images = (templates[labels] + noise).clamp(0, 255).to(torch.uint8)
    return images, labels.to(torch.uint8)


def make_dataset(folder, n_train=600, n_test=200, compress=True):
    """Write the four MNIST files of a small synthetic data set into folder; returns folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for split, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        images, labels = make_digits(n, seed)
        idx_file(folder / f"{split}-images-idx3-ubyte{suffix}", images, compress)
        idx_file(folder / f"{split}-labels-idx1-ubyte{suffix}", labels, compress)
    return folder


@pytest.fixture
def tiny_data(tmp_path):
    """A folder with a small synthetic MNIST-format data set (600 train, 200 test images)."""
    return make_dataset(tmp_path / "data")


# Flags that make a training run on tiny_data take about a second.
TINY = ["--no-verify", "--val-split", "100", "--hidden", "32", "--epochs", "2", "--batch-size", "50",
        "--quiet", "--device", "cpu"]
# The same for sweeps, which run every train.py quietly and offer no --quiet of their own.
TINY_SWEEP = [flag for flag in TINY if flag != "--quiet"]
# The metrics that measure the wall clock, which differ between any two runs of the same settings.
TIMING = ("epoch_seconds", "elapsed_seconds", "eval_seconds")


def without_timing(metrics):
    """Metrics rows (metrics.jsonl) without the wall-clock fields: what two runs of the same settings share."""
    return [{k: v for k, v in m.items() if k not in TIMING} for m in metrics]


def run_script(script, *args, timeout=300, **kwargs):
    """Run one of the project's scripts as a user would; returns the CompletedProcess. Only a test marked
    slow may (directly or through its fixtures): the fast tier starts no script."""
    test = _current.get("test")
    if test is not None and not test.get_closest_marker("slow"):
        pytest.fail(f"{test.nodeid} starts {script}: mark it @pytest.mark.slow where it is defined")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=kwargs.pop("cwd", ROOT), env=env, **kwargs)


_current = {}  # the test being set up or run, for run_script's check


def pytest_runtest_setup(item):
    """Note the test before its fixtures are set up (a module-scoped fixture trains for its first user)."""
    _current["test"] = item


@pytest.fixture(autouse=True)
def keep_signal_handlers():
    """train.train installs its own SIGINT/SIGTERM handlers; give pytest its own back after each test."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
