"""The settings and opt-in measurements that the batch-size and activation studies stand on: --train-size's
nested, class-balanced subsets; the sharpness on Hessians known in closed form and computed in full;
activation sparsity and means on layers built to have known ones; and that measuring changes nothing the
run computes."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dataloader
import diagnostics
import runs
import settings
import train
from conftest import TINY
from errors import UserError
from model import MLP


def skewed_labels():
    """1,000 labels of 10 classes in a shuffled order, class c held by 40 + 12 c images."""
    y = torch.cat([torch.full((40 + 12 * c,), c) for c in range(10)])
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(5))]


def test_training_subsets_are_nested_class_balanced_and_fixed():
    y = skewed_labels()
    previous = set()
    for size in (10, 11, 37, 100, 250, 399, 400):  # 400: ten times the rarest class's 40
        picked = dataloader.balanced_subset(y, size)
        assert len(picked) == size and len(set(picked.tolist())) == size
        assert previous <= set(picked.tolist())  # each subset holds every smaller one
        counts = torch.bincount(y[picked], minlength=10)
        assert counts.max() - counts.min() <= 1
        assert torch.equal(picked, dataloader.balanced_subset(y, size))  # the same images every call
        previous = set(picked.tolist())
    # Past ten times the rarest class, a class that has run out is all in and the others fill up evenly.
    available, beyond = torch.bincount(y), torch.bincount(y[dataloader.balanced_subset(y, 700)], minlength=10)
    short = beyond < available
    assert beyond[~short].tolist() == [40, 52, 64, 76]  # 700 - 232 = 6 x 78 images for the others
    assert beyond[short].tolist() == [78] * 6
    assert torch.equal(dataloader.balanced_subset(y, len(y)), torch.arange(len(y)))  # the whole split, in order


def tiny_config(tiny_data, *extra):
    return settings.parse_config([*TINY, "--data-dir", str(tiny_data), *extra])


def test_a_training_subset_leaves_validation_test_and_normalisation_as_they_are(tiny_data):
    _, whole = dataloader.for_run(tiny_config(tiny_data), "cpu")
    _, part = dataloader.for_run(tiny_config(tiny_data, "--train-size", "50"), "cpu")
    _, all_of_it = dataloader.for_run(tiny_config(tiny_data, "--train-size", "500"), "cpu")
    for split in ("val", "test"):
        assert all(torch.equal(a, b) for a, b in zip(whole[split], part[split]))
    assert (whole["mean"], whole["std"]) == (part["mean"], part["std"])
    x, y = part["train"]
    assert len(y) == 50 and torch.bincount(y, minlength=10).tolist() == [5] * 10
    picked = dataloader.balanced_subset(whole["train"][1], 50)
    assert torch.equal(x, whole["train"][0][picked]) and torch.equal(y, whole["train"][1][picked])
    assert all(torch.equal(a, b) for a, b in zip(whole["train"], all_of_it["train"]))


def test_train_size_enters_the_run_key_only_when_given():
    plain = settings.parse_config([])
    assert settings.run_key(plain) == "c5297117"  # the default run's key before --train-size existed
    assert settings.run_key(settings.parse_config(["--train-size", "6875"])) != settings.run_key(plain)
    assert "--train-size" not in settings.to_argv(plain)


@pytest.mark.parametrize("size", ["9", "501"])
def test_a_training_subset_larger_than_the_split_or_smaller_than_the_classes_is_refused(tiny_data, size):
    with pytest.raises(UserError, match=rf"--train-size {size}: must be between 10 \(one image per class\) "
                                        r"and 500, the training images left after --val-split 100"):
        dataloader.for_run(tiny_config(tiny_data, "--train-size", size), "cpu")


def test_the_batch_size_is_checked_against_the_subset(tiny_data):
    with pytest.raises(UserError, match="larger than the training set .40 images after --val-split 100 and "
                                        "--train-size 40.; use at most 40"):
        dataloader.for_run(tiny_config(tiny_data, "--train-size", "40"), "cpu")  # TINY's batch is 50


class Point(nn.Module):
    """A "network" whose output is its own parameter vector: a loss of the output is a function of the weights."""

    def __init__(self, theta):
        super().__init__()
        self.theta = nn.Parameter(theta)

    def forward(self, x):
        return self.theta


def quadratic(eigenvalues, seed=0):
    """A = Q diag(eigenvalues) Q^T in a random orthonormal basis Q, and the loss 0.5 theta^T A theta + b^T theta."""
    g = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    a = q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T
    b, theta = torch.randn(2, n, generator=g, dtype=torch.float64)
    return Point(theta), lambda t, y: 0.5 * t @ a @ t + b @ t


@pytest.mark.parametrize("eigenvalues, largest", [
    ([10.0, 6.0, 3.0, 1.0, 0.5, 0.1] + [0.01] * 14, 10.0),
    ([-20.0, 4.0, 2.5, 1.0, -3.0, 0.2] + [0.05] * 14, 4.0),  # the largest in magnitude is negative
])
def test_sharpness_is_the_largest_eigenvalue_of_a_known_hessian(eigenvalues, largest):
    point, loss = quadratic(eigenvalues)
    value, steps = diagnostics.sharpness(point, loss, torch.zeros(1), None)
    assert value == pytest.approx(largest, rel=1e-3) and steps < diagnostics.SHARPNESS_ITERATIONS * 2


def test_sharpness_of_a_small_network_is_the_top_eigenvalue_of_its_full_hessian():
    torch.manual_seed(0)
    model = MLP(hidden=[6], activation="tanh", inputs=5, classes=3).double()
    x, y = torch.randn(64, 5, dtype=torch.float64), torch.randint(0, 3, (64,))
    names, shapes = [n for n, _ in model.named_parameters()], [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(theta):  # the loss as a function of all the weights in one vector
        parts = [part.view(shape) for part, shape in zip(theta.split([s.numel() for s in shapes]), shapes)]
        return F.cross_entropy(torch.func.functional_call(model, dict(zip(names, parts)), (x,)), y)

    full = torch.autograd.functional.hessian(loss_of, flat)
    value, _ = diagnostics.sharpness(model, F.cross_entropy, x, y, iterations=2000, tol=1e-9)
    assert value == pytest.approx(torch.linalg.eigvalsh(full).max().item(), rel=1e-3)


def test_sharpness_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model, x, y = MLP(hidden=[8], inputs=5, dropout=0.5).train(), torch.randn(32, 5), torch.randint(0, 10, (32,))
    before = [p.clone() for p in model.parameters()]
    diagnostics.sharpness(model, F.cross_entropy, x, y)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def signed_inputs():
    """100 inputs of 20 pixels whose first pixel is +1 on 25 of them and -1 on the other 75."""
    x = torch.randn(100, 20, generator=torch.Generator().manual_seed(3))
    x[:, 0] = torch.where(torch.arange(100) < 25, 1.0, -1.0)
    return x


def test_activation_sparsity_and_means_of_layers_built_to_have_known_ones():
    model = MLP(hidden=[10, 4], inputs=20)
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.weight.zero_()
        model[0].weight[:5, 0], model[0].weight[5:, 0] = 1.0, -1.0  # active on 25 and on 75 of 100 inputs
        model[0].bias.zero_()
        model[2].bias[:] = torch.tensor([-1.0, 1.0, 3.0, -5.0])  # constant: 0, 1, 3, 0 after ReLU
    stats = diagnostics.activation_stats(model, signed_inputs())
    assert stats["zero_fraction"] == pytest.approx([0.5, 0.5])  # (5 x 75 + 5 x 25) / 1000; 2 of 4 units
    assert stats["mean_activation"] == pytest.approx([0.5, 1.0])  # the same count of ones; (1 + 3) / 4


def test_a_zero_centred_activation_on_symmetric_inputs_has_a_mean_of_zero_and_relu_does_not():
    x = torch.randn(500, 20, generator=torch.Generator().manual_seed(4))
    x = torch.cat([x, -x])  # every input and its negative: an odd activation's mean is 0
    for activation, zero, centred in (("tanh", 0.0, True), ("relu", 0.5, False)):
        torch.manual_seed(0)
        model = MLP(hidden=[64], activation=activation, inputs=20, init="xavier")  # xavier: zero biases
        stats = diagnostics.activation_stats(model, x)
        assert stats["zero_fraction"] == pytest.approx([zero])  # ReLU: each pair has exactly one zero
        assert (abs(stats["mean_activation"][0]) < 1e-6) == centred
    assert diagnostics.activation_stats(MLP(hidden=[], inputs=20), x) == {"zero_fraction": [], "mean_activation": []}


def test_the_measurements_are_recorded_every_epoch_and_change_nothing_else(tiny_data, tmp_path):
    rows = []
    for extra in (["--sharpness", "--activation-stats"], []):
        config = settings.parse_config([*TINY, "--data-dir", str(tiny_data), "--out", str(tmp_path), "--dropout",
                                        "0.2", *extra])
        run_dir, summary = train.train(config)
        rows.append(runs.read_jsonl(run_dir / "metrics.jsonl"))
    keys = ["train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"]
    assert [[r[k] for k in keys] for r in rows[0]] == [[r[k] for k in keys] for r in rows[1]]
    assert rows[0][0]["init_sharpness"] > 0 and all(r["sharpness"] > 0 for r in rows[0])
    assert all(0 < r["zero_fraction"][0] < 1 and r["mean_activation"][0] > 0 for r in rows[0])  # TINY: one ReLU layer
    assert len(rows[0][0]["init_zero_fraction"]) == 1 and len(rows[0][0]["init_mean_activation"]) == 1
    assert not {"init_sharpness", "init_zero_fraction"} & rows[0][1].keys()
    assert not {"sharpness", "zero_fraction"} & rows[1][0].keys()
    assert summary.get("final_sharpness") is None  # the second run did not ask for it


def test_the_measurements_enter_the_run_key_only_when_asked_for():
    plain = settings.run_key(settings.parse_config([]))
    keys = {settings.run_key(settings.parse_config([flag])) for flag in ("--sharpness", "--activation-stats")}
    assert len(keys) == 2 and plain not in keys
