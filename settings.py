"""Every setting of a run, declared once: the table, the command-line parser, the config and the run key.

train.py parses its command line here; the sweeps read which settings they may vary, tables name the
settings a sweep set, and runs.py checks a saved config against this table. A setting is one `Setting`
in SETTINGS below; its scope says whether it is part of a run's identity (run_key), whether a sweep may
vary it, and whether a sweep's --help offers it.
"""
import argparse
import math
import shlex
import sys
import textwrap
from typing import NamedTuple

import torch

import adversarial
import augment
import dataloader
import runs
from errors import UserError
from model import INITS, NORMS, parse_hidden
from registry import ACTIVATIONS, LOSS_NOTE, LOSSES, OPTIMIZERS, describe

DESCRIPTION = "Train the MLP once and record the run in its own folder under <out>/runs/."
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
    # Settings added after run format 2 enter the run key only when set, so the runs trained before
    # them keep their keys and are still reused.
    keyed_when_set: bool = False

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

    Setting("--train-size", RUN, "data", dict(
        type=POSITIVE_INT, default=None, metavar="N",
        help="train on N of the training images left after --val-split (not given: all of them): a "
             "class-balanced subset, the first N of one fixed order, so every run with this N trains on "
             "the same images and a smaller N's images are inside a larger one's (6875 inside 13750); "
             "validation and test stay as they are. The inputs keep the normalisation statistics of all "
             "the training images, not the subset's: every N then sees the same validation and test "
             "inputs and only the number of training images changes (MNIST's mean pixel is 0.1307 over "
             "55,000 images, 0.1320 over the 6,875)"), keyed_when_set=True),
    Setting("--label-noise", RUN, "data", dict(
        type=FRACTION, default=0.0,
        help="give this fraction of the training images (a fixed random choice) a wrong label: outliers "
             "for the loss to fit; validation and test labels stay true"), keyed_when_set=True),

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

    Setting("--diagnostics", RUN, "measurement", dict(
        action="store_true", default=False,
        help="log per-layer gradient norms (also at initialisation) and the fraction of dead units per layer "
             "after each epoch (see diagnostics.py)"), keyed_when_set=True),
    Setting("--noise-scale", RUN, "measurement", dict(
        action="store_true", default=False,
        help="log the gradient noise scale B_simple of McCandlish et al. (2018) after each epoch"), keyed_when_set=True),
    # Every epoch, not only the last: an early-stopped run's end point is known only once it stopped, and
    # the best-validation epoch's row then has its own figure.
    Setting("--sharpness", RUN, "measurement", dict(
        action="store_true", default=False,
        help="log the largest eigenvalue of the training loss' Hessian (all weights, the first 2048 "
             "training images, eval mode) at initialisation and after each epoch, by power iteration on "
             "Hessian-vector products, and the steps it took (see diagnostics.sharpness)"),
        keyed_when_set=True),
    # The sharpness once, of the weights the run ended with, apart from --sharpness: after each of the
    # hundreds of epochs of a run trained until validation stops improving it would cost more than the
    # training (batch_quality.py), and the end is known only once the run stopped.
    Setting("--end-sharpness", RUN, "measurement", dict(
        action="store_true", default=False,
        help="measure the sharpness of --sharpness once, after the last epoch (the run's epochs or its "
             "early stop), into summary.json's end_sharpness and end_sharpness_iterations"),
        keyed_when_set=True),
    Setting("--distance", RUN, "measurement", dict(
        action="store_true", default=False,
        help="log the Euclidean distance of all the weights from their initial values, ||theta - theta_0||, "
             "after each epoch (cheap: the initial weights are built again from the seed)"),
        keyed_when_set=True),
    # A flag of its own, not part of --diagnostics: runs trained with --diagnostics before it existed keep
    # their run key, and a reused one would lack these figures.
    Setting("--activation-stats", RUN, "measurement", dict(
        action="store_true", default=False,
        help="log, per hidden layer over the validation images (the first 5000 training images with "
             "--val-split 0), the fraction of activations that are exactly 0 (sparsity) and the mean "
             "activation (centring), at initialisation and after each epoch"),
        keyed_when_set=True),

    # None, not "auto", by default: --resume tells a --device not given from an asked-for auto.
    _s("--device", SYSTEM, "system", default=None, choices=("auto", "cpu", "cuda", "mps"),
       help="auto picks cuda, then mps, then cpu, as does leaving it out; a resumed run without it keeps "
            "its own device"),
    _s("--threads", SYSTEM, "system", type=POSITIVE_INT, default=None,
       help="CPU threads for torch (default: torch's choice, except one thread on the CPU at batch sizes "
            "up to 16, where one thread trained faster than two)"),
    _s("--compile", group="system", action="store_true", default=False, help="torch.compile the model"),
    _s("--out", SYSTEM, "system", default="results", help="results root; the run goes in <out>/runs/<name>/"),
    _s("--name", SINGLE, "system", default=None, help="run folder name (default: made from the settings)"),
    _s("--quiet", SINGLE, "system", action="store_true", default=False, help="no progress bar or per-epoch lines"),
)
SETTING = {s.dest: s for s in SETTINGS}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help with defaults, wrapped between words only: a flag such as --tune-lr is never split at its
    hyphen across two lines."""

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text, width, indent):
        return textwrap.fill(" ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent,
                             break_on_hyphens=False)


def build_parser(scopes=(RUN, SEED, SYSTEM, SINGLE), description=DESCRIPTION, given_only=False, owned=()):
    """A parser of the settings of the given scopes; `@file` reads flags from a recipe file. With
    given_only, the parsed namespace holds only the settings the command line names. The settings in
    owned are the script's own business: --help leaves them out and refuse stops a command that sets them."""
    # allow_abbrev=False: a mistyped flag such as --epoch must be an error, not silently --epochs.
    p = argparse.ArgumentParser(description=description, allow_abbrev=False, fromfile_prefix_chars="@",
                                formatter_class=HelpFormatter)
    p.convert_arg_line_to_args = _recipe_line
    groups = {}
    for s in SETTINGS:
        if s.scope in scopes:
            if s.group not in groups:
                groups[s.group] = p.add_argument_group(s.group)
            groups[s.group].add_argument(s.flag, **{**s.kwargs, **({"default": argparse.SUPPRESS} if given_only else {}),
                                                    **({"help": argparse.SUPPRESS} if s.dest in owned else {})})
    return p


def refuse(parser, args, unused):
    """Stop with one `error:` line where the command line gives an option of parser a value other than
    its default while the command does not use it: unused maps the option's name to why. An option that
    is accepted and then ignored would give a silent wrong answer."""
    for dest, why in unused.items():
        value = getattr(args, dest)
        if value != parser.get_default(dest):
            flag = "--" + dest.replace("_", "-")
            given = flag if isinstance(value, bool) else f"{flag} {format_value(value)}"
            raise UserError(f"{given}: {why}")


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
    """The run's identity: a hash of every setting that changes what it computes or records, the seed
    included."""
    return runs.digest({s.dest: config[s.dest] for s in SETTINGS if s.scope in (RUN, SEED)
                        and not (s.keyed_when_set and config[s.dest] == s.default)})


def devices_here():
    """The devices torch can train on here, in the order --device auto picks them."""
    found = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    return [name for name, there in found.items() if there]


# ---------------------------------------------------------------------------- devices and resumed runs

def flush_subnormals(on=True):
    """Make the CPU treat subnormal floats (nonzero, below about 1.2e-38 in float32) as zero, in the
    calling thread and in the worker threads torch starts after it; returns False where the processor
    has no such switch. A struggling network's weights, gradients and momentum decay into that range,
    where x86 arithmetic runs many times slower; a healthy run never holds such a number and computes
    the same bits either way (tests/test_subnormals.py). GPUs need nothing: they compute subnormals at
    full speed."""
    return torch.set_flush_denormal(on)


# At import, before any tensor work: the switch is per thread, and torch's worker threads copy it only
# when they are created, so a later call reaches the calling thread alone (measured on this CPU: half of
# a two-thread product kept its subnormals). Every script that trains or evaluates imports this module.
flush_subnormals()


def resolve_device(name):
    """The torch device for --device (None, not given, as auto); asking for one that is not there is an error."""
    here = devices_here()
    if name not in (None, "auto", *here):
        raise UserError(f"--device {name}: no {name.upper()} device is available on this machine; "
                        f"use --device cpu or --device auto")
    return name if name in here else here[0]


def resume_config(run_dir, device=None, threads=None, quiet=False):
    """The saved settings of an unfinished run, with this call's threads and printing, on its own device
    unless `device` is given (resume_device)."""
    saved = runs.read_config(run_dir)
    runs.check_unfinished(run_dir)
    device, note = resume_device(saved["device"], device and resolve_device(device), devices_here())
    if note:
        print(note, file=sys.stderr)
    # The saved thread count stays unless overridden: another count sums in another order, and the
    # resumed metrics would no longer match an uninterrupted run's. A setting added since the run was
    # trained takes its default, which is what the run did.
    return {**{s.dest: saved.get(s.dest, s.default) for s in SETTINGS},
            "format_version": saved["format_version"], "device": device, "threads": threads or saved["threads"],
            "quiet": quiet}


def resume_device(saved, given, here):
    """The device a resumed run trains on, and a line to tell the user or None: the run's own device
    (`saved`) unless one was given (`given`, resolved), auto's pick where `here` (devices_here) lacks it.
    On another device the run draws other random numbers and sums in another order, so the line says
    that its resumed metrics will not match an uninterrupted run."""
    device = given or (saved if saved in here else here[0])
    if device == saved:
        return device, None
    how = "as asked" if given else f"as this machine has no {saved.upper()} device"
    return device, (f"note: the run trained on {saved} and resumes on {device}, {how}: its resumed metrics will "
                    f"not match those of an uninterrupted run")
