"""Run folders: their format, starting one, and reading it back.

A run is a folder <out>/runs/<name>/ holding
  config.json    every setting, the versions, the data checksum (written once, at the start)
  metrics.jsonl  one JSON object per finished epoch
  steps.csv      the training loss averaged over every few steps
  summary.json   status (running, completed, diverged, interrupted, failed) and the final figures
  model.pt       weights, optimizer and random state (CPU and device) of the last finished epoch
A run of the batch-scaling study (batch_scaling.py) shares <out>/runs/ with another layout: config.json
(with a "study" entry: its target, step budget and evaluation growth, which its run key includes),
evals.csv (step, seconds, train_loss, val_loss, val_acc at each evaluation) and summary.json (status,
reached, steps, seconds, best_val_acc, test_acc, ...), with no metrics.jsonl, steps.csv or model.pt.
Plots and tables read only these files; <out>/runs/.claims/ holds the locks of the processes writing
them (claims.py). Every file is written whole or not at all (files.py).

This module is the format of that folder: starting one, what a checkpoint holds, trimming the logs back
to a checkpoint for a resume, the summary; train.py fills it, tables and plots read it.
"""
import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import torch

import claims
import errors
import files
from errors import UserError

FORMAT_VERSION = 2
read_jsonl = files.read_jsonl  # metrics.jsonl's reader, as benchmarks/epoch_time.py calls it
FINISHED = ("completed", "diverged")
ROOT = Path(__file__).resolve().parent


def save_checkpoint(path, checkpoint):
    """torch.save a checkpoint dict, atomically."""
    def write(tmp):
        # Through a Python file, whose failed write raises an OSError with its errno (ENOSPC...); torch
        # then fails to close its zip and raises a RuntimeError of its own, which would hide the cause.
        with open(tmp, "wb") as f:
            try:
                torch.save(checkpoint, f)
            except RuntimeError as e:
                if isinstance(e.__context__, OSError):
                    raise e.__context__ from None
                raise
    files.write_atomic(path, write)


def write_steps(path, rows, append=False):
    """Write (step, epoch, loss) rows to steps.csv: atomically anew, or appended."""
    lines = "".join(f"{step},{epoch},{loss!r}\n" for step, epoch, loss in rows)
    if append:
        files.append_text(path, lines)
    else:
        files.write_atomic(path, lambda tmp: files.write_text(tmp, "step,epoch,loss\n" + lines))


def read_steps(path):
    """Read steps.csv as a list of (step, epoch, loss); a truncated last line is skipped."""
    rows = []
    path = Path(path)
    if not path.exists():
        return rows
    lines = path.read_text().splitlines()[1:]
    for number, line in enumerate(lines, 2):
        try:
            step, epoch, loss = line.split(",")
            rows.append((int(step), int(epoch), float(loss)))
        except ValueError:
            if number == len(lines) + 1:
                warnings.warn(f"{path}: last line {number} is truncated; ignored")
            else:
                raise UserError(f"{path}, line {number}: not step,epoch,loss") from None
    return rows


def digest(settings):
    """A short hash of a dict of settings: a run's identity (settings.run_key says which settings)."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


def run_name(config, key):
    """A folder name telling the main settings, the run key, and a host/time suffix so that two
    machines writing to one results folder never pick the same name."""
    hidden = "x".join(map(str, config["hidden"])) or "linear"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return (f"{config['dataset']}-h{hidden}-{config['activation']}-{config['loss']}-"
            f"{config['optimizer']}-lr{config['lr']:g}-bs{config['batch_size']}-s{config['seed']}-"
            f"{key}-{stamp}-{claims.host()}-{os.getpid()}")


def read_config(run_dir):
    """Read a run's config.json, checking that it is a run folder of a format this code reads."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise UserError(f"{run_dir}: not a run folder (no config.json); run folders are in "
                        f"results/runs/")
    return check_format(files.read_json(run_dir / "config.json"), run_dir)


def check_format(config, where):
    """Return config if it was written in the run format this code reads, else a UserError."""
    version = config.get("format_version") if isinstance(config, dict) else None
    if version != FORMAT_VERSION:
        raise UserError(f"{where}: written in run format {version}, this version reads format "
                        f"{FORMAT_VERSION}; retrain it (sweeps: --force)")
    return config


def read_summary(run_dir):
    """A run's summary.json, or {"status": "unknown"} before the run has written one."""
    path = Path(run_dir) / "summary.json"
    return files.read_json(path) if path.exists() else {"status": "unknown"}


def read_status(run_dir):
    """A run's status: running, completed, diverged, interrupted, or unknown."""
    return read_summary(run_dir).get("status")


def check_unfinished(run_dir):
    """A UserError unless the run can be resumed: completed and diverged runs are finished."""
    status = read_status(run_dir)
    if status in FINISHED:
        raise UserError(f"{run_dir}: already {status}; nothing to resume")


class Run(NamedTuple):
    """A run folder read back whole (read_run)."""
    dir: Path
    config: dict       # config.json
    metrics: list      # metrics.jsonl: one row per finished epoch
    summary: dict      # summary.json, whose keys summarise names; {"status": "unknown"} before it is written
    steps: list        # steps.csv: (step, epoch, loss)

    @property
    def status(self):
        """running, completed, diverged, interrupted, failed, or unknown."""
        return self.summary.get("status")

    @property
    def completed(self):
        """Whether the run completed (not diverged, interrupted, failed or still running)."""
        return self.status == "completed"

    def final(self, key):
        """The last epoch's figure `key` of the summary (its final_<key>), e.g. final("test_acc")."""
        return self.summary[f"final_{key}"]


def read_run(run_dir):
    """Read a whole run folder as a Run."""
    run_dir = Path(run_dir)
    return Run(run_dir, read_config(run_dir), files.read_jsonl(run_dir / "metrics.jsonl"), read_summary(run_dir),
               read_steps(run_dir / "steps.csv"))


def find_runs(out):
    """All run folders under <out>/runs, oldest first (folders that are not runs are skipped)."""
    runs_dir = Path(out) / "runs"
    if not runs_dir.is_dir():
        return []
    return sorted((p for p in runs_dir.iterdir() if (p / "config.json").is_file()),
                  key=lambda p: p.stat().st_mtime)


def scan(out):
    """Yield (run folder, config, summary) for each run folder under out in the current format."""
    for run_dir in find_runs(out):
        try:
            config = read_config(run_dir)
        except UserError:
            continue  # another format or damaged: it can never match a key computed now
        yield run_dir, config, read_summary(run_dir)


def index(out):
    """run_key -> [(run folder, status)], oldest first by start time."""
    found = {}
    for run_dir, config, summary in scan(out):
        found.setdefault(config.get("run_key"), []).append(
            (config.get("started", ""), run_dir, summary.get("status")))
    return {key: [(d, s) for _, d, s in sorted(rows)] for key, rows in found.items()}


def finished(by_key, key):
    """The finished (completed or diverged) run folders of key in by_key, an index(), oldest first."""
    return [run_dir for run_dir, status in by_key.get(key, []) if status in FINISHED]


# ---------------------------------------------------------------------------- writing a run

def check_out(out):
    """Make sure <out>/runs can be written before any work is done."""
    runs_dir = Path(out) / "runs"
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        # A probe of this process's own: a sweep's --jobs start runs together, and with one shared name
        # a run removing its probe could remove another's before that one did.
        with tempfile.NamedTemporaryFile(dir=runs_dir, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UserError(f"--out {out}: cannot write there ({e.strerror}); choose a writable folder "
                        f"with --out") from None


def environment(device):
    """Versions and the git commit, saved with the config so a run can be repeated."""
    info = {"torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "threads": torch.get_num_threads(),
            "device_name": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
            # What the CPU did with subnormal floats here (settings.flush_subnormals): a float32 1e-40
            # stored as zero means flushed.
            "subnormals_flushed": torch.tensor(1e-40).item() == 0.0}
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                            text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def start(config, key, data, tensors, held):
    """Create a new run folder, held by this process until held (an ExitStack) closes, and write its
    config.json (every setting, the run key, the data's checksums, the normalisation, the environment)
    and an empty steps.csv; returns its path."""
    run_dir = _new_folder(config, key)
    held.enter_context(claims.hold(run_dir))  # before config.json: a folder without one is no run to resume
    try:
        files.write_json(run_dir / "config.json", {
            **config, "run_key": key, "data_md5": data["md5"], "data_source": data["source"],
            "norm_mean": tensors["mean"], "norm_std": tensors["std"], "environment": environment(config["device"]),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        write_steps(run_dir / "steps.csv", [])
    except OSError:
        shutil.rmtree(run_dir, ignore_errors=True)  # a folder that holds no run, only in the way
        raise
    return run_dir


def _new_folder(config, key):
    """Make the folder of a new run: <out>/runs/<--name>, or a name made from the settings."""
    parent = Path(config["out"]) / "runs"
    if config["name"]:
        run_dir = parent / config["name"]
        if run_dir.exists():
            raise UserError(f"{run_dir} already exists; pick another --name, or continue it with "
                            f"--resume {run_dir}")
        run_dir.mkdir(parents=True)
        return run_dir
    base = run_name(config, key)
    for attempt in range(1000):  # mkdir is atomic: two runs started in the same second both get a folder
        run_dir = parent / (base if attempt == 0 else f"{base}-{attempt}")
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            continue
    raise UserError(f"{parent}: cannot find a free run folder name for {base}")


# Dropout and VAT draw from the generator of the device they run on, which is not the CPU's: each
# accelerator's torch module holds its own (get_rng_state, set_rng_state).
DEVICE_RNG = {"cuda": torch.cuda, "mps": torch.mps}


def rng_state(device):
    """The random state a run on `device` draws from: {"rng": the CPU's, "cuda_rng", "mps_rng"}, the
    state of a device not in use None."""
    return {"rng": torch.get_rng_state(),
            **{f"{name}_rng": rng.get_rng_state() if name == device else None for name, rng in DEVICE_RNG.items()}}


def set_rng_state(state, device):
    """Put back a state from rng_state: the CPU's, and that of `device` where it was saved."""
    torch.set_rng_state(state["rng"])
    if state.get(f"{device}_rng") is not None:
        DEVICE_RNG[device].set_rng_state(state[f"{device}_rng"])


@contextlib.contextmanager
def rng_kept(device):
    """Random draws made inside leave the random state of the CPU and of `device` as they found it."""
    state = rng_state(device)
    try:
        yield
    finally:
        set_rng_state(state, device)


def checkpoint(model, optimizer, ema, config, epoch, tensors):
    """model.pt's content: weights (and averaged weights), optimizer and random state after `epoch`
    epochs, the config and the normalisation test.py needs."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "ema_model": ema.state_dict() if ema is not None else None,
            "config": config, "epoch": epoch, **rng_state(config["device"]),
            "norm_mean": tensors["mean"], "norm_std": tensors["std"]}


def save_epoch(run_dir, row, steps, ckpt, metrics):
    """Record a finished epoch in the run folder (metrics, step losses, checkpoint, then the summary)
    and in metrics. A write that fails (a full disk, a quota, an I/O error) ends the run at the last
    saved epoch: the logs are cut back to it, summary.json says so, and a WriteFailed says what to do."""
    sizes = {path: path.stat().st_size if path.exists() else 0
             for path in (run_dir / "metrics.jsonl", run_dir / "steps.csv")}
    try:
        files.append_jsonl(run_dir / "metrics.jsonl", row)
        write_steps(run_dir / "steps.csv", steps, append=True)
        save_checkpoint(run_dir / "model.pt", ckpt)
    except OSError as e:
        for path, size in sizes.items():
            if path.exists():
                os.truncate(path, size)  # no line may stay of an epoch whose checkpoint was not saved
        raise _stopped(run_dir, metrics, e) from None
    metrics.append(row)
    try:
        files.write_json(run_dir / "summary.json", summarise(metrics, "running"))
    except OSError as e:
        raise _stopped(run_dir, metrics, e) from None


def _stopped(run_dir, metrics, error):
    """The WriteFailed that ends a run after the OSError of a failed write, once summary.json says
    where the run stopped, why, and how to continue it (where summary.json can still be written)."""
    resume = f"python train.py --resume {run_dir}"
    try:
        files.write_json(run_dir / "summary.json",
                   summarise(metrics, "failed", error=errors.describe(error), resume=resume))
        noted = "summary.json says so"
    except OSError:
        noted = "summary.json could not be updated either and may still say running"
    where = f"after epoch {len(metrics)}" if metrics else "before its first epoch was saved"
    return errors.WriteFailed(f"{errors.describe(error)}; the run stopped {where} ({noted}); once that is "
                              f"fixed, continue it with: {resume}")


def trim_to(run_dir, epoch):
    """Cut metrics.jsonl and steps.csv back to the checkpoint's epoch (a resume starts there); returns
    the metrics kept."""
    metrics = [m for m in files.read_jsonl(run_dir / "metrics.jsonl") if m["epoch"] <= epoch]
    if len(metrics) != epoch:
        raise UserError(f"{run_dir}: metrics.jsonl has {len(metrics)} epochs but the checkpoint is "
                        f"at epoch {epoch}; the folder is damaged, retrain the run")
    files.write_jsonl(run_dir / "metrics.jsonl", metrics)
    write_steps(run_dir / "steps.csv", [s for s in read_steps(run_dir / "steps.csv") if s[1] <= epoch])
    return metrics


def restore(run_dir, model, optimizer, ema, device):
    """Load the last checkpoint of an interrupted run into the model, optimizer, moving average and
    random state (of the CPU and of `device`), and trim the logs written after it; returns the metrics
    up to the checkpoint."""
    ckpt_path, epoch = run_dir / "model.pt", 0
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if ema is not None:
                ema.load_state_dict(ckpt["ema_model"])
        except (KeyError, RuntimeError, ValueError, AttributeError) as e:
            raise UserError(f"{ckpt_path}: does not match the run's config.json (another "
                            f"architecture?): {_first_detail(e)}; put back this run's model.pt or "
                            f"retrain the run") from None
        set_rng_state(ckpt, device)
        epoch = ckpt["epoch"]
    return trim_to(run_dir, epoch)


def _first_detail(error):
    """The first line of a load_state_dict error that names a layer (its first line only says
    'Error(s) in loading state_dict')."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[1:] or lines or [type(error).__name__])[0].rstrip(".")


def summarise(metrics, status, **extra):
    """summary.json's content:
      status, epochs_completed, train_seconds (the last epoch's elapsed_seconds, 0.0 before one);
      final_<key> for each key of the last epoch row but epoch, the timings and init_*: final_train_loss,
        final_train_acc, final_val_loss, final_val_acc, final_test_loss, final_test_acc, final_lr and each
        diagnostic the row holds (final_grad_norms, ...), read back by Run.final(key);
      init_<key> of the first row (measured before epoch 1);
      best_test_acc, best_test_epoch; with validation, best_val_acc, best_val_epoch, test_acc_at_best_val;
      and `extra`: train.py's diverged_epoch, diverged_step, diverged_loss, stopped_early; resume; error;
        with --end-sharpness, end_sharpness and end_sharpness_iterations (diagnostics.measure_end)."""
    summary = {"status": status, "epochs_completed": len(metrics),
               "train_seconds": metrics[-1]["elapsed_seconds"] if metrics else 0.0}
    if metrics:
        summary.update({f"final_{k}": v for k, v in metrics[-1].items() if k != "epoch" and "seconds" not in k
                        and not k.startswith("init_")})
        summary.update({k: v for k, v in metrics[0].items() if k.startswith("init_")})  # measured before epoch 1
        best_test = max(metrics, key=lambda m: m["test_acc"])
        summary.update(best_test_acc=best_test["test_acc"], best_test_epoch=best_test["epoch"])
        if metrics[-1]["val_acc"] is not None:
            best_val = max(metrics, key=lambda m: m["val_acc"])
            summary.update(best_val_acc=best_val["val_acc"], best_val_epoch=best_val["epoch"],
                           test_acc_at_best_val=best_val["test_acc"])
    return {**summary, **extra}


def load_checkpoint(path):
    """Load model.pt safely (weights_only: nothing in it is executed)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: missing; the run has not finished an epoch") from None
    except Exception as e:  # pickle, zip and weights-only errors all mean a damaged or foreign file
        if "Weights only load failed" in str(e):
            # torch's own text goes on to explain how to load the file unsafely: not advice to give
            # about a file found in a results folder.
            raise UserError(f"{path}: not a checkpoint this code can load: it holds Python objects, "
                            f"not only weights, and loading them could run code; use a model.pt "
                            f"written by train.py, or retrain the run") from None
        raise UserError(f"{path}: not a checkpoint this code can load ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''})") from None
