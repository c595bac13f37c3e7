"""The epoch-time benchmark runs end to end at tiny sizes; its timings are not checked."""
import sys

import pytest

from conftest import ROOT, make_dataset, run_script

sys.path.insert(0, str(ROOT / "benchmarks"))

import epoch_time  # noqa: E402
from model import MLP  # noqa: E402


def test_flops_count_linear_layers_forward_and_backward():
    assert epoch_time.flops_per_epoch(MLP(hidden=[256, 64]), 60_000) == 6 * 60_000 * (784 * 256 + 256 * 64 + 64 * 10)


@pytest.mark.slow
def test_benchmark_runs_at_tiny_sizes(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=300, n_test=100)
    result = run_script("benchmarks/epoch_time.py", "--quick", "--data-dir", data, "--no-verify",
                        "--batch-sizes", "16,64,full", "--threads", "1", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "| batch size | project s/epoch | reference s/epoch |" in out
    assert "| 300 (full) |" in out and "| 16 |" in out and "| 64 |" in out
    for line in ("Matmul peak:", "Start-up", "Peak memory", "Threads at batch size 64", "Time to 98% test accuracy"):
        assert line in out
