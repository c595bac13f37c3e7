"""The training tools behind the best-MLP recipes (issue 11): label smoothing, input dropout, max-norm,
warm-up and schedules, the moving average of the weights, adversarial training, augmentation (training
batches only) and cropping, each checked for what it must do, on tiny synthetic data."""

import pytest
import torch
import torch.nn.functional as F

import adversarial
import dataloader
import files
import runs
import settings
import train
from conftest import ROOT, TINY, run_script, without_timing
from errors import UserError
from model import MLP



def config_for(data_dir, out, *flags):
    return settings.parse_config([*TINY, "--data-dir", str(data_dir), "--out", str(out), *flags])


def trained(config):
    """Train config; returns (run folder, summary, checkpoint, prepared tensors)."""
    run_dir, summary = train.train(config)
    tensors = dataloader.prepare(dataloader.load("mnist", config["data_dir"], verify=False), config["val_split"],
                                 config["normalize"], "cpu", config["crop"])
    return run_dir, summary, runs.load_checkpoint(run_dir / "model.pt"), tensors


def model_from(checkpoint, key="model"):
    model = MLP(**train.model_kwargs(checkpoint["config"]))
    model.load_state_dict(checkpoint[key])
    return model.eval()


def test_label_smoothing_is_the_training_objective_not_the_test_loss(tiny_data, tmp_path):
    config = config_for(tiny_data, tmp_path, "--label-smoothing", "0.2")
    tensors = dataloader.prepare(dataloader.load("mnist", tiny_data, verify=False), 100)
    trainer = train.build_trainer(config, tensors, "cpu")
    logits, y = torch.randn(8, 10), torch.randint(0, 10, (8,))
    assert torch.allclose(trainer.loss_fn(logits, y), F.cross_entropy(logits, y, label_smoothing=0.2))
    assert torch.allclose(trainer.eval_loss_fn(logits, y), F.cross_entropy(logits, y))
    with pytest.raises(UserError, match="--label-smoothing works with --loss ce"):
        config_for(tiny_data, tmp_path, "--label-smoothing", "0.2", "--loss", "mse")


def test_input_dropout_drops_pixels_in_training_only():
    torch.manual_seed(0)
    net = MLP(hidden=[16], input_dropout=0.25)
    assert isinstance(net[0], torch.nn.Dropout) and net[0].p == 0.25
    x = torch.ones(200, 784)
    dropped = (net[0](x) == 0).float().mean().item()
    assert 0.23 < dropped < 0.27
    assert torch.equal(net.eval()[0](x), x)


def test_max_norm_caps_every_units_incoming_weights(tiny_data, tmp_path):
    _, _, free, _ = trained(config_for(tiny_data, tmp_path, "--lr", "0.5"))
    _, _, capped, _ = trained(config_for(tiny_data, tmp_path, "--lr", "0.5", "--max-norm", "0.5"))
    norms = lambda ckpt: torch.cat([w.norm(dim=1) for k, w in ckpt["model"].items() if k.endswith("weight")])  # noqa: E731
    assert norms(free).max() > 0.6  # without the constraint the limit would be exceeded
    assert norms(capped).max() <= 0.5 + 1e-5


def test_warmup_and_schedules_per_step():
    config = {"lr": 0.1, "epochs": 10, "schedule": "linear", "step_size": 3, "gamma": 0.5, "warmup": 2}
    assert train.lr_at(config, 0) == 0 and train.lr_at(config, 1) == pytest.approx(0.1 * 0.9 * 0.5)
    assert train.lr_at(config, 5) == pytest.approx(0.05) and train.lr_at(config, 9.5) == pytest.approx(0.005)
    config.update(schedule="cosine", warmup=0)
    assert train.lr_at(config, 2.5) == pytest.approx(0.1 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi / 4)).item()))


@pytest.mark.slow
def test_the_moving_average_is_what_is_evaluated_and_tested(tiny_data, tmp_path):
    run_dir, summary, ckpt, tensors = trained(config_for(tiny_data, tmp_path, "--ema", "0.9"))
    average, raw = model_from(ckpt, "ema_model"), model_from(ckpt)
    loss, accuracy = train.evaluate(average, F.cross_entropy, *tensors["test"])
    assert accuracy == summary["final_test_acc"] and loss == pytest.approx(summary["final_test_loss"])
    assert train.evaluate(raw, F.cross_entropy, *tensors["test"])[0] != pytest.approx(loss)
    shown = run_script("test.py", run_dir, "--data-dir", tiny_data)
    assert shown.returncode == 0 and f"accuracy {accuracy:.2%}" in shown.stdout


def test_resume_with_moving_average_and_dropout_matches_an_uninterrupted_run(tiny_data, tmp_path, monkeypatch):
    flags = ["--ema", "0.9", "--dropout", "0.2", "--epochs", "3", "--schedule", "constant", "--threads", "1"]
    whole, _ = train.train(config_for(tiny_data, tmp_path / "whole", *flags))
    real_line = train.epoch_line
    calls = []

    def stop_after_first_epoch(row, epochs):  # as Ctrl-C right after epoch 1 was saved
        calls.append(row)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real_line(row, epochs)
    monkeypatch.setattr(train, "epoch_line", stop_after_first_epoch)
    stopped, summary = train.train(config_for(tiny_data, tmp_path / "stopped", *flags))
    assert summary["status"] == "interrupted" and summary["epochs_completed"] == 1
    train.train(settings.resume_config(stopped, "cpu"), stopped)
    rows = [without_timing(files.read_jsonl(d / "metrics.jsonl")) for d in (whole, stopped)]
    assert len(rows[0]) == 3 and rows[0] == rows[1]


def test_fgsm_penalty_is_the_loss_at_the_sign_of_the_input_gradient():
    torch.manual_seed(0)
    model, x, y = torch.nn.Linear(784, 10), torch.randn(5, 784, requires_grad=True), torch.randint(0, 10, (5,))
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    penalty = adversarial.penalty("fgsm", model, x, logits, loss, y, F.cross_entropy, 0.3)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    assert torch.allclose(penalty, F.cross_entropy(model(x.detach() + 0.3 * grad.sign()), y))
    assert penalty > loss  # the perturbation is adversarial


def test_vat_penalty_grows_with_eps_and_leaves_batch_norm_statistics_alone():
    torch.manual_seed(0)
    model = MLP(hidden=[32], norm="batch").train()
    x = torch.randn(64, 784)
    logits = model(x)
    norm = model[1]
    stats = norm.running_mean.clone(), norm.running_var.clone()
    small, large = (adversarial.penalty("vat", model, x, logits, None, None, None, eps) for eps in (0.1, 3.0))
    assert 0 < small < large
    assert torch.equal(norm.running_mean, stats[0]) and torch.equal(norm.running_var, stats[1])
    model(x)  # an ordinary training pass does move them
    assert not torch.equal(norm.running_mean, stats[0])


@pytest.mark.parametrize("kind, eps", [("fgsm", "0.1"), ("vat", "2")])
def test_adversarial_training_runs_and_learns(tiny_data, tmp_path, kind, eps):
    _, summary = train.train(config_for(tiny_data, tmp_path, "--adversarial", kind, "--adv-eps", eps, "--epochs", "3"))
    assert summary["status"] == "completed" and summary["final_test_acc"] > 0.2
    with pytest.raises(UserError, match="needs a perturbation size"):
        config_for(tiny_data, tmp_path, "--adversarial", kind)


def test_augmentation_changes_training_batches_but_never_evaluation(tiny_data, tmp_path):
    flags = ["--shift", "3", "--rotate", "20", "--elastic-alpha", "30", "--epochs", "1"]
    run_dir, summary, ckpt, tensors = trained(config_for(tiny_data, tmp_path, *flags))
    _, plain = train.train(config_for(tiny_data, tmp_path, "--epochs", "1"))
    assert summary["final_train_loss"] != plain["final_train_loss"]  # the training batches were augmented
    for split in ("val", "test"):  # evaluated on the untouched images
        loss, accuracy = train.evaluate(model_from(ckpt), F.cross_entropy, *tensors[split])
        assert accuracy == summary[f"final_{split}_acc"] and loss == pytest.approx(summary[f"final_{split}_loss"])


@pytest.mark.slow
def test_crop_keeps_the_central_pixels_everywhere(tiny_data, tmp_path):
    images = torch.arange(2 * 28 * 28).reshape(2, 28, 28)
    assert torch.equal(dataloader.crop(images, 20), images[:, 4:24, 4:24])
    run_dir, summary, ckpt, tensors = trained(config_for(tiny_data, tmp_path, "--crop", "20"))
    assert all(tensors[split][0].shape[1] == 400 for split in ("train", "val", "test"))
    assert ckpt["model"]["0.weight"].shape == (32, 400)
    shown = run_script("test.py", run_dir, "--data-dir", tiny_data)
    assert shown.returncode == 0 and f"accuracy {summary['final_test_acc']:.2%}" in shown.stdout
    with pytest.raises(UserError, match="augmentation works on whole 28x28 images"):
        config_for(tiny_data, tmp_path, "--crop", "20", "--shift", "2")


RECIPES = sorted(path.stem for path in (ROOT / "recipes").glob("*.args"))


def test_the_recipes_the_readme_promises_exist():
    assert {"mnist", "mnist_augmented", "fashion", "speed"} <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_is_a_valid_config_shown_in_the_readme(name):
    path = ROOT / "recipes" / f"{name}.args"
    config = settings.parse_config([f"@{path}"])
    # chosen on the validation split, never on the test set; a recipe that then trains on all the
    # training images says what the validation split chose
    assert config["val_split"] == 5000 or "chosen on validation" in path.read_text()
    assert f"@recipes/{name}.args" in (ROOT / "README.md").read_text()


@pytest.mark.slow
def test_a_recipe_runs_from_the_command_line_and_later_flags_override_it(tiny_data, tmp_path):
    result = run_script("train.py", "@recipes/speed.args", *TINY, "--data-dir", tiny_data, "--out", tmp_path,
                        "--name", "speed")
    assert result.returncode == 0, result.stderr
    config = runs.read_config(tmp_path / "runs" / "speed")
    assert config["crop"] == 20 and config["optimizer"] == "nesterov" and config["epochs"] == 2  # TINY's
