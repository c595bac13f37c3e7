"""The opt-in measurements (diagnostics.py): the gradient noise scale on gradients of a known noise
level, gradient norms and dead units on networks built to have them, and that measuring changes nothing
the run computes."""
import pytest
import torch
import torch.nn.functional as F

import diagnostics
import files
import settings
import train
from conftest import TINY
from model import MLP


def test_the_noise_scale_of_gradients_with_a_known_noise_level():
    """Per-sample gradients G + noise of variance sigma^2 in each of d coordinates: tr(Sigma) = d sigma^2,
    and B_simple = d sigma^2 / |G|^2. Batch means of `small` samples carry noise sigma / sqrt(small)."""
    g = torch.Generator().manual_seed(0)
    d, small, groups, sigma = 500, 32, 64, 0.3
    true_g = torch.randn(d, generator=g) * 0.05
    estimates = []
    for _ in range(40):
        grads = true_g + torch.randn(groups, d, generator=g) * sigma / small ** 0.5
        estimates.append(diagnostics.noise_from(grads, small))
    grad_sq = sum(e[0] for e in estimates) / len(estimates)
    trace = sum(e[1] for e in estimates) / len(estimates)
    assert trace == pytest.approx(d * sigma ** 2, rel=0.03)
    assert grad_sq == pytest.approx(true_g.pow(2).sum().item(), rel=0.1)
    assert trace / grad_sq == pytest.approx(d * sigma ** 2 / true_g.pow(2).sum().item(), rel=0.1)


def test_noise_free_gradients_have_a_noise_scale_of_zero():
    grads = torch.ones(8, 10)  # every batch sees the same gradient
    grad_sq, trace = diagnostics.noise_from(grads, 4)
    assert grad_sq == pytest.approx(10) and trace == pytest.approx(0, abs=1e-9)


def test_layer_gradient_norms_are_the_weights_gradient_norms():
    torch.manual_seed(0)
    model, x, y = MLP(hidden=[16, 8], inputs=20), torch.randn(64, 20), torch.randint(0, 10, (64,))
    norms = diagnostics.layer_grad_norms(model, F.cross_entropy, x, y)
    F.cross_entropy(model(x), y).backward()
    expected = [m.weight.grad.norm().item() for m in model if isinstance(m, torch.nn.Linear)]
    assert norms == pytest.approx(expected, rel=1e-5)


def test_a_deep_sigmoid_network_starts_with_vanishing_gradients_and_a_relu_one_does_not():
    torch.manual_seed(0)
    x, y = torch.randn(512, 784), torch.randint(0, 10, (512,))
    ratio = {}
    for activation in ("sigmoid", "relu"):
        norms = diagnostics.layer_grad_norms(MLP(hidden=[128] * 8, activation=activation), F.cross_entropy, x, y)
        ratio[activation] = norms[0] / norms[-1]  # input layer over output layer
    assert ratio["sigmoid"] < 1e-3 < ratio["relu"]


def test_dead_units_are_units_that_are_zero_on_every_input():
    torch.manual_seed(0)
    model = MLP(hidden=[10, 6], inputs=20)
    with torch.no_grad():
        model[0].bias[:4] = -1e3  # four units of the first layer can never be active
        model[2].bias[:] = 1e3  # and every unit of the second is always active
    assert diagnostics.dead_units(model, torch.randn(100, 20)) == pytest.approx([0.4, 0.0])
    assert diagnostics.dead_units(MLP(hidden=[10], activation="tanh", inputs=20), torch.randn(100, 20)) == [0.0]


def test_measuring_changes_nothing_the_run_computes(tiny_data, tmp_path):
    rows, summaries = [], []
    for extra in ([], ["--diagnostics", "--noise-scale", "--dropout", "0.2"], ["--dropout", "0.2"]):
        config = settings.parse_config([*TINY, "--data-dir", str(tiny_data), "--out", str(tmp_path), *extra])
        run_dir, summary = train.train(config)
        rows.append(files.read_jsonl(run_dir / "metrics.jsonl"))
        summaries.append(summary)
    keys = ["train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"]
    assert [[r[k] for k in keys] for r in rows[1]] == [[r[k] for k in keys] for r in rows[2]]
    assert "init_grad_norms" in rows[1][0] and "init_grad_norms" not in rows[1][1]
    assert len(rows[1][-1]["grad_norms"]) == 2 and rows[1][-1]["noise_scale"] > 0  # TINY: one hidden layer
    assert "grad_norms" not in rows[2][0]
    assert summaries[1]["init_grad_norms"] == rows[1][0]["init_grad_norms"]  # kept beside the final figures
    assert summaries[1]["final_dead_units"] == rows[1][-1]["dead_units"]


def test_measurements_enter_the_run_key_only_when_asked_for():
    plain = settings.parse_config([])
    assert settings.run_key(plain) == "c5297117"  # the key of the default run before these settings existed
    assert settings.run_key(settings.parse_config(["--diagnostics"])) != settings.run_key(plain)
