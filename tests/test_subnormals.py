"""Subnormal floats are flushed to zero on the CPU (settings.flush_subnormals): in every thread, and
without changing a healthy run by one bit."""
import subprocess
import sys

import pytest
import torch

import runs
import settings
import train
from conftest import ROOT, without_timing
from registry import make_optimizer
from test_core import tiny_config

SUBNORMAL = 1e-40  # float32's smallest normal number is about 1.18e-38


@pytest.fixture
def kept():
    """Subnormals kept (the CPU's default) for one test, on one thread (the switch is per thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    settings.flush_subnormals(False)
    yield
    settings.flush_subnormals(True)
    torch.set_num_threads(threads)


def test_importing_the_project_flushes_in_every_thread():
    """The switch is per thread and worker threads copy it when they start, so it must be set before any
    parallel work: a product over two threads made right after importing train holds no subnormal."""
    code = ("import torch, train; torch.set_num_threads(2); "
            "print(int(((torch.full((4_000_000,), 1e-30) * 1e-10) != 0).sum()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


def test_the_switch_decides_what_a_decaying_momentum_holds(kept):
    """A weight whose gradient falls to zero, as in a collapsed network, keeps a momentum buffer that
    shrinks by 0.9 a step: after 900 steps it is 0.9^900, about 6e-42, subnormal where subnormals are
    kept and zero where they are flushed."""
    def buffer_after(steps):
        weight = torch.zeros(1, requires_grad=True)
        optimizer = make_optimizer("momentum", [weight], lr=0.05, momentum=0.9, weight_decay=0.0)
        for step in range(steps):
            weight.grad = torch.ones(1) if step == 0 else torch.zeros(1)
            optimizer.step()
        return optimizer.state[weight]["momentum_buffer"].item()

    assert 0 < buffer_after(900) < torch.finfo(torch.float32).tiny
    settings.flush_subnormals(True)
    assert buffer_after(900) == 0.0
    assert torch.tensor(SUBNORMAL).item() == 0.0


def test_a_healthy_run_computes_the_same_bits_with_subnormals_flushed_or_kept(tiny_data, tmp_path, kept):
    """Flushing changes only arithmetic below about 1e-38, which a healthy run never meets: its metrics,
    weights and optimizer state are bit for bit those of the same run with subnormals kept."""
    assert torch.tensor(SUBNORMAL).item() != 0.0  # kept: the run below really runs without the switch
    kept_dir, kept_summary = train.train(tiny_config(tiny_data, tmp_path / "kept", threads=1))
    settings.flush_subnormals(True)
    flushed_dir, flushed_summary = train.train(tiny_config(tiny_data, tmp_path / "flushed", threads=1))
    assert kept_summary["status"] == flushed_summary["status"] == "completed"
    assert (without_timing(runs.read_jsonl(kept_dir / "metrics.jsonl"))
            == without_timing(runs.read_jsonl(flushed_dir / "metrics.jsonl")))
    a, b = (runs.load_checkpoint(d / "model.pt") for d in (kept_dir, flushed_dir))
    for name in ("model", "optimizer"):
        left, right = _tensors(a[name]), _tensors(b[name])
        assert len(left) == len(right) > 0
        for x, y in zip(left, right):  # bit patterns: a comparison of values would read subnormals as 0
            assert torch.equal(x.view(torch.int32), y.view(torch.int32))
    assert runs.read_config(kept_dir)["environment"]["subnormals_flushed"] is False
    assert runs.read_config(flushed_dir)["environment"]["subnormals_flushed"] is True


def _tensors(state):
    """The float tensors of a state dict, nested ones included, in a fixed order."""
    if torch.is_tensor(state):
        return [state] if state.is_floating_point() else []
    items = state.values() if isinstance(state, dict) else state if isinstance(state, (list, tuple)) else []
    return [t for item in items for t in _tensors(item)]
