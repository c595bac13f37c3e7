"""Train the MLP once and record the run in its own folder under <out>/runs/.

    python train.py                                  # the default run, CPU or CUDA picked automatically
    python train.py --batch-size 32 --activation tanh --loss mse --optimizer adam --lr 1e-3 --epochs 5
    python train.py @recipes/speed.args              # a recipe: a file of flags (later flags override it)
    python train.py --resume results/runs/<run>      # continue an interrupted run

Every setting is declared once, in settings.py. The command line becomes one config dict, saved as
config.json beside the metrics, so every run can be rebuilt, resumed or replotted from its folder alone
(runs.py says what the folder holds). This file is the run itself: the trainer, the loop and its steps,
evaluation, and the command.
"""
import errors

if __name__ == "__main__":
    errors.handle_interrupts()  # before torch loads: Ctrl-C while importing ends with one line too

import contextlib
import functools
import math
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from tqdm import tqdm

import adversarial
import augment
import claims
import dataloader
import diagnostics
import files
import runs
import settings
from errors import UserError, run_cli
from model import EMA, MLP, apply_max_norm, model_kwargs
from registry import LOSSES, make_optimizer

WARM_UP = ("cuda", "mps")  # the devices whose first step pays one-time set-up (see warm_up)
# Up to this batch size a CPU run without --threads trains on one thread: there one thread outran two in
# every measurement, by 14-24% (REPORT.md, Speed), the per-step hand-off between threads costing more than
# the split work; at 32 and 64 the two tied within the noise.
ONE_THREAD_UP_TO = 16

# ---------------------------------------------------------------------------- set-up

class Trainer(NamedTuple):
    """Everything a training step needs."""
    config: dict
    model: torch.nn.Module
    step_model: torch.nn.Module   # the model, or its torch.compile'd form
    optimizer: torch.optim.Optimizer
    loss_fn: object               # the training objective (label smoothing included)
    eval_loss_fn: object          # the plain loss, for validation and test
    ema: EMA                      # or None; evaluated in the model's place when set
    background: float             # a blank pixel's normalised value, for augmentation
    adv_eps: float                # the adversarial perturbation in normalised units


def build_trainer(config, tensors, device):
    """The seeded model, its optimizer and losses, for the normalised data in tensors."""
    torch.manual_seed(config["seed"])
    model = MLP(**model_kwargs(config)).to(device)
    loss_fn = LOSSES[config["loss"]].fn
    ema = EMA(model, config["ema"]) if config["ema"] else None
    return Trainer(
        config, model, torch.compile(model) if config["compile"] else model,
        make_optimizer(config["optimizer"], list(model.parameters()), config["lr"], config["momentum"],
                       config["weight_decay"]),
        functools.partial(F.cross_entropy, label_smoothing=config["label_smoothing"])
        if config["label_smoothing"] else loss_fn,
        loss_fn, ema, -tensors["mean"] / tensors["std"], config["adv_eps"] / tensors["std"])


def warm_up(config, tensors, device):
    """On a GPU, one untimed step of a throwaway trainer, so that epoch 1's time leaves out one-time set-up
    (kernel loading, cuBLAS handles, allocator growth). A copy under a kept random state, not a step of the
    run's own trainer, so the run computes what it would without it; on the CPU, where the first step
    costs little extra, nothing runs and a run stays bit for bit what it was."""
    if device in WARM_UP:
        with runs.rng_kept(device):
            x, y = (t[:config["batch_size"]] for t in tensors["train"])
            train_step(build_trainer(config, tensors, device), x, y, torch.Generator(device=device))
            sync(device)


def sync(device):
    """Wait for queued device work, so that a clock read measures finished work."""
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


# ---------------------------------------------------------------------------- the loop

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


def epoch_seed(config, epoch):
    """The seed of an epoch's data order and augmentation noise; the measurements after it derive theirs."""
    return config["seed"] * 100_003 + epoch


class Step(NamedTuple):
    """One training step taken: its batch's mean loss and logits (detached, on the device), its labels, its
    learning rate."""
    loss: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor
    lr: float


def epoch_steps(trainer, x, y, epoch):
    """The one training loop: the steps of epoch `epoch` over (x, y), the batches in the epoch's seeded
    order, each at its learning rate (lr_at); yields each Step once taken. train_epoch, the
    steps-to-target study and the timing pass all train through it."""
    config = trainer.config
    seed = epoch_seed(config, epoch)
    order, noise = torch.Generator().manual_seed(seed), torch.Generator(device=x.device).manual_seed(seed)
    steps = math.ceil(x.shape[0] / config["batch_size"])
    trainer.model.train()
    for i, (xb, yb) in enumerate(dataloader.batches(x, y, config["batch_size"], order)):
        lr = lr_at(config, epoch + i / steps)
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr
        loss, logits = train_step(trainer, xb, yb, noise)
        yield Step(loss, logits, yb, lr)


class EpochResult(NamedTuple):
    loss_sum: torch.Tensor   # sum of the samples' training losses, on the device
    correct: torch.Tensor    # count of correct training predictions, on the device
    losses: torch.Tensor     # each step's loss, on the CPU
    bad_step: int            # 0-based step of the first non-finite loss, else None
    lr: float                # learning rate of the last step


def train_epoch(trainer, x, y, epoch, progress):
    """One pass over (x, y) (epoch_steps), its losses and accuracy summed.

    Losses and correct counts stay on the device until the epoch ends: no host sync per step, except
    a finiteness check every --log-every steps.
    """
    every = trainer.config["log_every"]
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    losses, lr = [], None
    for step in epoch_steps(trainer, x, y, epoch):
        losses.append(step.loss)
        loss_sum += step.loss * len(step.labels)
        correct += (step.logits.argmax(1) == step.labels).sum()
        lr = step.lr
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


# ---------------------------------------------------------------------------- evaluation and records

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
    measured = diagnostics.measure(trainer, tensors, epoch, epoch_seed(trainer.config, epoch))
    return {"epoch": epoch + 1, "train_loss": result.loss_sum.item() / n, "train_acc": result.correct.item() / n,
            "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc,
            "epoch_seconds": seconds, "elapsed_seconds": seconds + (metrics[-1]["elapsed_seconds"] if metrics else 0.0),
            "eval_seconds": time.perf_counter() - t0, "lr": result.lr, **measured}


def step_rows(result, epoch, steps_per_epoch, every):
    """steps.csv rows: the loss averaged over each --log-every steps, tagged with its last step."""
    first = epoch * steps_per_epoch
    return [(first + i + len(chunk), epoch + 1, chunk.mean().item())
            for i, chunk in zip(range(0, len(result.losses), every), result.losses.split(every))]


def checkpoint(trainer, epoch, tensors):
    """model.pt's content after `epoch` epochs (runs.checkpoint says what it holds)."""
    return runs.checkpoint(trainer.model, trainer.optimizer, trainer.ema, trainer.config, epoch, tensors)


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


# ---------------------------------------------------------------------------- a run

def train(config, resume_dir=None):
    """Run (or resume) one training run, its folder held against other writers; returns (run folder, summary)."""
    with contextlib.ExitStack() as held:
        return train_held(config, resume_dir, held)


def train_held(config, resume_dir, held):
    """train's work, the run folder's hold entered into held (an ExitStack)."""
    trainer, tensors, run_dir, metrics = set_up(config, resume_dir, held)
    x, y = tensors["train"]
    steps_per_epoch, say = math.ceil(len(y) / config["batch_size"]), printer(config)
    errors.catch_signals()  # SIGTERM too becomes KeyboardInterrupt, held back while an epoch is saved
    status, extra = "completed", {}
    try:
        for epoch in range(len(metrics), config["epochs"]):
            result, seconds = timed_epoch(trainer, x, y, epoch)
            steps = step_rows(result, epoch, steps_per_epoch, config["log_every"])
            if result.bad_step is not None:
                status, extra = "diverged", diverged(result, epoch, steps_per_epoch)
                with errors.critical():
                    runs.write_steps(run_dir / "steps.csv", steps, append=True)
                say(f"diverged: loss {extra['diverged_loss']} at epoch {epoch + 1}, step "
                    f"{extra['diverged_step']}; recorded in summary.json")
                break
            row = epoch_row(trainer, tensors, epoch, result, seconds, metrics)
            with errors.critical():  # a signal now must not leave an epoch half recorded
                runs.save_epoch(run_dir, row, steps, checkpoint(trainer, row["epoch"], tensors), metrics)
            say(epoch_line(row, config["epochs"]))
            if should_stop(metrics, config["patience"]):
                extra = {"stopped_early": True}
                say(f"early stop: validation accuracy has not improved for {config['patience']} epochs")
                break
    except KeyboardInterrupt:
        status, extra = "interrupted", {"resume": f"python train.py --resume {run_dir}"}
        print(f"\ninterrupted after epoch {len(metrics)}; continue with: python train.py --resume "
              f"{run_dir}", file=sys.stderr)
    if status == "completed" and metrics:  # where the run ended, once: an early stop is known only now
        extra.update(diagnostics.measure_end(trainer, tensors))
    with errors.critical():
        summary = runs.summarise(metrics, status, **extra)
        files.write_json(run_dir / "summary.json", summary)
    if status == "completed":
        say(f"done: test accuracy {summary.get('final_test_acc', 0):.2%} after {len(metrics)} epochs, "
            f"{summary['train_seconds']:.1f} s of training; {run_dir}")
    return run_dir, summary


def set_up(config, resume_dir, held):
    """Device, threads, data, model and run folder: (trainer, tensors, run folder, metrics so far)."""
    device = config["device"] = settings.resolve_device(config["device"])
    threads = config["threads"] or (1 if device == "cpu" and config["batch_size"] <= ONE_THREAD_UP_TO else None)
    if threads:
        torch.set_num_threads(threads)
    runs.check_out(config["out"])
    if resume_dir:  # held before the data loads: a second writer is stopped at once
        held.enter_context(claims.hold(resume_dir, check=runs.check_unfinished))
    data, tensors = dataloader.for_run(config, device)
    trainer = build_trainer(config, tensors, device)
    warm_up(config, tensors, device)
    if resume_dir:
        run_dir = Path(resume_dir)
        metrics = restore(run_dir, trainer)
    else:
        run_dir, metrics = runs.start(config, settings.run_key(config), data, tensors, held), []
    files.write_json(run_dir / "summary.json", runs.summarise(metrics, "running"))
    printer(config)(f"run folder: {run_dir}\ndevice: {device}, training on {len(tensors['train'][1])} images, "
                    f"{sum(p.numel() for p in trainer.model.parameters())} parameters")
    return trainer, tensors, run_dir, metrics


def printer(config):
    """Print a line between progress bars, or nothing with --quiet."""
    return (lambda *a: None) if config["quiet"] else tqdm.write


def restore(run_dir, trainer):
    """Load the last checkpoint of an interrupted run into the trainer; returns the metrics up to it."""
    return runs.restore(run_dir, trainer.model, trainer.optimizer, trainer.ema, trainer.config["device"])


# ---------------------------------------------------------------------------- the command

def train_once(config):
    """Train config unless --out already has a run with the same settings: wait while another
    process trains it, then reuse it if it finished or resume it if it did not."""
    runs.check_out(config["out"])
    key = settings.run_key(config)
    with claims.claim(config["out"], key):
        index = runs.index(config["out"])
        found, finished = index.get(key, []), runs.finished(index, key)
        if found and not finished:
            run_dir = found[-1][0]
            with claims.hold(run_dir, wait=True):  # a `train.py --resume` of it may be running: wait for it
                if runs.read_status(run_dir) not in runs.FINISHED:
                    return train(settings.resume_config(run_dir, config["device"], config["threads"], config["quiet"]), run_dir)[1]
            finished = [run_dir]
        if finished:
            print(f"already trained with these settings: {finished[-1]} (reused; without --once, "
                  f"train.py trains another copy)")
            return files.read_json(finished[-1] / "summary.json")
        return train(config)[1]


def main():
    parser = settings.build_parser()
    g = parser.add_argument_group("starting")
    g.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue an interrupted run from its folder (its saved settings are used, its "
                        "device too; --device, --threads and --quiet may be given)")
    g.add_argument("--once", action="store_true",
                   help="train only if --out has no run with the same settings: reuse a finished one, "
                        "resume an unfinished one, wait for one another process is training (sweeps use it)")
    args = parser.parse_args()
    if args.resume and args.once:
        raise UserError("--resume continues one given run; --once finds the run itself: give one of them")
    if args.resume:
        config = settings.resume_config(Path(args.resume), args.device, args.threads, args.quiet)
        summary = train(config, Path(args.resume))[1]
    elif args.once:
        summary = train_once(settings.make_config(args))
    else:
        summary = train(settings.make_config(args))[1]
    if summary["status"] == "interrupted":
        sys.exit(errors.INTERRUPTED)


if __name__ == "__main__":
    run_cli(main)
