"""The scripts on a platform without POSIX's fcntl and resource modules (issue 22), standing in for
Windows: every Python process these tests start, the sweeps' train.py runs included, finds both
modules missing (a sitecustomize on PYTHONPATH), and train, test, a sweep and the benchmark still run."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT, TINY, TINY_SWEEP, make_dataset

HIDE = '''
import importlib.abc
import sys


class Hidden(importlib.abc.MetaPathFinder):
    """fcntl and resource, POSIX only, cannot be imported: as on Windows."""

    def find_spec(self, name, path=None, target=None):
        if name in ("fcntl", "resource"):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name=name)
        return None


sys.meta_path.insert(0, Hidden())
'''


@pytest.fixture
def windowsish(tmp_path):
    """run(script, *args): the script run with fcntl and resource hidden; returns the CompletedProcess."""
    (tmp_path / "hide").mkdir()
    (tmp_path / "hide" / "sitecustomize.py").write_text(HIDE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "hide"),
                                                                     os.environ.get("PYTHONPATH")]))}

    def run(*args):
        return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                              env=env, timeout=600)
    hidden = run("-c", "import fcntl")
    assert hidden.returncode == 1 and "hidden by the test" in hidden.stderr, hidden.stderr
    return run


@pytest.mark.slow
def test_train_test_and_a_sweep_run_without_fcntl_and_resource(windowsish, tiny_data, tmp_path):
    out = tmp_path / "out"
    trained = windowsish("train.py", *TINY, "--data-dir", tiny_data, "--out", out, "--name", "run")
    assert trained.returncode == 0, trained.stderr
    tested = windowsish("test.py", out / "runs" / "run")
    assert tested.returncode == 0 and "accuracy" in tested.stdout, tested.stderr
    swept = windowsish("sweep.py", "lr", "0.05", "0.1", "--seeds", "1", *TINY_SWEEP, "--data-dir", tiny_data,
                       "--out", out)
    assert swept.returncode == 0, swept.stderr + swept.stdout
    # lr 0.05 is the run trained above, reused; lr 0.1 is trained by a train.py --once of its own.
    assert "2 runs: 1 reused, 1 to train" in swept.stdout and "failed" not in swept.stdout


@pytest.mark.slow
def test_the_benchmark_runs_without_resource_and_says_what_it_did_not_measure(windowsish, tmp_path):
    data = make_dataset(tmp_path / "data", n_train=300, n_test=100)
    result = windowsish("benchmarks/epoch_time.py", "--quick", "--data-dir", data, "--no-verify",
                        "--batch-sizes", "64", "--threads", "1", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "Peak memory: max RSS not measured (this platform has no getrusage)." in result.stdout
    assert "Time to 98% test accuracy" in result.stdout
