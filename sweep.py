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
import json
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

import torch

import plots
import runs
import tables
import train
from errors import UserError, run_cli

ROOT = Path(__file__).resolve().parent
SWEPT_SCOPES = (train.RUN, train.SEED, train.SYSTEM)  # the train.py settings a sweep accepts
LR_SCALINGS = {"linear": lambda ratio: ratio, "sqrt": math.sqrt}  # lr factor from batch / base batch
TIMING_ROUNDS, TIMING_FRACTION = 40, 0.05
# The four sweep scripts try each value at these multiples of its learning rate and keep, per value, the
# one with the best validation accuracy: a comparison at one shared learning rate measures that rate.
TUNE = "0.3,1,3"


class Point(NamedTuple):
    label: str         # how the value is shown in tables and legends
    settings: dict     # the train.py settings it changes, by name
    coords: tuple = ()  # its (row, column) labels in a grid


# ---------------------------------------------------------------------------- command line

def build_parser(description=__doc__.split("\n")[0], setting=None, values=None, lr_scaling="none",
                 tune="1"):
    """train.py's settings (the base configuration) plus the sweep's own options. With `setting` the
    values come from --values (default `values`); without it, from the command line."""
    p = train.build_parser(SWEPT_SCOPES, description)
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
    g.add_argument("--seeds", type=train.POSITIVE_INT, default=3, help="seeds per value: --seed, --seed+1, ...")
    g.add_argument("--jobs", type=train.POSITIVE_INT, default=1,
                   help="runs trained at once, each with --threads cores/jobs")
    g.add_argument("--force", action="store_true", help="retrain even finished runs")
    g.add_argument("--plot-only", action="store_true",
                   help="train and time nothing; table and plot the saved runs and timings")
    g.add_argument("--retime", action="store_true",
                   help="train nothing; measure the seconds per epoch of every value again, then plot")
    g.add_argument("--print-commands", action="store_true",
                   help="print one train.py command per missing or unfinished run, and train nothing")
    g.add_argument("--target", type=train.FRACTION, default=0.97,
                   help="test accuracy (fraction) for the time-to-accuracy columns")
    g.add_argument("--sweep-name", default=None,
                   help="output folder <out>/<sweep-name>/ and file prefix (default: the settings' names)")
    return p


def parse_cli(argv=None, setting=None, values=None, description=None, lr_scaling="none", tune="1"):
    """Parse a sweep command line into (sweep options, base settings, points, sweep name)."""
    args = build_parser(description or __doc__.split("\n")[0], setting, values, lr_scaling, tune).parse_args(argv)
    base = {s.dest: getattr(args, s.dest) if s.scope in SWEPT_SCOPES else s.default for s in train.SETTINGS}
    if setting:
        axes = [(setting, [v.strip() for v in args.values.split(",") if v.strip()])]
    else:
        axes = _axes(args)
    points = variant_points(args.variants) if not setting and args.variants else cross(axes)
    if getattr(args, "lr_scaling", "none") != "none":
        points = scale_lr(points, base, args.lr_scaling)
    args.factors = _factors(args.tune_lr)
    if len(args.factors) > 1 and not base["val_split"]:
        raise UserError("--tune-lr chooses on the validation set: give --val-split N with N > 0")
    args.column = " / ".join(_dest(n) for n, _ in axes) or "variant"
    name = args.sweep_name or ("variants" if not axes else "_x_".join(_dest(n) for n, _ in axes))
    return args, base, points, name


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
    setting = train.SETTING.get(dest)
    if setting is None or setting.scope != train.RUN or setting.switch:
        choices = ", ".join(s.dest for s in train.SETTINGS if s.scope == train.RUN and not s.switch)
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
        points = [Point(" / ".join(filter(None, [p.label, text])), {**p.settings, dest: train.parse_value(dest, text)},
                        p.coords + (text,)) for p in points for text in texts]
    return points


def variant_points(texts):
    """Points from 'LABEL=FLAGS' texts: each sets the train.py flags it names, on top of the base."""
    parser = train.build_parser((train.RUN,), given_only=True)
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
    base_lr = train.make_config(base)["lr"]
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

def plan(points, base, args):
    """One job per (seed, point, lr factor), seed by seed: its config, train.py flags and what to do
    (reuse a finished run, resume an unfinished one, or train)."""
    index = runs.index(base["out"])
    jobs = []
    for seed in range(base["seed"], base["seed"] + args.seeds):
        for point in points:
            for factor in args.factors:
                argv = train.to_argv(job_settings(base, point, factor, seed))
                config = train.parse_config(argv)  # exactly what train.py will run, so the keys agree
                key = train.run_key(config)
                found = index.get(key, [])
                finished = any(status in runs.FINISHED for _, status in found)
                action = "train" if args.force or not found else "reuse" if finished else "resume"
                jobs.append({"point": point, "factor": factor, "seed": seed, "argv": argv, "config": config,
                             "key": key, "action": action})
    return jobs


def job_settings(base, point, factor, seed):
    """The settings of one run: the base, the point's settings, the seed, the lr times factor."""
    settings = {**base, **point.settings, "seed": seed}
    if factor != 1:
        settings["lr"] = _round(train.make_config(settings)["lr"] * factor)
    return settings


def command(job, threads=None, force=False):
    """The train.py command line of a job, as a list."""
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable
    given = "--threads" in job["argv"]  # a sweep's own --threads is already among the run's settings
    extra = (["--threads", str(threads)] if threads and not given else []) + ([] if force else ["--once"])
    return [python, os.path.relpath(ROOT / "train.py"), *job["argv"], *extra, "--quiet"]


# ---------------------------------------------------------------------------- running

def execute(jobs, n_parallel, threads, force):
    """Run the jobs' train.py subprocesses, n_parallel at a time, printing progress. Returns the
    number of runs that failed (crashed or exited with an error)."""
    todo = [j for j in jobs if j["action"] != "reuse"]
    print(f"{len(jobs)} runs: {len(jobs) - len(todo)} reused, {len(todo)} to train")
    durations, failed, lock, stop = [], [], threading.Lock(), threading.Event()
    started = time.perf_counter()

    def work(number, job):
        if stop.is_set():
            return
        with lock:
            print(f"[{number}/{len(todo)}] {job['action']} {describe_job(job)}  "
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
            for future in [pool.submit(work, i, job) for i, job in enumerate(todo, 1)]:
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
    lr = f" lr {job['config']['lr']:g}" if job["factor"] != 1 or "lr" in job["point"].settings else ""
    return f"{job['point'].label}{lr} seed {job['seed']}"


def _eta(durations, left, n_parallel):
    if not durations:
        return "time left known after the first run"
    return f"about {_duration(statistics.mean(durations) * left / n_parallel)} left"


def _duration(seconds):
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


# ---------------------------------------------------------------------------- results

def collect(jobs, out):
    """Read back each job's run (the newest finished one with its key, else the newest). Returns one
    candidate per (point, lr factor): {"label", "point", "factor", "lr", "config", "runs", "seeds"},
    runs holding None where a run is missing."""
    index = runs.index(out)
    candidates = {}
    for job in sorted(jobs, key=lambda j: j["seed"]):
        found = index.get(job["key"], [])
        finished = [d for d, status in found if status in runs.FINISHED]
        run_dir = finished[-1] if finished else found[-1][0] if found else None
        candidate = candidates.setdefault((job["point"].label, job["factor"]), {
            "label": job["point"].label, "point": job["point"], "factor": job["factor"],
            "lr": job["config"]["lr"], "config": job["config"], "runs": [], "seeds": []})
        candidate["runs"].append(runs.read_run(run_dir) if run_dir else None)
        candidate["seeds"].append(job["seed"])
    return list(candidates.values())


def choose(candidates):
    """Per value, the candidate whose learning rate gave the best mean final validation accuracy over
    seeds (a seed that did not complete counts as 0). Test accuracy plays no part in the choice."""
    by_label = {}
    for c in candidates:
        c["val_score"] = _val_score(c)
        by_label.setdefault(c["label"], []).append(c)
    chosen = []
    for options in by_label.values():
        scored = [c for c in options if c["val_score"] is not None] or options
        best = max(scored, key=lambda c: c["val_score"] or 0.0)
        chosen.append({**best, "options": options})
    return chosen


def _val_score(candidate):
    """Mean final validation accuracy over seeds, a seed that did not complete counting as 0; None
    while none of its runs exists."""
    if not any(candidate["runs"]):
        return None
    return statistics.mean((r["summary"]["final_val_acc"] or 0.0) if r and r["summary"].get("status") == "completed"
                           else 0.0 for r in candidate["runs"])


# ---------------------------------------------------------------------------- timing

def time_values(results, threads, rounds=TIMING_ROUNDS, fraction=TIMING_FRACTION):
    """Seconds per training epoch of each value, measured here, in one process: in each of `rounds`
    rounds (after a warm-up round) every value trains `fraction` of an epoch in turn, starting each round
    at the next value. A value's time in a round is divided by the round's geometric mean over values:
    a change of the host's speed between rounds moves every value alike and cancels in that ratio.
    Returns {label: {"key", "ratio", "median", "low", "high"}} (see drift_free)."""
    torch.set_num_threads(threads)
    data, setups = {}, []
    for r in results:
        config = {**r["config"], "device": train.resolve_device(r["config"]["device"]), "quiet": True}
        source = tuple(config[k] for k in ("dataset", "data_dir", "no_verify", "val_split", "normalize", "crop", "device"))
        if source not in data:
            data[source] = train.load_data(config, config["device"])[1]
        x, y = data[source]["train"]
        part = min(len(y), max(4 * config["batch_size"], int(fraction * len(y))))
        setups.append((r, train.build_trainer(config, data[source], config["device"]), x[:part], y[:part],
                       math.ceil(len(y) / config["batch_size"])))
    spent_rounds = []
    for round_ in range(rounds + 1):
        spent = {}
        for r, trainer, x, y, steps in setups[round_ % len(setups):] + setups[:round_ % len(setups)]:
            result, seconds = train.timed_epoch(trainer, x, y, 0)
            spent[r["label"]] = seconds / len(result.losses) * steps
        if round_:  # round 0 warms up: allocation, library start-up, compilation
            spent_rounds.append(spent)
    timed = drift_free(spent_rounds)
    return {r["label"]: {"key": r["config_key"], **timed[r["label"]]} for r in results}


def drift_free(spent_rounds):
    """Per-value timing figures from rounds of {label: seconds}, each round every value timed in turn:
    {label: {"ratio", "median", "low", "high"}}. A value's seconds in a round over the round's geometric
    mean cancel the host's speed of that round; "ratio" is the median of that over rounds, and the
    seconds are the ratio's median and quartiles times the median round mean."""
    means = [math.exp(statistics.mean(math.log(t) for t in spent.values())) for spent in spent_rounds]
    mean = statistics.median(means)
    timed = {}
    for label in spent_rounds[0]:
        ratios = [spent[label] / m for spent, m in zip(spent_rounds, means)]
        low, median, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        timed[label] = {"ratio": median, "median": median * mean, "low": low * mean, "high": high * mean}
    return timed


def timings(results, path, args, threads):
    """The saved timing pass of these values, measured anew where --retime asks or a value's settings
    have none; {} under --plot-only when there is none."""
    saved = json.loads(path.read_text()) if path.exists() else {"values": {}}
    fresh = all(saved["values"].get(r["label"], {}).get("key") == r["config_key"] for r in results)
    if args.retime or (not fresh and not args.plot_only):
        print(f"timing pass: each value's training steps in turn, {TIMING_ROUNDS} rounds of "
              f"{TIMING_FRACTION:g} epoch, {threads} thread(s)", flush=True)
        saved = {"threads": threads, "rounds": TIMING_ROUNDS, "fraction": TIMING_FRACTION,
                 "measured": time.strftime("%Y-%m-%d %H:%M"), "values": time_values(results, threads)}
        runs.write_json(path, saved)
    return saved


# ---------------------------------------------------------------------------- the command

def run_sweep(argv=None, setting=None, values=None, description=None, lr_scaling="none", tune="1"):
    """The sweep command: plan, train what is missing, time, then write tables, plots and runs.csv."""
    args, base, points, name = parse_cli(argv, setting, values, description, lr_scaling, tune)
    if not args.plot_only:
        train.check_out(base["out"])
    jobs = plan(points, base, args)
    if args.print_commands:
        for job in jobs:
            if job["action"] != "reuse" or args.force:
                print(shlex.join(command(job, force=args.force)))
        return 0
    threads = base["threads"] or max(1, (os.cpu_count() or 1) // args.jobs)
    failed = 0
    if not (args.plot_only or args.retime):
        failed = execute(jobs, args.jobs, threads, args.force)
    report(jobs, base, args, points, name, threads)
    return 1 if failed else 0


def report(jobs, base, args, points, name, threads):
    """Write the tables and plots of a sweep into <out>/<name>/, and <out>/runs.csv."""
    folder = Path(base["out"]) / name
    folder.mkdir(parents=True, exist_ok=True)
    candidates = collect(jobs, base["out"])
    results = choose(candidates)
    for r in results:
        r["config_key"] = train.run_key(r["config"])
    timing = timings(results, folder / f"{name}_timing.json", args, threads)
    title = f"{name}: {tables.describe_base(base, points, args)}"
    outputs = tables.write_sweep_tables(results, candidates, timing, folder / name, title, args)
    outputs += plots.sweep_plots(results, timing, folder / name, title)
    grid = len(points[0].coords) == 2
    if grid:
        outputs += tables.write_grid(results, folder / f"{name}_grid", title, args.column.split(" / ")[0])
        outputs.append(plots.heatmap(results, folder / f"{name}_heatmap.png", title, args.column.split(" / ")))
    tables.write_index(base["out"])
    print(Path(folder / f"{name}.md").read_text())
    print("wrote " + ", ".join(map(str, outputs)) + f" and {Path(base['out']) / 'runs.csv'}")


def cli(setting, values, description, lr_scaling="none", tune="1"):
    """Entry point of the one-setting scripts (batch_size.py, ...): exit with the sweep's status. The
    description is the script's docstring, of which --help shows the first paragraph."""
    description = " ".join(description.split("\n\n")[0].split())
    sys.exit(run_cli(lambda: run_sweep(None, setting, values, description, lr_scaling, tune), STOPPED))


STOPPED = "interrupted; run the same command again to resume"

if __name__ == "__main__":
    sys.exit(run_cli(run_sweep, STOPPED))
