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
    assert "| batch size | lr | project s/epoch | reference s/epoch |" in out
    # each row at the rate the batch-scaling study chose for the nearest size it measured
    known = epoch_time.rates()
    assert known[16] != known[8192]
    assert f"| 16 | {known[16]:g} |" in out and f"| 64 | {known[64]:g} |" in out
    assert f"| 300 (full) | {epoch_time.rate_for(300, known):g} |" in out
    for line in ("Matmul peak:", "Start-up", "Peak memory", "Threads at batch size 16", "Threads at batch size 64",
                 "Time to 98% test accuracy"):
        assert line in out


def test_each_batch_size_takes_the_rate_of_the_nearest_size_measured():
    known = {16: 0.01, 128: 0.05, 8192: 0.2}
    assert epoch_time.rate_for(16, known) == 0.01
    assert epoch_time.rate_for(60_000, known) == 0.2
    assert epoch_time.rate_for(40, known) == 0.01 and epoch_time.rate_for(50, known) == 0.05  # log scale
