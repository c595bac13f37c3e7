"""The core: reading data, the registry, the model, one training run and test.py."""
import json
import re

import pytest
import torch
import torch.nn.functional as F

import dataloader
import files
import runs
import settings
import train
from conftest import TINY, idx_file, make_dataset, make_digits, run_script, without_timing
from errors import UserError
from model import MLP, parse_hidden
from registry import ACTIVATIONS, LOSSES, OPTIMIZERS



def tiny_config(data_dir, out, **changes):
    """A config for a ~1 s run on the synthetic data, through the real argument parser."""
    args = settings.build_parser().parse_args([*TINY, "--data-dir", str(data_dir), "--out", str(out)])
    config = settings.make_config(args)
    config.update(changes)
    return config


# ---------------------------------------------------------------------------- data

@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, compress):
    images, labels = make_digits(30, seed=3)
    idx_file(tmp_path / "x", images, compress)
    idx_file(tmp_path / "y", labels, compress)
    assert torch.equal(dataloader.read_idx(tmp_path / "x"), images)
    assert torch.equal(dataloader.read_idx(tmp_path / "y"), labels)


def test_csv_gives_the_same_tensors_and_checksums_as_idx(tmp_path):
    make_dataset(tmp_path / "idx", n_train=40, n_test=20)
    from_idx = dataloader.load("mnist", tmp_path / "idx", verify=False)
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    for split in ("train", "test"):
        x, y = from_idx[f"{split}_x"], from_idx[f"{split}_y"]
        rows = [",".join(map(str, [int(label), *img.flatten().tolist()])) for img, label in zip(x, y)]
        (csv_dir / f"mnist_{split}.csv").write_text("label," + ",".join(f"p{i}" for i in range(784))
                                                   + "\n" + "\n".join(rows) + "\n")
    from_csv = dataloader.load("mnist", csv_dir, verify=False)
    for key in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(from_idx[key], from_csv[key])
    assert from_idx["md5"] == from_csv["md5"]


def test_torchvision_layout_is_found(tmp_path):
    make_dataset(tmp_path / "MNIST" / "raw", n_train=20, n_test=10)
    assert dataloader.load("mnist", tmp_path, verify=False)["train_x"].shape == (20, 28, 28)


def test_checksum_mismatch_is_an_error_unless_not_verifying(tiny_data):
    with pytest.raises(UserError, match="checksum mismatch.*--no-verify"):
        dataloader.load("mnist", tiny_data, verify=True)
    dataloader.load("mnist", tiny_data, verify=False)


def test_image_label_count_mismatch(tmp_path):
    make_dataset(tmp_path, n_train=20, n_test=10)
    idx_file(tmp_path / "train-labels-idx1-ubyte.gz", torch.zeros(19, dtype=torch.uint8))
    with pytest.raises(UserError, match="20 images but 19 labels"):
        dataloader.load("mnist", tmp_path, verify=False)


def test_label_out_of_range(tmp_path):
    make_dataset(tmp_path, n_train=20, n_test=10)
    idx_file(tmp_path / "t10k-labels-idx1-ubyte.gz", torch.full((10,), 10, dtype=torch.uint8))
    with pytest.raises(UserError, match="label 10 outside 0-9"):
        dataloader.load("mnist", tmp_path, verify=False)


def test_validation_split_is_disjoint_fixed_and_normalised_on_training_part(tiny_data):
    data = dataloader.load("mnist", tiny_data, verify=False)
    a = dataloader.prepare(data, val_split=100, normalize="standard")
    b = dataloader.prepare(data, val_split=100, normalize="standard")
    assert len(a["train"][1]) == 500 and len(a["val"][1]) == 100 and len(a["test"][1]) == 200
    assert torch.equal(a["val"][0], b["val"][0])
    assert abs(a["train"][0].mean().item()) < 1e-4 and abs(a["train"][0].std().item() - 1) < 1e-3
    train_rows = {tuple(r) for r in a["train"][0][:, :20].tolist()}
    assert not any(tuple(r) in train_rows for r in a["val"][0][:, :20].tolist())
    unit = dataloader.prepare(data, normalize="unit")["train"][0]
    assert unit.min() >= 0 and unit.max() <= 1


def test_batches_cover_every_sample_once_in_a_seeded_order():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    first = list(dataloader.batches(x, y, 4, torch.Generator().manual_seed(5)))
    again = list(dataloader.batches(x, y, 4, torch.Generator().manual_seed(5)))
    assert [len(b[1]) for b in first] == [4, 4, 2]
    assert sorted(torch.cat([b[1] for b in first]).tolist()) == list(range(10))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert all(torch.equal(bx[:, 0].long(), by) for bx, by in first)


@pytest.mark.slow
def test_dataloader_command_reports_the_shipped_mnist():
    result = run_script("dataloader.py")
    assert result.returncode == 0, result.stderr
    assert "train: 60000 images" in result.stdout and "test: 10000 images" in result.stdout
    assert result.stdout.count("(canonical)") == 4
    assert "1 6742" in result.stdout  # the class count of digit 1 in the training set


# ---------------------------------------------------------------------------- model and registry

def test_hidden_parsing():
    assert parse_hidden("256,128") == [256, 128] and parse_hidden("") == []
    for bad in ("256,,128", "a", "0", "-3"):
        with pytest.raises(UserError, match="--hidden"):
            parse_hidden(bad)


def test_mlp_shapes_and_softmax_regression():
    assert len(MLP(hidden=[])) == 1  # one Linear layer: softmax regression
    net = MLP(hidden=[32, 16], norm="batch", dropout=0.5)
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear", "BatchNorm1d", "ReLU",
                     "Dropout", "Linear"]
    assert net(torch.randn(5, 784)).shape == (5, 10)


def test_normal_init_uses_the_given_std():
    torch.manual_seed(0)
    net = MLP(hidden=[512], init="normal", init_std=0.05)
    assert abs(net[0].weight.std().item() - 0.05) < 0.002 and net[0].bias.abs().max() == 0


def test_losses_match_their_definitions():
    torch.manual_seed(0)
    logits, y = torch.randn(6, 10), torch.randint(0, 10, (6,))
    onehot = F.one_hot(y, 10).float()
    assert torch.allclose(LOSSES["ce"].fn(logits, y), F.cross_entropy(logits, y))
    assert torch.allclose(LOSSES["mse"].fn(logits, y), ((logits - onehot) ** 2).sum(1).mean())
    assert torch.allclose(LOSSES["hinge"].fn(logits, y), F.multi_margin_loss(logits, y) * 10)
    assert torch.allclose(LOSSES["l1"].fn(logits, y), (logits - onehot).abs().sum(1).mean())
    # Away from saturation the tutorials' sigmoid+BCELoss equals the fused form.
    assert torch.allclose(LOSSES["bce"].fn(logits, y), LOSSES["bce_logits"].fn(logits, y), atol=1e-5)
    # In saturation BCELoss's clamped log hides the true loss; the fused form does not.
    far = torch.full((1, 10), -200.0)
    far[0, 3] = 200.0
    assert LOSSES["bce"].fn(far, torch.tensor([0])) < LOSSES["bce_logits"].fn(far, torch.tensor([0]))


def _logit_gradient(name, error, y):
    logits = (F.one_hot(y, 10).double() + error.double()).requires_grad_()
    LOSSES[name].fn(logits, y).backward()
    return logits.grad


def test_l1_gradient_keeps_its_size_as_the_error_shrinks_where_mse_shrinks_with_it():
    torch.manual_seed(0)
    y, direction = torch.randint(0, 10, (4,)), torch.randn(4, 10)
    for scale in (1.0, 1e-3):
        # L1's gradient is sign(error) / batch for every output, whatever the error's size.
        assert torch.equal(_logit_gradient("l1", scale * direction, y), direction.double().sign() / 4)
        assert torch.allclose(_logit_gradient("mse", scale * direction, y), 2 * scale * direction.double() / 4)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_every_activation_trains(name, tiny_data, tmp_path):
    _, summary = train.train(tiny_config(tiny_data, tmp_path, activation=name, epochs=1))
    assert summary["status"] == "completed" and summary["epochs_completed"] == 1


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_trains_and_learns(name, tiny_data, tmp_path):
    # L1's gradient, +-1 per output whatever the error, learns slowly (REPORT.md, MSE's shrinking gradient)
    slow = dict(epochs=6, lr=0.01) if name == "l1" else dict(epochs=3)
    _, summary = train.train(tiny_config(tiny_data, tmp_path, loss=name, **slow))
    assert summary["status"] == "completed" and summary["final_test_acc"] > 0.2  # chance is 0.1


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_steps(name, tiny_data, tmp_path):
    config = settings.make_config(settings.build_parser().parse_args(
        [*TINY, "--data-dir", str(tiny_data), "--out", str(tmp_path), "--optimizer", name]))
    assert config["lr"] == OPTIMIZERS[name].lr
    _, summary = train.train(config)
    assert summary["status"] == "completed" and summary["final_test_acc"] > 0.2


@pytest.mark.slow
def test_help_lists_every_registry_entry():
    text = run_script("train.py", "--help").stdout
    for name in [*ACTIVATIONS, *LOSSES, *OPTIMIZERS]:
        assert name in text


def test_abbreviated_flags_are_rejected():
    with pytest.raises(SystemExit):
        settings.build_parser().parse_args(["--epoch", "3"])


def test_schedules():
    config = {"lr": 0.1, "epochs": 10, "schedule": "cosine", "step_size": 3, "gamma": 0.5, "warmup": 0}
    assert train.lr_at(config, 0) == 0.1 and train.lr_at(config, 5) == pytest.approx(0.05)
    config["schedule"] = "step"
    assert [train.lr_at(config, e) for e in (0, 2, 3, 6)] == [0.1, 0.1, 0.05, 0.025]


# ---------------------------------------------------------------------------- a run

def test_evaluate_averages_over_samples_not_batches():
    model = torch.nn.Linear(784, 10)
    x, y = torch.randn(7, 784), torch.randint(0, 10, (7,))
    with torch.no_grad():
        logits = model(x)
    loss, acc = train.evaluate(model, F.cross_entropy, x, y, batch_size=3)  # batches of 3, 3, 1
    assert loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert acc == pytest.approx((logits.argmax(1) == y).float().mean().item())


def test_same_seed_same_metrics_other_seed_other_metrics(tiny_data, tmp_path):
    a, _ = train.train(tiny_config(tiny_data, tmp_path, dropout=0.2))
    b, _ = train.train(tiny_config(tiny_data, tmp_path, dropout=0.2))
    c, _ = train.train(tiny_config(tiny_data, tmp_path, dropout=0.2, seed=1))
    metrics = [without_timing(files.read_jsonl(d / "metrics.jsonl")) for d in (a, b, c)]
    assert metrics[0] == metrics[1] and metrics[0] != metrics[2]


def test_full_batch_gradient_descent(tiny_data, tmp_path):
    run_dir, summary = train.train(tiny_config(tiny_data, tmp_path, batch_size=500, epochs=3))
    assert summary["status"] == "completed"
    rows = runs.read_steps(run_dir / "steps.csv")
    assert [row[:2] for row in rows] == [(1, 1), (2, 2), (3, 3)]  # one step, so one row, an epoch


@pytest.mark.slow
def test_real_mnist_run_end_to_end(tmp_path):
    """One short run on the shipped MNIST: a complete folder, and test.py agrees with the log."""
    result = run_script("train.py", "--epochs", "2", "--hidden", "64", "--quiet", "--device", "cpu",
                        "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = runs.find_runs(tmp_path)  # beside it, runs/.claims/ holds the locks
    assert {"config.json", "metrics.jsonl", "steps.csv", "summary.json", "model.pt"} <= {
        p.name for p in run_dir.iterdir()}
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data_md5"]["train-images-idx3-ubyte"] == "6bbc9ace898e44ae57da46a324031adb"
    assert config["environment"]["torch"] == torch.__version__ and config["seed"] == 0
    metrics = files.read_jsonl(run_dir / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2]
    for m in metrics:
        assert 0 <= m["train_acc"] <= 1 and 0 <= m["val_acc"] <= 1 and m["epoch_seconds"] > 0
    assert metrics[1]["elapsed_seconds"] == pytest.approx(metrics[0]["epoch_seconds"] + metrics[1]["epoch_seconds"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_test_acc"] > 0.95
    checkpoint = torch.load(run_dir / "model.pt", weights_only=True)
    assert checkpoint["config"]["hidden"] == [64] and checkpoint["epoch"] == 2

    tested = run_script("test.py", run_dir, "--plots")
    assert tested.returncode == 0, tested.stderr
    shown = float(re.search(r"accuracy ([\d.]+)%", tested.stdout).group(1)) / 100
    assert shown == pytest.approx(summary["final_test_acc"], abs=1e-6)
    assert (run_dir / "confusion.png").stat().st_size > 0 and (run_dir / "errors.png").stat().st_size > 0
    latest = run_script("test.py", "--latest", "--out", tmp_path)
    assert latest.returncode == 0 and f"{shown:.2%}" in latest.stdout


def test_image_prediction(tmp_path):
    """Light-background, enlarged copies of test digits are read back the way MNIST digits look."""
    from PIL import Image
    import test as tester
    data = dataloader.load("mnist")
    similarity = []
    for digit in data["test_x"][:5]:
        Image.fromarray((255 - digit).numpy()).resize((140, 140)).save(tmp_path / "digit.png")
        image = tester.read_image(tmp_path / "digit.png")
        assert image.shape == (28, 28) and image.dtype == torch.uint8
        assert image[0].max() == 0 and image.float().mean() > 10  # dark border, ink in the middle
        similarity.append(torch.corrcoef(torch.stack([image.flatten().float(), digit.flatten().float()]))[0, 1])
    assert sum(similarity) / len(similarity) > 0.6  # 0.73 when written; a shifted or uninverted copy is < 0.3


def test_label_noise_flips_a_fixed_fraction_of_training_labels_to_other_classes():
    y = torch.arange(1000) % 10
    noisy = dataloader.noisy_labels(y, 0.2)
    changed = noisy != y
    assert changed.sum() == 200 and noisy.min() >= 0 and noisy.max() <= 9
    assert torch.equal(noisy, dataloader.noisy_labels(y, 0.2))  # the same images and classes every run
    assert torch.equal(dataloader.noisy_labels(y, 0.0), y)


@pytest.mark.parametrize("batch_size, threads", [(16, 1), (64, 2)])
def test_small_batches_train_on_one_thread_unless_told(tiny_data, tmp_path, batch_size, threads):
    """Without --threads, a CPU run at batch 16 or less takes one thread (measured faster there); larger
    batches keep torch's choice, and --threads always wins."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        run_dir, _ = train.train(tiny_config(tiny_data, tmp_path, batch_size=batch_size, epochs=1, threads=None))
        assert runs.read_config(run_dir)["environment"]["threads"] == threads
        run_dir, _ = train.train(tiny_config(tiny_data, tmp_path, batch_size=batch_size, epochs=1, threads=2))
        assert runs.read_config(run_dir)["environment"]["threads"] == 2
    finally:
        torch.set_num_threads(before)
