"""Time the project's training epoch against the common tutorial loop, in one process, side by side.

    python benchmarks/epoch_time.py                  # the full benchmark (about 4 minutes on 2 CPU cores)
    python benchmarks/epoch_time.py --quick --data-dir DIR --no-verify   # seconds; for the tests

The project's side is the real trainer: train.train_epoch on tensors from dataloader.prepare, with the
MLP, loss and optimizer from model.py and registry.py. The reference is the loop tutorials write:
torchvision's MNIST with ToTensor and Normalize, a DataLoader, the same 784-256-64-10 ReLU MLP, SGD with
momentum and cross-entropy. Each batch size trains at a learning rate at which it trains (not one that
collapses it: a collapsing network's time measures its numbers, not the loop), the rate that
batch_scaling.py chose for the nearest batch size it measured (results/batch_scaling/batch_scaling.csv),
for both loops alike. Both are timed alternately so that load from other processes hits both
alike; the table reports medians and ratios, and the rate of useful arithmetic against a float32
matrix-multiply peak measured in the same process with the same threads.

One-time device set-up is kept out of every figure as train.py keeps it out of epoch_seconds: each
runner's first epoch is an untimed warm-up, the time-to-accuracy run is train.train itself, and on a
GPU the device is started (its context created) before anything is timed, and timed apart.
"""
import argparse
import csv
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

try:
    import resource  # POSIX only: on Windows the peak memory line says it was not measured
except ImportError:
    resource = None

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import errors  # noqa: E402

if __name__ == "__main__":
    errors.handle_interrupts()  # before torch loads: Ctrl-C while importing ends with one line too

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision import datasets, transforms  # noqa: E402
from tqdm import tqdm  # noqa: E402

import dataloader  # noqa: E402
import runs  # noqa: E402
import settings  # noqa: E402
import train  # noqa: E402
from errors import run_cli  # noqa: E402
from model import MLP  # noqa: E402
from registry import OPTIMIZERS  # noqa: E402

HIDDEN = [256, 64]
OPTIMIZER = OPTIMIZERS["momentum"]  # momentum 0.9: the project's default, used by both loops
RATES = ROOT / "results" / "batch_scaling" / "batch_scaling.csv"  # each batch size's rate, shown to train
TARGET_ACC = 0.98


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    dataloader.add_data_args(p)
    p.add_argument("--batch-sizes", default="16,64,256,full",
                   help="comma-separated batch sizes; 'full' is the whole training set")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed repetitions per batch size after one warm-up; medians are reported")
    p.add_argument("--ref-fraction", type=float, default=0.25,
                   help="each timed reference run covers this fraction of an epoch (at least one step) "
                        "and is scaled to a whole epoch by its step count, to keep the run short")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--peak-size", type=int, default=2048, help="side of the square matrices of the matmul peak")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile comparison (slow to compile)")
    p.add_argument("--quick", action="store_true",
                   help="for tests on tiny data: one repeat, a small peak matmul, no compile comparison, "
                        "and a two-epoch time-to-accuracy run with a 100-image validation set")
    args = p.parse_args()
    if args.quick:
        args.repeats, args.peak_size, args.no_compile = 1, 256, True
    return args


def rates():
    """{batch size: learning rate} of the committed batch-scaling study, the rate that reached 97%
    validation accuracy in the fewest steps at each batch size it measured."""
    try:
        with RATES.open() as f:
            return {int(row["batch_size"]): float(row["lr"]) for row in csv.DictReader(f)}
    except (OSError, KeyError, ValueError) as e:
        raise errors.UserError(f"{RATES}: cannot read the batch sizes' learning rates ({e}); restore it with "
                               f"git checkout {RATES.relative_to(ROOT)}") from None


def rate_for(batch_size, known):
    """The rate of the nearest batch size in `known` (rates()), nearest on a log scale."""
    return known[min(known, key=lambda b: abs(math.log(b / batch_size)))]


def timed(fn, device):
    """Seconds fn() takes, with the device synchronised before and after so queued work is counted."""
    train.sync(device)
    t0 = time.perf_counter()
    fn()
    train.sync(device)
    return time.perf_counter() - t0


def start_device(device):
    """Seconds to start the device: on a GPU, its context, created by the first tensor put there. Timed
    apart, before either side's start-up, because the project's data load puts tensors on the device
    and the reference's does not, so only the project's would otherwise pay for it."""
    t0 = time.perf_counter()
    torch.zeros(1, device=device)
    train.sync(device)
    return time.perf_counter() - t0


def matmul_gflops(device, size):
    """GFLOP/s of one float32 size x size matrix product, the practical arithmetic peak of the device."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    torch.mm(a, b)  # the first call pays for allocation and library start-up
    seconds = statistics.median(timed(lambda: torch.mm(a, b), device) for _ in range(3))
    return 2 * size ** 3 / seconds / 1e9


def flops_per_epoch(model, samples):
    """Forward + backward multiply-adds of the linear layers over one epoch, 6 * N * sum(in * out)."""
    return 6 * samples * sum(m.in_features * m.out_features for m in model if isinstance(m, nn.Linear))


def peak_rss_mb():
    """The process's peak resident memory so far, in MiB (Linux reports KiB, macOS bytes); None where
    the platform has no getrusage (Windows)."""
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 1024


class Project:
    """The project's trainer: each call runs one epoch of train.train_epoch on the prepared tensors."""

    def __init__(self, tensors, batch_size, lr, device, compiled=False, part=None):
        argv = ["--hidden", ",".join(map(str, HIDDEN)), "--batch-size", str(batch_size), "--lr", str(lr),
                "--quiet", "--schedule", "constant"] + (["--compile"] if compiled else [])  # lr fixed, as the reference's
        config = {**settings.parse_config(argv), "device": device}
        self.trainer = train.build_trainer(config, tensors, device)
        self.x, self.y = (t[:part] for t in tensors["train"])
        self.epoch, self.loss = 0, None

    def __call__(self):
        with tqdm(disable=True) as progress:
            result = train.train_epoch(self.trainer, self.x, self.y, self.epoch, progress)
        self.epoch += 1
        self.loss = result.loss_sum.item() / len(self.y)  # after timing stops: shows the network trains


class Reference:
    """The common tutorial loop; each call runs `steps` steps from a fresh DataLoader iterator."""

    def __init__(self, dataset, batch_size, lr, steps, device):
        torch.manual_seed(0)
        self.model = MLP(hidden=HIDDEN, activation="relu").to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=OPTIMIZER.momentum)
        self.criterion = nn.CrossEntropyLoss()
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
        self.steps, self.device = steps, device

    def __call__(self):
        self.model.train()
        running_loss = 0.0
        for step, (images, labels) in enumerate(self.loader):
            if step == self.steps:
                break
            images = images.view(images.size(0), -1).to(self.device)
            labels = labels.to(self.device)
            self.optimizer.zero_grad()
            outputs = self.model(images)
            loss = self.criterion(outputs, labels)
            loss.backward()
            self.optimizer.step()
            running_loss += loss.item()
        return running_loss


def torchvision_root(data, folder):
    """Write the loaded data set where torchvision's MNIST looks for it, uncompressed as after a download."""
    raw = Path(folder) / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = dataloader.idx_bytes(data[f"{split}_x"], data[f"{split}_y"])
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(images)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(labels)
    return folder


def interleaved(runners, repeats, device, between=None):
    """Time each runner once as a warm-up, then `repeats` rounds of one run each, alternating.

    Returns (warm-up seconds per runner, list of timed seconds per runner). `between` runs before each
    round, e.g. to re-measure the matmul peak under the same load as the runners.
    """
    warm = [timed(run, device) for run in runners]
    times = [[] for _ in runners]
    for _ in range(repeats):
        if between:
            between()
        for run, bucket in zip(runners, times):
            bucket.append(timed(run, device))
    return warm, times


def with_threads(count, run):
    """run, made to set torch's CPU thread count to count first."""
    def threaded():
        torch.set_num_threads(count)
        run()
    return threaded


def time_to_accuracy(args, device, folder):
    """Train the default configuration of train.py; returns (its config, its per-epoch metrics)."""
    argv = ["--out", str(folder), "--quiet", "--device", device, "--dataset", args.dataset]
    argv += ["--data-dir", args.data_dir] if args.data_dir else []
    argv += ["--no-verify"] if args.no_verify else []
    argv += ["--threads", str(args.threads)] if args.threads else []
    argv += ["--epochs", "2", "--val-split", "100"] if args.quick else []
    config = settings.parse_config(argv)
    run_dir, _ = train.train(config)
    return config, runs.read_jsonl(run_dir / "metrics.jsonl")


def say(text):
    """Progress, on stderr, apart from the report."""
    print(text, file=sys.stderr, flush=True)


def load(args, device, folder):
    """Both sides' data, timed: the project's tensors, and torchvision's MNIST written into folder."""
    import_rss = peak_rss_mb()
    t0 = time.perf_counter()
    data = dataloader.load(args.dataset, args.data_dir, verify=not args.no_verify)
    tensors = dataloader.prepare(data, 0, "standard", device)
    train.sync(device)
    project_start, project_rss = time.perf_counter() - t0, peak_rss_mb()
    root = torchvision_root(data, Path(folder) / "torchvision")
    t0 = time.perf_counter()
    # The constants every MNIST tutorial copies: the training set's pixel mean and std.
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    reference_data = datasets.MNIST(str(root), train=True, transform=transform)
    reference_data[0]  # start-up includes the first decode, as the project's includes its conversion
    return {"tensors": tensors, "reference": reference_data, "n": tensors["train"][0].shape[0],
            "project_start": project_start, "reference_start": time.perf_counter() - t0,
            "import_rss": import_rss, "project_rss": project_rss}


class Row(NamedTuple):
    """One batch size's line of the table."""
    batch_size: int
    lr: float
    project: float      # s/epoch
    reference: float    # s/epoch
    scaled: bool        # reference timed over part of an epoch
    fraction: float     # of the matmul peak
    loss: float         # the project's training loss in its last epoch


def epoch_rows(args, setup, device, peaks):
    """Per batch size, a Row: the two sides alternating, the peak re-measured before each round."""
    n, rows = setup["n"], []
    flops = flops_per_epoch(MLP(hidden=HIDDEN), n)
    for bs in [n if s.strip() == "full" else min(int(s), n) for s in args.batch_sizes.split(",")]:
        steps_per_epoch = math.ceil(n / bs)
        ref_steps = min(steps_per_epoch, max(1, math.ceil(args.ref_fraction * steps_per_epoch)))
        say(f"batch size {bs}: project epochs and {ref_steps} of {steps_per_epoch} reference steps, alternating")
        lr = rate_for(bs, setup["rates"])
        runners = [Project(setup["tensors"], bs, lr, device), Reference(setup["reference"], bs, lr, ref_steps, device)]
        _, (project, reference) = interleaved(
            runners, args.repeats, device, between=lambda: peaks.append(matmul_gflops(device, args.peak_size)))
        # Each epoch against the peak measured just before it, so that both saw the same load.
        fraction = statistics.median(flops / seconds / 1e9 / round_peak
                                     for seconds, round_peak in zip(project, peaks[-args.repeats:]))
        rows.append(Row(bs, lr, statistics.median(project), statistics.median(reference) * steps_per_epoch / ref_steps,
                        ref_steps < steps_per_epoch, fraction, runners[0].loss))
    return rows


def thread_rows(args, setup, device, sizes, threads):
    """Per batch size: {thread count: s/epoch}, timed on part of the data (too many threads on a busy
    machine can cost whole epochs)."""
    counts, rows = sorted({threads, 1, 2}), []
    part = min(setup["n"], max(max(sizes), math.ceil(args.ref_fraction * setup["n"])))
    for bs in sizes:
        say(f"batch size {bs}: threads {counts}, alternating")
        lr = rate_for(bs, setup["rates"])
        runners = [with_threads(c, Project(setup["tensors"], bs, lr, device, part=part)) for c in counts]
        _, seconds = interleaved(runners, args.repeats, device)
        torch.set_num_threads(threads)
        rows.append((bs, {c: statistics.median(s) * setup["n"] / part for c, s in zip(counts, seconds)}))
    return rows, part


def compile_rows(args, setup, device, sizes):
    """Per batch size: (batch size, eager s/epoch, compiled s/epoch, seconds to compile)."""
    rows = []
    for bs in sizes:
        say(f"batch size {bs}: torch.compile against eager, alternating (the first compiled epoch compiles)")
        lr = rate_for(bs, setup["rates"])
        warm, (eager, compiled) = interleaved(
            [Project(setup["tensors"], bs, lr, device), Project(setup["tensors"], bs, lr, device, compiled=True)],
            args.repeats, device)
        rows.append((bs, statistics.median(eager), statistics.median(compiled), warm[1] - statistics.median(compiled)))
    return rows


def print_table(args, setup, device, rows, threads):
    """The epoch-time table and its notes."""
    n, flops = setup["n"], flops_per_epoch(MLP(hidden=HIDDEN), setup["n"])
    where = torch.cuda.get_device_name() if device == "cuda" else f"{device}, {threads} thread(s)"
    print(f"Epoch time, {n} training images, 784-{'-'.join(map(str, HIDDEN))}-10 ReLU MLP, SGD momentum, "
          f"cross-entropy ({where}; torch {torch.__version__})")
    print(f"Medians of {args.repeats} epochs after a warm-up epoch; project and reference alternate.\n")
    print("| batch size | lr | project s/epoch | reference s/epoch | reference / project | project GFLOP/s | "
          "of matmul peak | project train loss |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        p, r = row.project, row.reference
        label = f"{row.batch_size} (full)" if row.batch_size == n else str(row.batch_size)
        print(f"| {label} | {row.lr:g} | {p:.2f} | {r:.1f}{'*' if row.scaled else ''} | {r / p:.1f}x | "
              f"{flops / p / 1e9:.1f} | {row.fraction:.0%} | {row.loss:.3f} |")
    print(f"\nlr: each batch size's constant rate (momentum {OPTIMIZER.momentum}) for both loops, the rate "
          f"batch_scaling.py chose for the nearest batch size it measured ({RATES.relative_to(ROOT)}); "
          f"project train loss: the mean training loss of the project's last timed epoch (from "
          f"{math.log(10):.3f} at chance: the network trains).")
    if any(row.scaled for row in rows):
        print(f"\n* reference timed over {args.ref_fraction:g} of an epoch (at least one step) from a fresh "
              f"DataLoader iterator and scaled to a whole epoch by its number of steps.")
    print(f"\nWork: {flops / 1e9:.1f} GFLOP per epoch, counted as 6 * N * sum(in * out) over the linear layers "
          f"(forward + backward; biases, activations and the loss not counted).")


def print_notes(args, setup, device, peaks, extras):
    """The lines under the table: peak, start-up, memory, threads, compile, time to accuracy."""
    peak = statistics.median(peaks)
    print(f"Matmul peak: {peak:.1f} GFLOP/s (median of {len(peaks)} measurements of a float32 "
          f"{args.peak_size}x{args.peak_size} torch.mm, one before each round, spread {min(peaks):.1f}-"
          f"{max(peaks):.1f}; on a busy machine it moves with the load, as the epochs do).")
    print("Of matmul peak: median over the rounds of each project epoch's GFLOP/s over the peak measured just "
          "before it.")
    started = f"; starting the {device} device, before both, {setup['device_start']:.2f} s" if device != "cpu" else ""
    print(f"Start-up (reading the data into memory): project {setup['project_start']:.2f} s (gzip IDX -> "
          f"normalised float tensor on {device}); torchvision MNIST {setup['reference_start']:.2f} s (from "
          f"uncompressed raw files){started}.")
    memory = "Peak memory: max RSS not measured (this platform has no getrusage)"
    if resource:
        memory = (f"Peak memory (max RSS): {setup['import_rss']:.0f} MiB after importing torch, "
                  f"{setup['project_rss']:.0f} MiB after the project's data load, {peak_rss_mb():.0f} MiB for "
                  f"the whole benchmark process")
    if device == "cuda":
        memory += f"; CUDA max allocated {torch.cuda.max_memory_allocated() / 2 ** 20:.0f} MiB"
    print(memory + ".")
    for line in extras:
        print(line)


def thread_lines(rows, part, threads, torch_default):
    return [f"Threads at batch size {bs}: " + ", ".join(
        f"{c} thread{'s' * (c > 1)} {s:.2f} s/epoch ({s / by_count[threads]:.2f}x)" for c, s in by_count.items())
        + f"; times relative to this run's {threads}, torch's default here is {torch_default}, timed over "
          f"the first {part} images and scaled to an epoch." for bs, by_count in rows]


def compile_lines(rows):
    # The first compiled epoch minus a compiled epoch; with torch's on-disk cache warm from an earlier run
    # it is within the noise of one epoch.
    return [f"torch.compile at batch size {bs}: eager {eager:.2f} s, compiled {compiled:.2f} s per epoch "
            f"({eager / compiled:.2f}x speed-up), "
            f"{f'about {cost:.0f} s to compile' if cost >= 1 else 'under 1 s to compile (cache warm)'}."
            for bs, eager, compiled, cost in rows]


def accuracy_line(config, metrics):
    reached = next((m for m in metrics if m["test_acc"] >= TARGET_ACC), None)
    setting = (f"batch size {config['batch_size']}, hidden {','.join(map(str, config['hidden']))}, "
               f"{config['optimizer']} lr {config['lr']:g}, {config['schedule']} schedule")
    if reached:
        return (f"Time to {TARGET_ACC:.0%} test accuracy, train.py defaults ({setting}): "
                f"{reached['elapsed_seconds']:.1f} s of training (evaluation excluded), at epoch "
                f"{reached['epoch']} of {len(metrics)}.")
    return (f"Time to {TARGET_ACC:.0%} test accuracy, train.py defaults ({setting}): not reached in "
            f"{len(metrics)} epochs ({sum(m['epoch_seconds'] for m in metrics):.1f} s); best "
            f"{max(m['test_acc'] for m in metrics):.2%}.")


def main():
    args = parse_args()
    device = settings.resolve_device(args.device)
    torch_default = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        device_start = start_device(device)
        setup = {**load(args, device, tmp), "device_start": device_start, "rates": rates()}
        peaks = [matmul_gflops(device, args.peak_size)]
        rows = epoch_rows(args, setup, device, peaks)
        sizes = [bs for bs in (16, 32, 64, 128, 256) if bs <= setup["n"]] or [rows[0].batch_size]
        extras = []
        if device == "cpu":  # small batches too: there one thread may beat two
            extras += thread_lines(*thread_rows(args, setup, device, sizes, threads), threads, torch_default)
        if not args.no_compile:
            extras += compile_lines(compile_rows(args, setup, device, [bs for bs in sizes if bs in (64, 256)] or sizes))
        say("time to accuracy: training train.py's default configuration")
        extras.append(accuracy_line(*time_to_accuracy(args, device, Path(tmp) / "runs")))
        print_table(args, setup, device, rows, threads)
        print_notes(args, setup, device, peaks, extras)


if __name__ == "__main__":
    run_cli(main)
