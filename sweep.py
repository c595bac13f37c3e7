"""Vary training settings over several values and seeds: train what is missing, then table and plot.

    python sweep.py lr 0.003 0.01 0.03 0.1 0.3              # any train.py setting, same outputs
    python sweep.py hidden 128 256,128 --seeds 2 --epochs 5
    python sweep.py --grid activation=relu,sigmoid,tanh loss=ce,mse,bce --hidden 128 --sweep-name act_loss_h128
    python sweep.py --variants "full=" "no dropout=--dropout 0" @recipes/mnist.args --sweep-name ablation
    python sweep.py lr 0.01 0.1 --print-commands            # one train.py line per missing run
    python sweep.py lr 0.01 0.1 --plot-only                 # replot from the run folders alone

A sweep is a list of values, each a label and the settings it changes (one flag, a grid cell, a named
variant, or a coupled pair such as a batch size with its scaled learning rate), repeated over seeds and,
with --tune-lr, over learning rates of which the validation set picks one per value. Every run is one
`python train.py ... --once --quiet` subprocess: a finished run with the same settings is reused, an
unfinished one resumed, one being trained by another process waited for. Runs go in the order
seed by seed (every value's first seed, then every value's second), so a slow spell of the host does not
land on one value. Tables and plots go to <out>/<sweep>/, an index of all runs to <out>/runs.csv.
"""
import errors

if __name__ == "__main__":
    errors.handle_interrupts()  # before torch loads: Ctrl-C while importing ends with one line too

import concurrent.futures
import math
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import plots
import runs
import settings
import tables
import timing
from errors import UserError, run_cli

ROOT = Path(__file__).resolve().parent
SWEPT_SCOPES = (settings.RUN, settings.SEED, settings.SYSTEM)  # the train.py settings a sweep accepts
LR_SCALINGS = {"linear": lambda ratio: ratio, "sqrt": math.sqrt}  # lr factor from batch / base batch
# The four sweep scripts try each value at these multiples of its learning rate and keep, per value, the
# one with the best validation accuracy: a comparison at one shared learning rate measures that rate.
TUNE = "0.3,1,3"


# ---------------------------------------------------------------------------- records

class Point(NamedTuple):
    """One value of a sweep."""
    label: str         # how the value is shown in tables and legends
    settings: dict     # the train.py settings it changes, by name
    coords: tuple = ()  # its (row, column) labels in a grid


class Sweep(NamedTuple):
    """A parsed sweep command: what to train, and how to name and table it."""
    name: str          # output folder <out>/<name>/ and file prefix
    base: dict         # train.py's settings, as given to the sweep
    points: list       # the values
    column: str        # the table column naming the values
    factors: list      # learning-rate factors tried per value ([1.0]: no tuning)
    seeds: list        # the seeds every value is trained with
    lr_scaling: str    # how a swept batch size scales the learning rate
    target: float      # test accuracy of the time-to-accuracy columns


class Job(NamedTuple):
    """One train.py run of a sweep."""
    point: Point
    factor: float      # its learning rate over the value's own
    seed: int
    config: dict       # exactly what train.py will run
    key: str           # settings.run_key(config)
    argv: list         # the train.py flags that give config


class Candidate(NamedTuple):
    """One value at one learning rate, over seeds. The value's chosen candidate also holds the others
    it was chosen from, in options."""
    point: Point
    factor: float
    config: dict       # the first seed's config
    runs: list         # runs.read_run of each seed's run, None where it is missing
    seeds: list
    options: tuple = ()

    @property
    def label(self):
        return self.point.label

    @property
    def lr(self):
        return self.config["lr"]

    @property
    def key(self):
        """The run key of the first seed's run: names these settings in the timing pass."""
        return settings.run_key(self.config)

    @property
    def val_score(self):
        """Mean final validation accuracy over seeds, a seed that did not complete counting as 0;
        None while none of its runs exists."""
        if not any(self.runs):
            return None
        return statistics.mean((r["summary"]["final_val_acc"] or 0.0) if r and r["summary"].get("status") == "completed"
                               else 0.0 for r in self.runs)


# ---------------------------------------------------------------------------- command line

def build_parser(description=__doc__.split("\n")[0], setting=None, values=None, lr_scaling="none",
                 tune="1"):
    """train.py's settings (the base configuration) plus the sweep's own options. With `setting` the
    values come from --values (default `values`); without it, from the command line."""
    p = settings.build_parser(SWEPT_SCOPES, description)
    p.epilog = ("Base configuration: train.py's settings as listed above (their defaults unless given); "
                "every run differs from it only in the swept settings, the learning rate where tuned, and "
                "--seed. Outputs go to <out>/<sweep>/, run folders to <out>/runs/, an index to <out>/runs.csv.")
    g = p.add_argument_group("sweep")
    if setting:
        g.add_argument("--values", default=",".join(map(str, values)),
                       help=f"comma-separated values of --{setting.replace('_', '-')}")
    else:
        g.add_argument("setting", nargs="?", help="train.py setting to vary, e.g. lr or batch-size")
        g.add_argument("values", nargs="*", help="its values, e.g. 0.01 0.1 (hidden layers: 256,128)")
        g.add_argument("--grid", nargs=2, metavar="SETTING=V1,V2",
                       help="vary two settings together, e.g. activation=relu,tanh loss=ce,mse")
        g.add_argument("--variants", nargs="+", metavar="'LABEL=FLAGS'",
                       help="named values that each set any train.py flags, e.g. 'no dropout=--dropout 0'")
    if setting in (None, "batch_size"):
        g.add_argument("--lr-scaling", default=lr_scaling, choices=["none", *LR_SCALINGS],
                       help="where the batch size varies, scale the learning rate with it, relative to "
                            "the base batch size: linearly, by the square root, or not at all")
    g.add_argument("--tune-lr", default=tune, metavar="FACTORS",
                   help="learning-rate factors tried for each value, e.g. 0.3,1,3; per value the factor "
                        "with the best mean validation accuracy over seeds is kept (1: no tuning)")
    g.add_argument("--seeds", type=settings.POSITIVE_INT, default=3, help="seeds per value: --seed, --seed+1, ...")
    g.add_argument("--jobs", type=settings.POSITIVE_INT, default=1,
                   help="runs trained at once, each with --threads cores/jobs")
    g.add_argument("--force", action="store_true", help="retrain even finished runs")
    g.add_argument("--plot-only", action="store_true",
                   help="train and time nothing; table and plot the saved runs and timings")
    g.add_argument("--retime", action="store_true",
                   help="train nothing; measure the seconds per epoch of every value again, then plot")
    g.add_argument("--print-commands", action="store_true",
                   help="print one train.py command per missing or unfinished run, and train nothing")
    g.add_argument("--target", type=settings.FRACTION, default=0.97,
                   help="test accuracy (fraction) for the time-to-accuracy columns")
    g.add_argument("--sweep-name", default=None,
                   help="output folder <out>/<sweep-name>/ and file prefix (default: the settings' names)")
    return p


def parse_cli(argv=None, setting=None, values=None, description=None, lr_scaling="none", tune="1"):
    """Parse a sweep command line into (the sweep, the command's options)."""
    args = build_parser(description or __doc__.split("\n")[0], setting, values, lr_scaling, tune).parse_args(argv)
    base = {s.dest: getattr(args, s.dest) if s.scope in SWEPT_SCOPES else s.default for s in settings.SETTINGS}
    if setting:
        axes = [(setting, [v.strip() for v in args.values.split(",") if v.strip()])]
    else:
        axes = _axes(args)
    points = variant_points(args.variants) if not setting and args.variants else cross(axes)
    scaling = getattr(args, "lr_scaling", "none")
    if scaling != "none":
        points = scale_lr(points, base, scaling)
    factors = _factors(args.tune_lr)
    if len(factors) > 1 and not base["val_split"]:
        raise UserError("--tune-lr chooses on the validation set: give --val-split N with N > 0")
    name = args.sweep_name or ("variants" if not axes else "_x_".join(_dest(n) for n, _ in axes))
    column = " / ".join(_dest(n) for n, _ in axes) or "variant"
    seeds = list(range(base["seed"], base["seed"] + args.seeds))
    return Sweep(name, base, points, column, factors, seeds, scaling, args.target), args


def _axes(args):
    """The (setting, value texts) axes of a generic sweep; none for --variants."""
    given = [bool(args.setting), bool(args.grid), bool(args.variants)]
    if sum(given) > 1:
        raise UserError("give one of: a setting with values, --grid, or --variants (not both)")
    if args.grid:
        return [_grid_axis(text) for text in args.grid]
    if args.setting:
        return [(args.setting, args.values)]
    if args.variants:
        return []
    raise UserError("say what to vary, e.g. python sweep.py lr 0.01 0.1, or "
                    "--grid activation=relu,tanh loss=ce,mse, or --variants 'A=--dropout 0' 'B=--dropout 0.5'")


def _grid_axis(text):
    name, sep, values = text.partition("=")
    if not sep:
        raise UserError(f"--grid {text!r}: expected SETTING=V1,V2,... e.g. activation=relu,tanh")
    return name, [v.strip() for v in values.split(",") if v.strip()]


def _dest(name):
    """The setting a sweep may vary, from a name such as lr, --lr, batch_size or batch-size."""
    dest = name.lstrip("-").replace("-", "_")
    setting = settings.SETTING.get(dest)
    if setting is None or setting.scope != settings.RUN or setting.switch:
        choices = ", ".join(s.dest for s in settings.SETTINGS if s.scope == settings.RUN and not s.switch)
        raise UserError(f"cannot sweep {name!r}; choose a train.py setting: {choices} (seeds: use --seeds)")
    return dest


def cross(axes):
    """The points of one axis, or the cells of a two-axis grid, row by row."""
    points = [Point("", {}, ())]
    for name, texts in axes:
        dest = _dest(name)
        if not texts:
            raise UserError(f"no values given for {name}; e.g. python sweep.py lr 0.01 0.1")
        if len(set(texts)) != len(texts):
            raise UserError(f"{name}: a value is given twice in {', '.join(texts)}")
        points = [Point(" / ".join(filter(None, [p.label, text])), {**p.settings, dest: settings.parse_value(dest, text)},
                        p.coords + (text,)) for p in points for text in texts]
    return points


def variant_points(texts):
    """Points from 'LABEL=FLAGS' texts: each sets the train.py flags it names, on top of the base."""
    parser = settings.build_parser((settings.RUN,), given_only=True)
    points = []
    for text in texts:
        label, sep, flags = text.partition("=")
        if not sep or not label.strip():
            raise UserError(f"--variants {text!r}: expected 'LABEL=FLAGS', e.g. 'no dropout=--dropout 0'")
        points.append(Point(label.strip(), vars(parser.parse_args(shlex.split(flags)))))
    if len({p.label for p in points}) != len(points):
        raise UserError("--variants: two variants have the same label")
    return points


def scale_lr(points, base, mode):
    """Couple the learning rate to the batch size: each point that sets a batch size gets the base
    learning rate times f(batch size / base batch size), f linear or square root."""
    base_lr = settings.make_config(base)["lr"]
    return [p._replace(settings={**p.settings, "lr": _round(base_lr * LR_SCALINGS[mode](
                p.settings["batch_size"] / base["batch_size"]))}) if "batch_size" in p.settings else p
            for p in points]


def _factors(text):
    try:
        factors = [float(f) for f in text.split(",") if f.strip()]
    except ValueError:
        factors = []
    if not factors or min(factors) <= 0 or len(set(factors)) != len(factors):
        raise UserError(f"--tune-lr {text!r}: expected distinct positive factors, e.g. 0.3,1,3 (1: no tuning)")
    return factors


def _round(x):
    """A derived learning rate to 4 significant digits, so that its flag and label read cleanly."""
    return float(f"{x:.4g}")


# ---------------------------------------------------------------------------- planning

def plan(sweep):
    """One job per (seed, point, lr factor), seed by seed. Pure: reads no file."""
    return [job(sweep.base, point, factor, seed)
            for seed in sweep.seeds for point in sweep.points for factor in sweep.factors]


def job(base, point, factor, seed):
    """The run of one point at one lr factor and seed: the base, the point's settings, the seed, the
    lr times factor."""
    values = {**base, **point.settings, "seed": seed}
    if factor != 1:
        values["lr"] = _round(settings.make_config(values)["lr"] * factor)
    config = settings.make_config(values)
    return Job(point, factor, seed, config, settings.run_key(config), settings.to_argv(values))


def actions(jobs, out, force=False):
    """What each job needs, from the run folders under out: "reuse" a finished run, "resume" an
    unfinished one, or "train"."""
    index = runs.index(out)
    found = [index.get(j.key, []) for j in jobs]
    return ["train" if force or not f else "reuse" if any(s in runs.FINISHED for _, s in f) else "resume"
            for f in found]


def command(job, threads=None, force=False):
    """The train.py command line of a job, as a list."""
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable
    given = "--threads" in job.argv  # a sweep's own --threads is already among the run's settings
    extra = (["--threads", str(threads)] if threads and not given else []) + ([] if force else ["--once"])
    return [python, os.path.relpath(ROOT / "train.py"), *job.argv, *extra, "--quiet"]


# ---------------------------------------------------------------------------- running

def execute(todo, total, n_parallel, threads, force):
    """Run the (job, action) pairs' train.py subprocesses, n_parallel at a time, printing progress.
    Returns the number of runs that failed (crashed or exited with an error)."""
    print(f"{total} runs: {total - len(todo)} reused, {len(todo)} to train")
    durations, failed, lock, stop = [], [], threading.Lock(), threading.Event()
    started = time.perf_counter()

    def work(number, job, action):
        if stop.is_set():
            return
        with lock:
            print(f"[{number}/{len(todo)}] {action} {describe_job(job)}  "
                  f"({_eta(durations, len(todo) - number + 1, n_parallel)}, "
                  f"{_duration(time.perf_counter() - started)} so far)", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(command(job, threads, force), capture_output=True, text=True)
        with lock:
            durations.append(time.perf_counter() - t0)
            if proc.returncode not in (0, errors.INTERRUPTED):
                failed.append(job)
                tail = "\n    ".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
                print(f"  run {describe_job(job)} failed (exit {proc.returncode}):\n    {tail}", flush=True)
            if proc.returncode == errors.INTERRUPTED:
                stop.set()  # a run was interrupted (Ctrl-C, SIGTERM): start no further runs

    with concurrent.futures.ThreadPoolExecutor(n_parallel) as pool:
        try:
            for future in [pool.submit(work, i, job, action) for i, (job, action) in enumerate(todo, 1)]:
                future.result()
        except KeyboardInterrupt:
            stop.set()
            raise
    if stop.is_set():
        raise KeyboardInterrupt
    if todo:
        print(f"trained {len(todo)} runs in {_duration(time.perf_counter() - started)}")
    return len(failed)


def describe_job(job):
    lr = f" lr {job.config['lr']:g}" if job.factor != 1 or "lr" in job.point.settings else ""
    return f"{job.point.label}{lr} seed {job.seed}"


def _eta(durations, left, n_parallel):
    if not durations:
        return "time left known after the first run"
    return f"about {_duration(statistics.mean(durations) * left / n_parallel)} left"


def _duration(seconds):
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


# ---------------------------------------------------------------------------- results

def collect(jobs, out):
    """Read back each job's run (the newest finished one with its key, else the newest): one
    Candidate per (point, lr factor), its runs None where a run is missing."""
    index = runs.index(out)
    grouped = {}
    for j in sorted(jobs, key=lambda j: j.seed):
        found = index.get(j.key, [])
        finished = [d for d, status in found if status in runs.FINISHED]
        run_dir = finished[-1] if finished else found[-1][0] if found else None
        group = grouped.setdefault((j.point.label, j.factor), (j, [], []))
        group[1].append(runs.read_run(run_dir) if run_dir else None)
        group[2].append(j.seed)
    return [Candidate(first.point, first.factor, first.config, found, seeds)
            for first, found, seeds in grouped.values()]


def choose(candidates):
    """Per value, the candidate whose learning rate gave the best mean final validation accuracy over
    seeds (a seed that did not complete counts as 0), holding all of the value's candidates in options.
    Test accuracy plays no part in the choice."""
    by_label = {}
    for c in candidates:
        by_label.setdefault(c.label, []).append(c)
    chosen = []
    for options in by_label.values():
        scored = [c for c in options if c.val_score is not None] or options
        best = max(scored, key=lambda c: c.val_score or 0.0)
        chosen.append(best._replace(options=tuple(options)))
    return chosen


# ---------------------------------------------------------------------------- the command

def run_sweep(argv=None, setting=None, values=None, description=None, lr_scaling="none", tune="1"):
    """The sweep command: plan, train what is missing, time, then write tables, plots and runs.csv."""
    sweep, args = parse_cli(argv, setting, values, description, lr_scaling, tune)
    out = sweep.base["out"]
    if not args.plot_only:
        runs.check_out(out)
    jobs = plan(sweep)
    todo = [(j, a) for j, a in zip(jobs, actions(jobs, out, args.force)) if a != "reuse"]
    if args.print_commands:
        for j, _ in todo:
            print(shlex.join(command(j, force=args.force)))
        return 0
    threads = sweep.base["threads"] or max(1, (os.cpu_count() or 1) // args.jobs)
    failed = 0
    if not (args.plot_only or args.retime):
        failed = execute(todo, len(jobs), args.jobs, threads, args.force)
    report(sweep, jobs, threads, args)
    return 1 if failed else 0


def report(sweep, jobs, threads, args):
    """Write the tables and plots of a sweep into <out>/<name>/, and <out>/runs.csv."""
    out, name = sweep.base["out"], sweep.name
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    candidates = collect(jobs, out)
    results = choose(candidates)
    timed = timing.timings(results, folder / f"{name}_timing.json", threads, args.retime, args.plot_only)
    title = f"{name}: {tables.describe_base(sweep)}"
    outputs = tables.write_sweep_tables(results, candidates, timed, folder / name, title, sweep)
    outputs += plots.sweep_plots(results, timed, folder / name, title)
    if len(sweep.points[0].coords) == 2:
        outputs += tables.write_grid(results, folder / f"{name}_grid", title, sweep.column.split(" / ")[0])
        outputs.append(plots.heatmap(results, folder / f"{name}_heatmap.png", title, sweep.column.split(" / ")))
    tables.write_index(out)
    print(Path(folder / f"{name}.md").read_text())
    print("wrote " + ", ".join(map(str, outputs)) + f" and {Path(out) / 'runs.csv'}")


def cli(setting, values, description, lr_scaling="none", tune="1"):
    """Entry point of the one-setting scripts (batch_size.py, ...): exit with the sweep's status. The
    description is the script's docstring, of which --help shows the first paragraph."""
    description = " ".join(description.split("\n\n")[0].split())
    sys.exit(run_cli(lambda: run_sweep(None, setting, values, description, lr_scaling, tune), STOPPED))


STOPPED = "interrupted; run the same command again to resume"

if __name__ == "__main__":
    sys.exit(run_cli(run_sweep, STOPPED))
