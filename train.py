"""Train the MLP once and record the run in its own folder under <out>/runs/.

    python train.py                                  # the default run, CPU or CUDA picked automatically
    python train.py --batch-size 32 --activation tanh --loss mse --optimizer adam --lr 1e-3 --epochs 5
    python train.py --resume results/runs/<run>      # continue an interrupted run

The command line becomes one config dict, saved as config.json beside the metrics, so every run can be
rebuilt, resumed or replotted from its folder alone.
"""
import argparse
import contextlib
import math
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

import dataloader
import runs
from errors import UserError, run_cli
from model import INITS, MLP, NORMS, model_kwargs, parse_hidden
from registry import ACTIVATIONS, LOSS_NOTE, LOSSES, OPTIMIZERS, describe

SCHEDULES = ("constant", "step", "cosine")


# ---------------------------------------------------------------------------- command line

def _number(kind, ok, requirement):
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


POSITIVE_INT = _number(int, lambda v: v > 0, "positive")
POSITIVE = _number(float, lambda v: 0 < v < math.inf, "positive")
FRACTION = _number(float, lambda v: 0 <= v < 1, "in [0, 1)")
NON_NEGATIVE = _number(float, lambda v: 0 <= v < math.inf, ">= 0")


def build_parser(description=__doc__.split("\n")[0]):
    """The parser of every training setting; the sweep scripts reuse it for their base config."""
    # allow_abbrev=False: a mistyped flag such as --epoch must be an error, not silently --epochs.
    p = argparse.ArgumentParser(description=description, allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    dataloader.add_data_args(g)
    g.add_argument("--val-split", type=int, default=5000,
                   help="training images held out for validation (0: none)")
    g.add_argument("--normalize", default="standard", choices=list(dataloader.NORMALIZATIONS),
                   help="input scaling: " + describe({k: (v,) for k, v in dataloader.NORMALIZATIONS.items()}))
    g = p.add_argument_group("model")
    g.add_argument("--hidden", type=parse_hidden, default=[256, 128],
                   help="hidden layer widths, e.g. 256,128; '' for none (softmax regression)")
    g.add_argument("--activation", default="relu", choices=list(ACTIVATIONS),
                   help=describe(ACTIVATIONS))
    g.add_argument("--norm", default="none", choices=list(NORMS), help="normalisation after each hidden linear layer")
    g.add_argument("--dropout", type=FRACTION, default=0.0, help="dropout probability after each activation")
    g.add_argument("--init", default="default", choices=INITS,
                   help="weight init: PyTorch's default, xavier (Glorot), kaiming (He), or normal "
                        "with --init-mean and --init-std")
    g.add_argument("--init-mean", type=float, default=0.0, help="mean for --init normal")
    g.add_argument("--init-std", type=POSITIVE, default=0.01, help="std for --init normal")
    g = p.add_argument_group("training")
    g.add_argument("--loss", default="ce", choices=list(LOSSES), help=describe(LOSSES) + ". " + LOSS_NOTE)
    g.add_argument("--optimizer", default="momentum", choices=list(OPTIMIZERS), help=describe(OPTIMIZERS))
    g.add_argument("--lr", type=POSITIVE, default=None,
                   help="learning rate (default per optimizer: " +
                        ", ".join(f"{k} {v[1]['lr']:g}" for k, v in OPTIMIZERS.items()) + ")")
    g.add_argument("--momentum", type=FRACTION, default=None,
                   help="momentum, or beta1 for adam/adamw (default per optimizer)")
    g.add_argument("--weight-decay", type=NON_NEGATIVE, default=None,
                   help="L2 weight decay (default per optimizer: 0.01 for adamw, else 0)")
    g.add_argument("--schedule", default="cosine", choices=SCHEDULES,
                   help="learning-rate schedule per epoch: constant, step (times --gamma every "
                        "--step-size epochs) or cosine (to 0 at the last epoch)")
    g.add_argument("--step-size", type=POSITIVE_INT, default=5, help="epochs between steps of --schedule step")
    g.add_argument("--gamma", type=POSITIVE, default=0.1, help="factor of each step of --schedule step")
    g.add_argument("--batch-size", type=POSITIVE_INT, default=128,
                   help="samples per step, up to the training-set size (full-batch gradient descent)")
    g.add_argument("--epochs", type=POSITIVE_INT, default=12, help="passes over the training set")
    g.add_argument("--patience", type=int, default=0,
                   help="stop when validation accuracy has not improved for this many epochs (0: off)")
    g.add_argument("--seed", type=int, default=0, help="seed of the weights, data order and dropout")
    g.add_argument("--log-every", type=POSITIVE_INT, default=50,
                   help="steps averaged into each row of steps.csv")
    g = p.add_argument_group("system")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                   help="auto picks cuda, then mps, then cpu")
    g.add_argument("--threads", type=POSITIVE_INT, default=None, help="CPU threads for torch (default: torch's choice)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--out", default="results", help="results root; the run goes in <out>/runs/<name>/")
    g.add_argument("--name", default=None, help="run folder name (default: made from the settings)")
    g.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    g.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue an interrupted run from its folder (its saved settings are used; "
                        "--device, --threads and --quiet may be given)")
    return p


def config_from_args(args):
    """One flat config dict from parsed arguments, optimizer defaults filled in."""
    config = {k: v for k, v in vars(args).items() if k != "resume"}
    for key, value in OPTIMIZERS[config["optimizer"]][1].items():
        if config[key] is None:
            config[key] = value
    if config["patience"] < 0:
        raise UserError(f"--patience {config['patience']}: must be 0 (off) or positive")
    if config["patience"] and not config["val_split"]:
        raise UserError("--patience needs a validation set: give --val-split N with N > 0")
    config["format_version"] = runs.FORMAT_VERSION
    return config


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
        root = Path(__file__).resolve().parent
        info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                            text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


# ---------------------------------------------------------------------------- training

def sync(device):
    """Wait for queued device work, so that a clock read measures finished work."""
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def lr_at(config, epoch):
    """Learning rate for a 0-based epoch under the chosen schedule."""
    if config["schedule"] == "step":
        return config["lr"] * config["gamma"] ** (epoch // config["step_size"])
    if config["schedule"] == "cosine":
        return config["lr"] * 0.5 * (1 + math.cos(math.pi * epoch / config["epochs"]))
    return config["lr"]


def train_epoch(model, optimizer, loss_fn, x, y, config, epoch, progress):
    """One pass over (x, y). Returns (sum of sample losses, correct count, per-step losses, bad step).

    Losses and correct counts stay on the device until the epoch ends: no host sync per step, except
    a finiteness check every --log-every steps. bad_step is the 0-based step of the first non-finite
    loss, else None.
    """
    model.train()
    generator = torch.Generator().manual_seed(config["seed"] * 100_003 + epoch)
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    step_losses = []
    for xb, yb in dataloader.batches(x, y, config["batch_size"], generator):
        logits = model(xb)
        loss = loss_fn(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss = loss.detach()
        step_losses.append(loss)
        loss_sum += loss * len(yb)
        correct += (logits.argmax(1) == yb).sum()
        progress.update()
        if len(step_losses) % config["log_every"] == 0:
            recent = torch.stack(step_losses[-config["log_every"]:])
            if not torch.isfinite(recent).all():
                break
            progress.set_postfix(loss=f"{recent.mean().item():.4f}", refresh=False)
    losses = torch.stack(step_losses).cpu()
    finite = torch.isfinite(losses)
    bad_step = None if finite.all() else int((~finite).nonzero()[0])
    return loss_sum, correct, losses, bad_step


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


class _Interrupts:
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


def summarise(metrics, status, train_seconds, **extra):
    """summary.json's content from the epoch metrics so far."""
    summary = {"status": status, "epochs_completed": len(metrics), "train_seconds": train_seconds}
    if metrics:
        last = metrics[-1]
        best_test = max(metrics, key=lambda m: m["test_acc"])
        summary.update({
            "final_train_loss": last["train_loss"], "final_train_acc": last["train_acc"],
            "final_val_acc": last["val_acc"], "final_test_loss": last["test_loss"],
            "final_test_acc": last["test_acc"],
            "best_test_acc": best_test["test_acc"], "best_test_epoch": best_test["epoch"],
        })
        if last["val_acc"] is not None:
            best_val = max(metrics, key=lambda m: m["val_acc"])
            summary.update({"best_val_acc": best_val["val_acc"], "best_val_epoch": best_val["epoch"],
                            "test_acc_at_best_val": best_val["test_acc"]})
    summary.update(extra)
    return summary


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
    base = runs.run_name(config)
    for attempt in range(1000):  # mkdir is atomic: two runs started in the same second both get a folder
        run_dir = parent / (base if attempt == 0 else f"{base}-{attempt}")
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            continue
    raise UserError(f"{parent}: cannot find a free run folder name for {base}")


def _first_detail(error):
    """The first line of a load_state_dict error that names a layer (its first line only says
    'Error(s) in loading state_dict')."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[1:] or lines or [type(error).__name__])[0].rstrip(".")


def restore(run_dir, model, optimizer, config):
    """Load the last checkpoint of an interrupted run; trim logs written after it. Returns its epoch."""
    ckpt_path = run_dir / "model.pt"
    if not ckpt_path.exists():
        start = 0
    else:
        ckpt = runs.load_checkpoint(ckpt_path)
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise UserError(f"{ckpt_path}: does not match the run's config.json (another "
                            f"architecture?): {_first_detail(e)}; put back this run's model.pt or "
                            f"retrain the run") from None
        torch.set_rng_state(ckpt["rng"])
        if config["device"] == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"])
        start = ckpt["epoch"]
    metrics = [m for m in runs.read_jsonl(run_dir / "metrics.jsonl") if m["epoch"] <= start]
    if len(metrics) != start:
        raise UserError(f"{run_dir}: metrics.jsonl has {len(metrics)} epochs but the checkpoint is "
                        f"at epoch {start}; the folder is damaged, retrain the run")
    runs.write_jsonl(run_dir / "metrics.jsonl", metrics)
    runs.write_steps(run_dir / "steps.csv",
                     [s for s in runs.read_steps(run_dir / "steps.csv") if s[1] <= start])
    return start, metrics


def train(config, resume_dir=None):
    """Run (or resume) one training run as configured; returns (run folder, summary dict)."""
    device = config["device"] = resolve_device(config["device"])
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    check_out(config["out"])
    data = dataloader.load(config["dataset"], config["data_dir"], verify=not config["no_verify"])
    tensors = dataloader.prepare(data, config["val_split"], config["normalize"], device)
    train_x, train_y = tensors["train"]
    if config["batch_size"] > len(train_y):
        raise UserError(f"--batch-size {config['batch_size']} is larger than the training set "
                        f"({len(train_y)} images after --val-split {config['val_split']}); use at "
                        f"most {len(train_y)} for full-batch gradient descent")

    torch.manual_seed(config["seed"])
    model = MLP(**model_kwargs(config)).to(device)
    step_model = torch.compile(model) if config["compile"] else model
    optimizer = OPTIMIZERS[config["optimizer"]][0](
        list(model.parameters()), config["lr"], config["momentum"], config["weight_decay"])
    loss_fn = LOSSES[config["loss"]][0]

    if resume_dir:
        run_dir = Path(resume_dir)
        start, metrics = restore(run_dir, model, optimizer, config)
    else:
        run_dir, start, metrics = start_run(config), 0, []
        runs.write_json(run_dir / "config.json", {
            **config, "run_key": runs.run_key(config), "data_md5": data["md5"],
            "data_source": data["source"], "norm_mean": tensors["mean"], "norm_std": tensors["std"],
            "environment": environment(device), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        runs.write_steps(run_dir / "steps.csv", [])
    train_seconds = metrics[-1]["elapsed_seconds"] if metrics else 0.0
    runs.write_json(run_dir / "summary.json", summarise(metrics, "running", train_seconds))

    interrupts = _Interrupts()
    steps_per_epoch = math.ceil(len(train_y) / config["batch_size"])
    status, extra = "completed", {}
    say = (lambda *a: None) if config["quiet"] else tqdm.write
    say(f"run folder: {run_dir}\ndevice: {device}, training on {len(train_y)} images, "
        f"{sum(p.numel() for p in model.parameters())} parameters")
    try:
        for epoch in range(start, config["epochs"]):
            lr = lr_at(config, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{config['epochs']}",
                      leave=False, disable=config["quiet"]) as progress:
                sync(device)
                t0 = time.perf_counter()
                loss_sum, correct, losses, bad_step = train_epoch(
                    step_model, optimizer, loss_fn, train_x, train_y, config, epoch, progress)
                sync(device)
                epoch_seconds = time.perf_counter() - t0
            train_seconds += epoch_seconds
            first_step = epoch * steps_per_epoch
            # One row per --log-every steps (fewer at an epoch's end), tagged with its last step.
            rows = [(first_step + i + len(chunk), epoch + 1, chunk.mean().item())
                    for i, chunk in zip(range(0, len(losses), config["log_every"]),
                                        losses.split(config["log_every"]))]
            if bad_step is not None:
                status = "diverged"
                extra = {"diverged_epoch": epoch + 1, "diverged_step": first_step + bad_step + 1,
                         "diverged_loss": str(losses[bad_step].item())}
                with interrupts.critical():
                    runs.write_steps(run_dir / "steps.csv", rows, append=True)
                say(f"diverged: loss {extra['diverged_loss']} at epoch {epoch + 1}, step "
                    f"{extra['diverged_step']}; recorded in summary.json")
                break

            t0 = time.perf_counter()
            val_loss, val_acc = (evaluate(model, loss_fn, *tensors["val"]) if tensors["val"]
                                 else (None, None))
            test_loss, test_acc = evaluate(model, loss_fn, *tensors["test"])
            eval_seconds = time.perf_counter() - t0
            row = {"epoch": epoch + 1, "train_loss": loss_sum.item() / len(train_y),
                   "train_acc": correct.item() / len(train_y), "val_loss": val_loss,
                   "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc,
                   "epoch_seconds": epoch_seconds, "elapsed_seconds": train_seconds,
                   "eval_seconds": eval_seconds, "lr": lr}
            with interrupts.critical():
                # Inside the held-back block: a signal just before it must not count an epoch in
                # summary.json whose metrics and checkpoint are not on disk.
                metrics.append(row)
                runs.append_jsonl(run_dir / "metrics.jsonl", row)
                runs.write_steps(run_dir / "steps.csv", rows, append=True)
                runs.save_checkpoint(run_dir / "model.pt", {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "config": config, "epoch": epoch + 1, "rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state() if device == "cuda" else None,
                    "norm_mean": tensors["mean"], "norm_std": tensors["std"]})
                runs.write_json(run_dir / "summary.json", summarise(metrics, "running", train_seconds))
            val_text = f"  val acc {val_acc:.2%}" if val_acc is not None else ""
            say(f"epoch {epoch + 1:3d}/{config['epochs']}  train loss {row['train_loss']:.4f} "
                f"acc {row['train_acc']:.2%}{val_text}  test loss {test_loss:.4f} acc {test_acc:.2%}"
                f"  lr {lr:.3g}  {epoch_seconds:.2f} s (+{eval_seconds:.2f} s eval)")
            if config["patience"] and _should_stop(metrics, config["patience"]):
                extra = {"stopped_early": True}
                say(f"early stop: validation accuracy has not improved for {config['patience']} epochs")
                break
    except KeyboardInterrupt:
        status = "interrupted"
        extra = {"resume": f"python train.py --resume {run_dir}"}
        print(f"\ninterrupted after epoch {len(metrics)}; continue with: python train.py --resume "
              f"{run_dir}", file=sys.stderr)
    summary = summarise(metrics, status, train_seconds, **extra)
    runs.write_json(run_dir / "summary.json", summary)
    if status == "completed":
        say(f"done: test accuracy {summary.get('final_test_acc', 0):.2%} after "
            f"{summary['epochs_completed']} epochs, {train_seconds:.1f} s of training; {run_dir}")
    return run_dir, summary


def _should_stop(metrics, patience):
    best_epoch = max(metrics, key=lambda m: m["val_acc"])["epoch"]
    return metrics[-1]["epoch"] - best_epoch >= patience


def main():
    args = build_parser().parse_args()
    if args.resume:
        run_dir = Path(args.resume)
        config = runs.read_config(run_dir)
        status = runs.read_json(run_dir / "summary.json").get("status") if (run_dir / "summary.json").exists() else None
        if status in ("completed", "diverged"):
            raise UserError(f"{run_dir}: already {status}; nothing to resume")
        # The saved thread count stays unless overridden: another count sums in another order,
        # and the resumed metrics would no longer match an uninterrupted run's.
        config.update(device=args.device, threads=args.threads or config["threads"],
                      quiet=args.quiet)
        config = {k: config[k] for k in vars(args) if k != "resume"} | {"format_version": config["format_version"]}
    else:
        run_dir, config = None, config_from_args(args)
    _, summary = train(config, resume_dir=run_dir)
    if summary["status"] == "interrupted":
        sys.exit(130)


if __name__ == "__main__":
    run_cli(main)
