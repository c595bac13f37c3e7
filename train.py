"""Train the MLP once and record the run in its own folder under <out>/runs/.

    python train.py                                  # the default run, CPU or CUDA picked automatically
    python train.py --batch-size 32 --activation tanh --loss mse --optimizer adam --lr 1e-3 --epochs 5
    python train.py @recipes/speed.args              # a recipe: a file of flags (later flags override it)
    python train.py --resume results/runs/<run>      # continue an interrupted run

Every setting is declared once, in SETTINGS below. The command line becomes one config dict, saved as
config.json beside the metrics, so every run can be rebuilt, resumed or replotted from its folder alone.
"""
import errors

if __name__ == "__main__":
    errors.handle_interrupts()  # before torch loads: Ctrl-C while importing ends with one line too

import argparse
import contextlib
import functools
import math
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

import adversarial
import augment
import dataloader
import runs
from errors import UserError, run_cli
from model import INITS, MLP, NORMS, apply_max_norm, model_kwargs, parse_hidden
from registry import ACTIVATIONS, LOSS_NOTE, LOSSES, OPTIMIZERS, describe, make_optimizer

# ---------------------------------------------------------------------------- settings

# How a setting takes part in runs and sweeps. Its scope alone decides whether it is part of a run's
# identity (run_key), whether a sweep can vary it, and whether a sweep's --help offers it.
RUN = "run"        # changes what the run computes: part of its identity; a sweep can vary it
SEED = "seed"      # part of the identity too; a sweep sets it from its --seed and --seeds
SYSTEM = "system"  # where and how the run computes, not what: not part of the identity; a sweep passes it on
SINGLE = "single"  # about one train.py call (its folder name, its printing): a sweep sets it itself


class Setting(NamedTuple):
    flag: str
    scope: str
    group: str
    kwargs: dict  # argparse's add_argument arguments: default, type, choices, action, help

    @property
    def dest(self):
        return self.flag[2:].replace("-", "_")

    @property
    def default(self):
        return self.kwargs.get("default")

    @property
    def switch(self):
        return self.kwargs.get("action") == "store_true"


def _number(kind, ok=lambda v: True, requirement=""):
    """An argparse type: parse the text as kind and accept it only where ok(value) holds."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text!r}")
        return value
    return parse


INT = _number(int)
POSITIVE_INT = _number(int, lambda v: v > 0, "positive")
NON_NEGATIVE_INT = _number(int, lambda v: v >= 0, ">= 0")
NUMBER = _number(float, math.isfinite, "finite")
POSITIVE = _number(float, lambda v: 0 < v < math.inf, "positive")
FRACTION = _number(float, lambda v: 0 <= v < 1, "in [0, 1)")
NON_NEGATIVE = _number(float, lambda v: 0 <= v < math.inf, ">= 0")
SCHEDULES = ("constant", "step", "cosine", "linear")
ROOT = Path(__file__).resolve().parent


def _s(flag, scope=RUN, group="training", **kwargs):
    return Setting(flag, scope, group, kwargs)


SETTINGS = (
    *(Setting(flag, RUN, "data", kwargs) for flag, kwargs in dataloader.DATA_FLAGS.items()),
    _s("--val-split", group="data", type=NON_NEGATIVE_INT, default=5000,
       help="training images held out for validation (0: none)"),
    _s("--normalize", group="data", default="standard", choices=list(dataloader.NORMALIZATIONS),
       help="input scaling: " + "; ".join(f"{k}: {v}" for k, v in dataloader.NORMALIZATIONS.items())),
    _s("--crop", group="data", type=POSITIVE_INT, default=28,
       help="use only the central N x N pixels of every image (MNIST's border is nearly always blank: "
            "20 keeps the digits and halves the first layer's work)"),

    _s("--hidden", group="model", type=parse_hidden, default=[256, 128],
       help="hidden layer widths, e.g. 256,128; '' for none (softmax regression)"),
    _s("--activation", group="model", default="relu", choices=list(ACTIVATIONS), help=describe(ACTIVATIONS)),
    _s("--norm", group="model", default="none", choices=list(NORMS),
       help="normalisation after each hidden linear layer"),
    _s("--dropout", group="model", type=FRACTION, default=0.0, help="dropout probability after each activation"),
    _s("--input-dropout", group="model", type=FRACTION, default=0.0,
       help="dropout probability on the input pixels"),
    _s("--init", group="model", default="default", choices=INITS,
       help="weight init: PyTorch's default, xavier (Glorot), kaiming (He), or normal with --init-mean "
            "and --init-std"),
    _s("--init-mean", group="model", type=NUMBER, default=0.0, help="mean for --init normal"),
    _s("--init-std", group="model", type=POSITIVE, default=0.01, help="std for --init normal"),

    _s("--loss", default="ce", choices=list(LOSSES), help=describe(LOSSES) + ". " + LOSS_NOTE),
    _s("--optimizer", default="momentum", choices=list(OPTIMIZERS), help=describe(OPTIMIZERS)),
    _s("--lr", type=POSITIVE, default=None,
       help="learning rate (default per optimizer: " +
            ", ".join(f"{k} {v.lr:g}" for k, v in OPTIMIZERS.items()) + ")"),
    _s("--momentum", type=FRACTION, default=None, help="momentum, or beta1 for adam/adamw (default per optimizer)"),
    _s("--weight-decay", type=NON_NEGATIVE, default=None,
       help="L2 weight decay (default per optimizer: 0.01 for adamw, else 0)"),
    _s("--schedule", default="cosine", choices=SCHEDULES,
       help="learning rate over training, set every step: constant, step (times --gamma every "
            "--step-size epochs), cosine (to 0 at the end) or linear (to 0 at the end)"),
    _s("--warmup", type=NON_NEGATIVE, default=0.0,
       help="epochs of linear learning-rate warm-up from 0 at the start (with --schedule cosine or "
            "linear: a one-cycle schedule)"),
    _s("--step-size", type=POSITIVE_INT, default=5, help="epochs between steps of --schedule step"),
    _s("--gamma", type=POSITIVE, default=0.1, help="factor of each step of --schedule step"),
    _s("--batch-size", type=POSITIVE_INT, default=128,
       help="samples per step, up to the training-set size (full-batch gradient descent)"),
    _s("--epochs", type=POSITIVE_INT, default=12, help="passes over the training set"),
    _s("--patience", type=NON_NEGATIVE_INT, default=0,
       help="stop when validation accuracy has not improved for this many epochs (0: off)"),
    _s("--seed", SEED, type=INT, default=0, help="seed of the weights, data order, dropout and augmentation"),
    _s("--log-every", type=POSITIVE_INT, default=50, help="steps averaged into each row of steps.csv"),

    _s("--label-smoothing", group="regularisation", type=FRACTION, default=0.0,
       help="cross-entropy against labels smoothed by this much (with --loss ce)"),
    _s("--max-norm", group="regularisation", type=NON_NEGATIVE, default=0.0,
       help="after each step, rescale every unit's incoming weight vector to at most this L2 norm (0: off)"),
    _s("--ema", group="regularisation", type=FRACTION, default=0.0,
       help="evaluate an exponential moving average of the weights with this decay per step, e.g. "
            "0.999 (0: off)"),
    _s("--adversarial", group="regularisation", default="none", choices=adversarial.KINDS,
       help="adversarial training: fgsm (fast gradient sign, eps the largest change of a pixel) or "
            "vat (virtual adversarial, eps the L2 norm of the perturbation); pixels in [0, 1]"),
    _s("--adv-eps", group="regularisation", type=NON_NEGATIVE, default=0.0,
       help="size of the adversarial perturbation, in pixel units"),
    _s("--adv-weight", group="regularisation", type=NON_NEGATIVE, default=1.0,
       help="weight of the adversarial term added to the loss"),

    _s("--shift", group="augmentation", type=NON_NEGATIVE, default=0.0,
       help="random translation of each training image, up to this many pixels in x and y"),
    _s("--rotate", group="augmentation", type=NON_NEGATIVE, default=0.0, help="random rotation, up to this many degrees"),
    _s("--scale", group="augmentation", type=FRACTION, default=0.0, help="random zoom by a factor in [1 - s, 1 + s]"),
    _s("--shear", group="augmentation", type=NON_NEGATIVE, default=0.0, help="random shear, up to this many degrees"),
    _s("--elastic-alpha", group="augmentation", type=NON_NEGATIVE, default=0.0,
       help="elastic distortion (Simard et al. 2003): displacement scale in pixels, e.g. 34 (0: off)"),
    _s("--elastic-sigma", group="augmentation", type=POSITIVE, default=4.0,
       help="elastic distortion: std of the Gaussian that smooths the displacement field, in pixels"),
    _s("--hflip", group="augmentation", action="store_true", default=False,
       help="flip half the training images left-right (for fashion-mnist; digits are not symmetric)"),

    _s("--device", SYSTEM, "system", default="auto", choices=("auto", "cpu", "cuda", "mps"),
       help="auto picks cuda, then mps, then cpu"),
    _s("--threads", SYSTEM, "system", type=POSITIVE_INT, default=None,
       help="CPU threads for torch (default: torch's choice)"),
    _s("--compile", group="system", action="store_true", default=False, help="torch.compile the model"),
    _s("--out", SYSTEM, "system", default="results", help="results root; the run goes in <out>/runs/<name>/"),
    _s("--name", SINGLE, "system", default=None, help="run folder name (default: made from the settings)"),
    _s("--quiet", SINGLE, "system", action="store_true", default=False, help="no progress bar or per-epoch lines"),
)
SETTING = {s.dest: s for s in SETTINGS}


def build_parser(scopes=(RUN, SEED, SYSTEM, SINGLE), description=__doc__.split("\n")[0], given_only=False):
    """A parser of the settings of the given scopes; `@file` reads flags from a recipe file. With
    given_only, the parsed namespace holds only the settings the command line names."""
    # allow_abbrev=False: a mistyped flag such as --epoch must be an error, not silently --epochs.
    p = argparse.ArgumentParser(description=description, allow_abbrev=False, fromfile_prefix_chars="@",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.convert_arg_line_to_args = _recipe_line
    groups = {}
    for s in SETTINGS:
        if s.scope in scopes:
            if s.group not in groups:
                groups[s.group] = p.add_argument_group(s.group)
            groups[s.group].add_argument(s.flag, **{**s.kwargs, **({"default": argparse.SUPPRESS} if given_only else {})})
    return p


def _recipe_line(line):
    """The flags on one line of a recipe file: split as a shell would; '#' starts a comment."""
    return shlex.split(line, comments=True)


def make_config(values):
    """One flat config dict of every setting from parsed values (a dict or an argparse Namespace),
    optimizer defaults filled in and combinations checked."""
    values = vars(values) if isinstance(values, argparse.Namespace) else values
    config = {s.dest: values[s.dest] for s in SETTINGS}
    entry = OPTIMIZERS[config["optimizer"]]
    for key in ("lr", "momentum", "weight_decay"):
        if config[key] is None:
            config[key] = getattr(entry, key)
    check_combinations(config)
    config["format_version"] = runs.FORMAT_VERSION
    return config


def check_combinations(config):
    """Settings that are valid alone but not together."""
    if config["patience"] and not config["val_split"]:
        raise UserError("--patience needs a validation set: give --val-split N with N > 0")
    if config["label_smoothing"] and config["loss"] != "ce":
        raise UserError(f"--label-smoothing works with --loss ce, not --loss {config['loss']}")
    if not 1 <= config["crop"] <= 28:
        raise UserError(f"--crop {config['crop']}: the images are 28x28, so at most 28")
    if config["crop"] != 28 and augment.active(config):
        raise UserError(f"--crop {config['crop']}: augmentation works on whole 28x28 images; use one or the other")
    if config["adversarial"] != "none" and not config["adv_eps"]:
        raise UserError(f"--adversarial {config['adversarial']} needs a perturbation size: give "
                        f"--adv-eps, e.g. 0.1 for fgsm or 2.0 for vat")


def parse_config(argv):
    """The config that `python train.py ARGV` trains."""
    return make_config(build_parser().parse_args(argv))


def parse_value(name, text):
    """One setting's value from its text, checked as train.py's parser checks it."""
    s = SETTING[name]
    try:
        value = s.kwargs.get("type", str)(text)
    except argparse.ArgumentTypeError as e:
        raise UserError(f"{s.flag} {text}: {e}") from None
    if s.kwargs.get("choices") is not None and value not in s.kwargs["choices"]:
        raise UserError(f"{s.flag} {text}: invalid choice (choose from {', '.join(s.kwargs['choices'])})")
    return value


def to_argv(config, scopes=(RUN, SEED, SYSTEM)):
    """The train.py flags that set config's values of the given scopes (defaults left out)."""
    argv = []
    for s in SETTINGS:
        value = config[s.dest]
        if s.scope not in scopes or value == s.default:
            continue
        argv += [s.flag] if s.switch else [s.flag, format_value(value)]
    return argv


def format_value(value):
    """A setting's value as its command-line text (hidden layers as 256,128)."""
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def run_key(config):
    """The run's identity: a hash of every setting that changes what it computes, the seed included."""
    return runs.digest({s.dest: config[s.dest] for s in SETTINGS if s.scope in (RUN, SEED)})


def resolve_device(name):
    """The torch device for --device; asking for one that is not there is an error."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise UserError(f"--device {name}: no {name.upper()} device is available on this machine; "
                        f"use --device cpu or --device auto")
    return name


def check_out(out):
    """Make sure <out>/runs can be written before any work is done."""
    runs_dir = Path(out) / "runs"
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        probe = runs_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"--out {out}: cannot write there ({e.strerror}); choose a writable folder "
                        f"with --out") from None


def environment(device):
    """Versions and the git commit, saved with the config so a run can be repeated."""
    info = {"torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "threads": torch.get_num_threads(),
            "device_name": torch.cuda.get_device_name() if device == "cuda" else platform.processor()}
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                            text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


# ---------------------------------------------------------------------------- training

class Trainer(NamedTuple):
    """Everything a training step needs."""
    config: dict
    model: torch.nn.Module
    step_model: torch.nn.Module   # the model, or its torch.compile'd form
    optimizer: torch.optim.Optimizer
    loss_fn: object               # the training objective (label smoothing included)
    eval_loss_fn: object          # the plain loss, for validation and test
    ema: AveragedModel            # or None; evaluated in the model's place when set
    background: float             # a blank pixel's normalised value, for augmentation
    adv_eps: float                # the adversarial perturbation in normalised units


def build_trainer(config, tensors, device):
    """The seeded model, its optimizer and losses, for the normalised data in tensors."""
    torch.manual_seed(config["seed"])
    model = MLP(**model_kwargs(config)).to(device)
    loss_fn = LOSSES[config["loss"]].fn
    ema = None
    if config["ema"]:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config["ema"]), use_buffers=True)
    return Trainer(
        config, model, torch.compile(model) if config["compile"] else model,
        make_optimizer(config["optimizer"], list(model.parameters()), config["lr"], config["momentum"],
                       config["weight_decay"]),
        functools.partial(F.cross_entropy, label_smoothing=config["label_smoothing"])
        if config["label_smoothing"] else loss_fn,
        loss_fn, ema, -tensors["mean"] / tensors["std"], config["adv_eps"] / tensors["std"])


def sync(device):
    """Wait for queued device work, so that a clock read measures finished work."""
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def lr_at(config, t):
    """Learning rate t epochs into training (t is fractional: the rate is set every step)."""
    lr = config["lr"]
    if config["schedule"] == "step":
        lr *= config["gamma"] ** (int(t) // config["step_size"])
    elif config["schedule"] == "cosine":
        lr *= 0.5 * (1 + math.cos(math.pi * t / config["epochs"]))
    elif config["schedule"] == "linear":
        lr *= 1 - t / config["epochs"]
    if config["warmup"]:
        lr *= min(1.0, t / config["warmup"])
    return lr


class EpochResult(NamedTuple):
    loss_sum: torch.Tensor   # sum of the samples' training losses, on the device
    correct: torch.Tensor    # count of correct training predictions, on the device
    losses: torch.Tensor     # each step's loss, on the CPU
    bad_step: int            # 0-based step of the first non-finite loss, else None
    lr: float                # learning rate of the last step


def train_epoch(trainer, x, y, epoch, progress):
    """One pass over (x, y) in a seeded order.

    Losses and correct counts stay on the device until the epoch ends: no host sync per step, except
    a finiteness check every --log-every steps.
    """
    config, every = trainer.config, trainer.config["log_every"]
    trainer.model.train()
    seed = config["seed"] * 100_003 + epoch
    order, noise = torch.Generator().manual_seed(seed), torch.Generator(device=x.device).manual_seed(seed)
    steps = math.ceil(x.shape[0] / config["batch_size"])
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    losses, lr = [], None
    for i, (xb, yb) in enumerate(dataloader.batches(x, y, config["batch_size"], order)):
        lr = lr_at(config, epoch + i / steps)
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr
        loss, logits = train_step(trainer, xb, yb, noise)
        losses.append(loss)
        loss_sum += loss * len(yb)
        correct += (logits.argmax(1) == yb).sum()
        progress.update()
        if len(losses) % every == 0:
            recent = torch.stack(losses[-every:])
            if not torch.isfinite(recent).all():
                break
            progress.set_postfix(loss=f"{recent.mean().item():.4f}", refresh=False)
    losses = torch.stack(losses).cpu()
    finite = torch.isfinite(losses)
    return EpochResult(loss_sum, correct, losses, None if finite.all() else int((~finite).nonzero()[0]), lr)


def train_step(trainer, x, y, noise):
    """One optimizer step on a batch; returns its (loss, logits), detached."""
    config = trainer.config
    if augment.active(config):
        x = augment.augment(x, config, trainer.background, noise)
    if config["adversarial"] == "fgsm":
        x = x.requires_grad_(True)  # the sign of the input gradient is the perturbation
    logits = trainer.step_model(x)
    loss = trainer.loss_fn(logits, y)
    objective = loss
    if config["adversarial"] != "none":
        objective = loss + config["adv_weight"] * adversarial.penalty(
            config["adversarial"], trainer.step_model, x, logits, loss, y, trainer.loss_fn, trainer.adv_eps)
    trainer.optimizer.zero_grad(set_to_none=True)
    objective.backward()
    trainer.optimizer.step()
    if config["max_norm"]:
        apply_max_norm(trainer.model, config["max_norm"])
    if trainer.ema:
        trainer.ema.update_parameters(trainer.model)
    return loss.detach(), logits.detach()


def timed_epoch(trainer, x, y, epoch):
    """train_epoch with a progress bar; returns (result, training seconds, device synchronised)."""
    config, device = trainer.config, x.device.type
    with tqdm(total=math.ceil(x.shape[0] / config["batch_size"]), desc=f"epoch {epoch + 1}/{config['epochs']}",
              leave=False, disable=config["quiet"]) as progress:
        sync(device)
        t0 = time.perf_counter()
        result = train_epoch(trainer, x, y, epoch, progress)
        sync(device)
        return result, time.perf_counter() - t0


@torch.inference_mode()
def evaluate(model, loss_fn, x, y, batch_size=8192):
    """Mean loss and accuracy over all samples of (x, y), in eval mode, in large batches."""
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        logits = model(xb)
        loss_sum += loss_fn(logits, yb) * len(yb)
        correct += (logits.argmax(1) == yb).sum()
    return loss_sum.item() / x.shape[0], correct.item() / x.shape[0]


def evaluated_model(trainer):
    """The weights that are evaluated and tested: the moving average with --ema, else the model."""
    return trainer.ema.module if trainer.ema else trainer.model


def epoch_row(trainer, tensors, epoch, result, seconds, metrics):
    """The epoch's record, one line of metrics.jsonl. A new per-epoch metric is a new key here: the
    summary, the sweep tables and runs.csv pick it up from the row."""
    n, model = tensors["train"][0].shape[0], evaluated_model(trainer)
    t0 = time.perf_counter()
    val_loss, val_acc = evaluate(model, trainer.eval_loss_fn, *tensors["val"]) if tensors["val"] else (None, None)
    test_loss, test_acc = evaluate(model, trainer.eval_loss_fn, *tensors["test"])
    return {"epoch": epoch + 1, "train_loss": result.loss_sum.item() / n, "train_acc": result.correct.item() / n,
            "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc,
            "epoch_seconds": seconds, "elapsed_seconds": seconds + (metrics[-1]["elapsed_seconds"] if metrics else 0.0),
            "eval_seconds": time.perf_counter() - t0, "lr": result.lr}


def step_rows(result, epoch, steps_per_epoch, every):
    """steps.csv rows: the loss averaged over each --log-every steps, tagged with its last step."""
    first = epoch * steps_per_epoch
    return [(first + i + len(chunk), epoch + 1, chunk.mean().item())
            for i, chunk in zip(range(0, len(result.losses), every), result.losses.split(every))]


def summarise(metrics, status, **extra):
    """summary.json's content: the status and the last epoch's figures (final_<key> for each key of
    the row), the best test accuracy, and the test accuracy at the best validation epoch."""
    summary = {"status": status, "epochs_completed": len(metrics),
               "train_seconds": metrics[-1]["elapsed_seconds"] if metrics else 0.0}
    if metrics:
        summary.update({f"final_{k}": v for k, v in metrics[-1].items() if k != "epoch" and "seconds" not in k})
        best_test = max(metrics, key=lambda m: m["test_acc"])
        summary.update(best_test_acc=best_test["test_acc"], best_test_epoch=best_test["epoch"])
        if metrics[-1]["val_acc"] is not None:
            best_val = max(metrics, key=lambda m: m["val_acc"])
            summary.update(best_val_acc=best_val["val_acc"], best_val_epoch=best_val["epoch"],
                           test_acc_at_best_val=best_val["test_acc"])
    return {**summary, **extra}


def checkpoint(trainer, epoch, tensors):
    """model.pt's content: weights, optimizer and random state after `epoch` epochs."""
    return {"model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
            "ema_model": trainer.ema.module.state_dict() if trainer.ema else None,
            "config": trainer.config, "epoch": epoch, "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if trainer.config["device"] == "cuda" else None,
            "norm_mean": tensors["mean"], "norm_std": tensors["std"]}


def save_epoch(run_dir, row, steps, trainer, tensors, metrics):
    """Append the epoch to the run folder: metrics, step losses, checkpoint, summary."""
    metrics.append(row)
    runs.append_jsonl(run_dir / "metrics.jsonl", row)
    runs.write_steps(run_dir / "steps.csv", steps, append=True)
    runs.save_checkpoint(run_dir / "model.pt", checkpoint(trainer, row["epoch"], tensors))
    runs.write_json(run_dir / "summary.json", summarise(metrics, "running"))


class Interrupts:
    """Turn SIGTERM into KeyboardInterrupt, and hold both back while a `critical()` block writes."""

    def __init__(self):
        self.holding = self.pending = False
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        if self.holding:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def critical(self):
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending:
            raise KeyboardInterrupt


def train(config, resume_dir=None):
    """Run (or resume) one training run as configured; returns (run folder, summary dict)."""
    trainer, tensors, run_dir, metrics = set_up(config, resume_dir)
    x, y = tensors["train"]
    steps_per_epoch, say = math.ceil(len(y) / config["batch_size"]), printer(config)
    interrupts, status, extra = Interrupts(), "completed", {}
    try:
        for epoch in range(len(metrics), config["epochs"]):
            result, seconds = timed_epoch(trainer, x, y, epoch)
            steps = step_rows(result, epoch, steps_per_epoch, config["log_every"])
            if result.bad_step is not None:
                status, extra = "diverged", diverged(result, epoch, steps_per_epoch)
                with interrupts.critical():
                    runs.write_steps(run_dir / "steps.csv", steps, append=True)
                say(f"diverged: loss {extra['diverged_loss']} at epoch {epoch + 1}, step "
                    f"{extra['diverged_step']}; recorded in summary.json")
                break
            row = epoch_row(trainer, tensors, epoch, result, seconds, metrics)
            with interrupts.critical():  # a signal now must not leave an epoch half recorded
                save_epoch(run_dir, row, steps, trainer, tensors, metrics)
            say(epoch_line(row, config["epochs"]))
            if should_stop(metrics, config["patience"]):
                extra = {"stopped_early": True}
                say(f"early stop: validation accuracy has not improved for {config['patience']} epochs")
                break
    except KeyboardInterrupt:
        status, extra = "interrupted", {"resume": f"python train.py --resume {run_dir}"}
        print(f"\ninterrupted after epoch {len(metrics)}; continue with: python train.py --resume "
              f"{run_dir}", file=sys.stderr)
    with interrupts.critical():
        summary = summarise(metrics, status, **extra)
        runs.write_json(run_dir / "summary.json", summary)
    if status == "completed":
        say(f"done: test accuracy {summary.get('final_test_acc', 0):.2%} after {len(metrics)} epochs, "
            f"{summary['train_seconds']:.1f} s of training; {run_dir}")
    return run_dir, summary


def set_up(config, resume_dir):
    """Device, threads, data, model and run folder: (trainer, tensors, run folder, metrics so far)."""
    device = config["device"] = resolve_device(config["device"])
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    check_out(config["out"])
    data, tensors = load_data(config, device)
    trainer = build_trainer(config, tensors, device)
    run_dir, metrics = open_run(config, data, tensors, trainer, resume_dir)
    printer(config)(f"run folder: {run_dir}\ndevice: {device}, training on {len(tensors['train'][1])} images, "
                    f"{sum(p.numel() for p in trainer.model.parameters())} parameters")
    return trainer, tensors, run_dir, metrics


def printer(config):
    """Print a line between progress bars, or nothing with --quiet."""
    return (lambda *a: None) if config["quiet"] else tqdm.write


def load_data(config, device):
    """The data set, checked, and its normalised tensors on the device."""
    data = dataloader.load(config["dataset"], config["data_dir"], verify=not config["no_verify"])
    tensors = dataloader.prepare(data, config["val_split"], config["normalize"], device, config["crop"])
    n = len(tensors["train"][1])
    if config["batch_size"] > n:
        raise UserError(f"--batch-size {config['batch_size']} is larger than the training set "
                        f"({n} images after --val-split {config['val_split']}); use at most {n} for "
                        f"full-batch gradient descent")
    return data, tensors


def open_run(config, data, tensors, trainer, resume_dir):
    """The run folder and the metrics so far: a new folder with its config.json, or the resumed run
    restored to its last checkpoint."""
    if resume_dir:
        run_dir = Path(resume_dir)
        metrics = restore(run_dir, trainer)
    else:
        run_dir, metrics = start_run(config), []
        runs.write_json(run_dir / "config.json", {
            **config, "run_key": run_key(config), "data_md5": data["md5"], "data_source": data["source"],
            "norm_mean": tensors["mean"], "norm_std": tensors["std"], "environment": environment(config["device"]),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        runs.write_steps(run_dir / "steps.csv", [])
    runs.write_json(run_dir / "summary.json", summarise(metrics, "running"))
    return run_dir, metrics


def start_run(config):
    """Create the run folder for a new run; returns its path."""
    parent = Path(config["out"]) / "runs"
    if config["name"]:
        run_dir = parent / config["name"]
        if run_dir.exists():
            raise UserError(f"{run_dir} already exists; pick another --name, or continue it with "
                            f"--resume {run_dir}")
        run_dir.mkdir(parents=True)
        return run_dir
    base = runs.run_name(config, run_key(config))
    for attempt in range(1000):  # mkdir is atomic: two runs started in the same second both get a folder
        run_dir = parent / (base if attempt == 0 else f"{base}-{attempt}")
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            continue
    raise UserError(f"{parent}: cannot find a free run folder name for {base}")


def restore(run_dir, trainer):
    """Load the last checkpoint of an interrupted run and trim logs written after it; returns the
    metrics up to the checkpoint."""
    ckpt_path, start = run_dir / "model.pt", 0
    if ckpt_path.exists():
        ckpt = runs.load_checkpoint(ckpt_path)
        try:
            trainer.model.load_state_dict(ckpt["model"])
            trainer.optimizer.load_state_dict(ckpt["optimizer"])
            if trainer.ema:
                trainer.ema.module.load_state_dict(ckpt["ema_model"])
                trainer.ema.n_averaged.fill_(1)  # averaging, not copying, from the next step on
        except (KeyError, RuntimeError, ValueError, AttributeError) as e:
            raise UserError(f"{ckpt_path}: does not match the run's config.json (another "
                            f"architecture?): {_first_detail(e)}; put back this run's model.pt or "
                            f"retrain the run") from None
        torch.set_rng_state(ckpt["rng"])
        if trainer.config["device"] == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"])
        start = ckpt["epoch"]
    metrics = [m for m in runs.read_jsonl(run_dir / "metrics.jsonl") if m["epoch"] <= start]
    if len(metrics) != start:
        raise UserError(f"{run_dir}: metrics.jsonl has {len(metrics)} epochs but the checkpoint is "
                        f"at epoch {start}; the folder is damaged, retrain the run")
    runs.write_jsonl(run_dir / "metrics.jsonl", metrics)
    runs.write_steps(run_dir / "steps.csv", [s for s in runs.read_steps(run_dir / "steps.csv") if s[1] <= start])
    return metrics


def _first_detail(error):
    """The first line of a load_state_dict error that names a layer (its first line only says
    'Error(s) in loading state_dict')."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[1:] or lines or [type(error).__name__])[0].rstrip(".")


def diverged(result, epoch, steps_per_epoch):
    """summary.json's record of where the loss stopped being finite."""
    return {"diverged_epoch": epoch + 1, "diverged_step": epoch * steps_per_epoch + result.bad_step + 1,
            "diverged_loss": str(result.losses[result.bad_step].item())}


def epoch_line(row, epochs):
    """The line printed after each epoch."""
    val = f"  val acc {row['val_acc']:.2%}" if row["val_acc"] is not None else ""
    return (f"epoch {row['epoch']:3d}/{epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.2%}"
            f"{val}  test loss {row['test_loss']:.4f} acc {row['test_acc']:.2%}  lr {row['lr']:.3g}  "
            f"{row['epoch_seconds']:.2f} s (+{row['eval_seconds']:.2f} s eval)")


def should_stop(metrics, patience):
    """Early stopping: validation accuracy has not improved for `patience` epochs."""
    if not patience:
        return False
    best_epoch = max(metrics, key=lambda m: m["val_acc"])["epoch"]
    return metrics[-1]["epoch"] - best_epoch >= patience


# ---------------------------------------------------------------------------- the command

def resume_config(run_dir, device="auto", threads=None, quiet=False):
    """The saved settings of an unfinished run, with this call's device, threads and printing."""
    saved = runs.read_config(run_dir)
    status = runs.read_status(run_dir)
    if status in runs.FINISHED:
        raise UserError(f"{run_dir}: already {status}; nothing to resume")
    # The saved thread count stays unless overridden: another count sums in another order, and the
    # resumed metrics would no longer match an uninterrupted run's.
    return {**{s.dest: saved[s.dest] for s in SETTINGS}, "format_version": saved["format_version"],
            "device": device, "threads": threads or saved["threads"], "quiet": quiet}


def train_once(config):
    """Train config unless --out already has a run with the same settings: wait while another
    process trains it, then reuse it if it finished or resume it if it did not."""
    check_out(config["out"])
    key = run_key(config)
    with runs.claim(config["out"], key):
        found = runs.index(config["out"]).get(key, [])
        finished = [run_dir for run_dir, status in found if status in runs.FINISHED]
        if finished:
            print(f"already trained with these settings: {finished[-1]} (reused; without --once, "
                  f"train.py trains another copy)")
            return runs.read_json(finished[-1] / "summary.json")
        if found:
            run_dir = found[-1][0]
            return train(resume_config(run_dir, config["device"], config["threads"], config["quiet"]), run_dir)[1]
        return train(config)[1]


def main():
    parser = build_parser()
    g = parser.add_argument_group("starting")
    g.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue an interrupted run from its folder (its saved settings are used; "
                        "--device, --threads and --quiet may be given)")
    g.add_argument("--once", action="store_true",
                   help="train only if --out has no run with the same settings: reuse a finished one, "
                        "resume an unfinished one, wait for one another process is training (sweeps use it)")
    args = parser.parse_args()
    if args.resume and args.once:
        raise UserError("--resume continues one given run; --once finds the run itself: give one of them")
    if args.resume:
        config = resume_config(Path(args.resume), args.device, args.threads, args.quiet)
        summary = train(config, Path(args.resume))[1]
    elif args.once:
        summary = train_once(make_config(args))
    else:
        summary = train(make_config(args))[1]
    if summary["status"] == "interrupted":
        sys.exit(errors.INTERRUPTED)


if __name__ == "__main__":
    run_cli(main)
