"""Vary training settings over several values and seeds: train what is missing, then table and plot.

    python sweep.py lr 0.003 0.01 0.03 0.1 0.3              # any train.py setting, same outputs
    python sweep.py hidden 128 256,128 --seeds 2 --epochs 5
    python sweep.py --grid activation=relu,sigmoid,tanh loss=ce,mse,bce --hidden 128 --sweep-name act_loss_h128
    python sweep.py --variants "full=" "no dropout=--dropout 0" @recipes/mnist.args --sweep-name ablation
    python sweep.py lr 0.01 0.1 --print-commands            # one train.py line per missing run
    python sweep.py lr 0.01 0.1 --plot-only                 # replot from the run folders alone

A sweep is a list of values, each a label and the settings it changes (one flag, a grid cell, a named
variant, or a coupled pair such as a batch size with its scaled learning rate), repeated over seeds.
With --tune-lr, each value first trains on the tuning seeds at a grid of learning rates, widened outward
while its best rate lies on an edge; the validation set picks one rate per value, and the comparison
then trains fresh seeds at that rate, apart from the ones that chose it (see tune). Every run is one
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
import stats
import tables
import timing
from errors import UserError, run_cli

ROOT = Path(__file__).resolve().parent
SWEPT_SCOPES = (settings.RUN, settings.SEED, settings.SYSTEM)  # the train.py settings a sweep accepts
LR_SCALINGS = {"linear": lambda ratio: ratio, "sqrt": math.sqrt}  # lr factor from batch / base batch
# The four sweep scripts start each value's learning-rate search at these multiples of its own rate, a
# grid of factors of 2, and widen it by up to WIDEN more factors on a side while the best rate is on that
# edge: a comparison at one shared learning rate, or at a rate on the edge of the rates tried, measures
# the rates tried as much as the setting.
TUNE, WIDEN = "0.25,0.5,1,2,4", 4
# Their comparisons train this many fresh seeds per value at its chosen rate: with the spread between
# seeds measured here, enough to resolve about 0.15 points among a sweep's values (see stats.resolvable).
SEEDS = 12


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
    factors: list      # learning-rate factors every value starts its search with ([1.0]: no tuning)
    widen: int         # factors the search may add beyond the first grid, on each side
    tune_seeds: list   # the seeds that choose each value's learning rate
    seeds: list        # the seeds every value is compared with, at its chosen rate
    lr_scaling: str    # how a swept batch size scales the learning rate
    target: float      # test accuracy of the time-to-accuracy columns

    @property
    def tuned(self):
        return len(self.factors) > 1


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
    runs: list         # each seed's runs.Run (runs.read_run), None where it is missing
    seeds: list
    options: tuple = ()  # a chosen value's candidates over the learning rates tried
    search: str = ""     # a chosen value's search: "interior", or why its rate is on an edge
    scores: dict = None  # a chosen value's search scores by factor, what chose it (search_scores)

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
        """This rate's mean final validation accuracy over seeds (stats.rate_score), None while a seed's
        run is missing."""
        if not all(self.runs):
            return None
        return stats.rate_score([r.final("val_acc") if r and r.completed else None for r in self.runs])


# ---------------------------------------------------------------------------- command line

def build_parser(description=__doc__.split("\n")[0], setting=None, values=None, defaults=None):
    """train.py's settings (the base configuration) plus the sweep's own options. With `setting` the
    values come from --values (default `values`); without it, from the command line. defaults: a
    script's own defaults of the sweep options, e.g. {"tune_lr": TUNE, "seeds": SEEDS}."""
    p = settings.build_parser(SWEPT_SCOPES, description, owned=(setting,))
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
        g.add_argument("--lr-scaling", default="none", choices=["none", *LR_SCALINGS],
                       help="where the batch size varies, scale the learning rate with it, relative to "
                            "the base batch size: linearly, by the square root, or not at all")
    engine_options(g, "the tuning seeds pick one per value on the validation set")
    g.add_argument("--tune-seeds", type=settings.POSITIVE_INT, default=2,
                   help="seeds that choose the learning rate: --seed, --seed+1, ...")
    g.add_argument("--seeds", type=settings.POSITIVE_INT, default=3,
                   help="seeds per value in the comparison: after the tuning seeds where the lr is tuned, "
                        "else --seed, --seed+1, ...")
    g.add_argument("--force", action="store_true", help="retrain even finished runs")
    g.add_argument("--retime", action="store_true",
                   help="train nothing; measure the seconds per epoch of every value again, then plot")
    g.add_argument("--target", type=settings.FRACTION, default=0.97,
                   help="test accuracy (fraction) for the time-to-accuracy columns")
    g.add_argument("--sweep-name", default=None,
                   help="output folder <out>/<sweep-name>/ and file prefix (default: the settings' names)")
    p.set_defaults(**(defaults or {}))
    return p


def engine_options(g, choice):
    """Add the options that every sweep and the batch-scaling study share to the argument group g: the
    learning-rate search (choice: what picks a value's rate), how runs train, and doing neither."""
    g.add_argument("--tune-lr", default="1", metavar="FACTORS",
                   help=f"learning-rate factors each value's search starts with, e.g. 0.25,0.5,1,2,4; {choice} "
                        f"(1: no tuning)")
    g.add_argument("--widen", type=settings.NON_NEGATIVE_INT, default=WIDEN,
                   help="while a value's best rate is the highest (lowest) tried, add the next factor above "
                        "(below), up to this many on each side")
    g.add_argument("--jobs", type=settings.POSITIVE_INT, default=1,
                   help="runs trained at once, each with --threads cores/jobs")
    g.add_argument("--plot-only", action="store_true",
                   help="train and time nothing; table and plot the saved runs and timings")
    g.add_argument("--print-commands", action="store_true",
                   help="print one command per missing or unfinished run (for a cluster), and train nothing")


def threads_per_run(base, jobs):
    """Torch threads per run: --threads, else the cores shared among the runs trained at once."""
    return base["threads"] or max(1, (os.cpu_count() or 1) // jobs)


def parse_cli(argv=None, setting=None, values=None, description=None, defaults=None):
    """Parse a sweep command line into (the sweep, the command's options)."""
    parser = build_parser(description or __doc__.split("\n")[0], setting, values, defaults)
    args = parser.parse_args(argv)
    base = base_config(args)
    if setting:
        axes = [(setting, [v.strip() for v in args.values.split(",") if v.strip()])]
    else:
        axes = _axes(args)
    points = variant_points(args.variants) if not setting and args.variants else cross(axes)
    factors = parse_factors(args.tune_lr)
    settings.refuse(parser, args, _unused(args, axes, points, factors, "--values" if setting else "its values"))
    scaling = getattr(args, "lr_scaling", "none")
    if scaling != "none":
        points = scale_lr(points, base, scaling)
    if len(factors) > 1 and not base["val_split"]:
        raise UserError("--tune-lr chooses on the validation set: give --val-split N with N > 0")
    name = args.sweep_name or ("variants" if not axes else "_x_".join(_dest(n) for n, _ in axes))
    column = " / ".join(_dest(n) for n, _ in axes) or "variant"
    tune_seeds = list(range(base["seed"], base["seed"] + args.tune_seeds)) if len(factors) > 1 else []
    first = base["seed"] + len(tune_seeds)  # the comparison's seeds never chose its learning rates
    return Sweep(name, base, points, column, factors, args.widen, tune_seeds,
                 list(range(first, first + args.seeds)), scaling, args.target), args


def base_config(args):
    """The base configuration of a sweep or study: train.py's settings as the command line gives them,
    the defaults of those it does not offer."""
    return {s.dest: getattr(args, s.dest) if s.scope in SWEPT_SCOPES else s.default for s in settings.SETTINGS}


def _unused(args, axes, points, factors, values):
    """The options of the command that this sweep would ignore, and why (see settings.refuse)."""
    hint = {"batch_size": "; the learning rates scale from the default batch size: to move them, give --lr"}
    unused = {_dest(name): f"the sweep sets it itself, to each of {values}" + hint.get(_dest(name), "")
              for name, _ in axes}
    if len(factors) == 1:
        why = "only a learning-rate search (--tune-lr with several factors) uses it"
        unused.update(tune_seeds=why, widen=why)
    if hasattr(args, "lr_scaling") and not any("batch_size" in p.settings for p in points):
        unused["lr_scaling"] = "only a sweep of the batch size scales the learning rate with it"
    return unused


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
    return [p._replace(settings={**p.settings, "lr": round_lr(base_lr * LR_SCALINGS[mode](
                p.settings["batch_size"] / base["batch_size"]))}) if "batch_size" in p.settings else p
            for p in points]


def parse_factors(text):
    try:
        factors = [float(f) for f in text.split(",") if f.strip()]
    except ValueError:
        factors = []
    if not factors or min(factors) <= 0 or len(set(factors)) != len(factors):
        raise UserError(f"--tune-lr {text!r}: expected distinct positive factors, e.g. 0.25,0.5,1,2,4 (1: no tuning)")
    return sorted(factors)


def round_lr(x):
    """A derived learning rate to 4 significant digits, so that its flag and label read cleanly."""
    return float(f"{x:.4g}")


def batch_sizes(text, n):
    """The batch sizes of a study's --batch-sizes, sorted: whole numbers up to the training set's n images,
    'full' for all of them (batch_scaling.py, batch_quality.py)."""
    try:
        sizes = [n if part.strip() == "full" else int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1 or max(sizes) > n:
        raise UserError(f"--batch-sizes {text!r}: expected sizes from 1 to {n} (the training set) separated by "
                        f"commas, or 'full', e.g. 16,64,256,full")
    return sorted(set(sizes))


# ---------------------------------------------------------------------------- planning

def plan(base, grid, seeds):
    """One job per (seed, point, lr factor), seed by seed; grid pairs each point with its factors. Pure:
    reads no file."""
    return [job(base, point, factor, seed) for seed in seeds for point, factors in grid for factor in factors]


def widen(factors, scores, first, steps):
    """The learning-rate search's next grid for one value: factors (sorted) with one more factor beyond
    each edge that holds the best score, spaced as that edge is, while the grid reaches at most `steps`
    factors beyond the first grid `first` on that side. scores maps a factor to its score (None where its
    runs are missing). A rate that diverged or collapsed scores low, so it is never the best and bounds
    the search on its side."""
    known = {f: v for f, v in scores.items() if v is not None}
    if len(known) < len(factors):
        return factors  # runs of this grid are still missing
    if _alike(known):
        return factors  # every rate alike (all collapsed to one class): no side is better to widen towards
    best = max(known, key=known.get)
    grown = list(factors)
    if best == factors[-1] and len(factors) > 1:
        step = factors[-1] / factors[-2]
        if factors[-1] * step <= first[-1] * (first[-1] / first[-2]) ** steps * (1 + 1e-9):
            grown.append(round_lr(factors[-1] * step))
    if best == factors[0] and len(factors) > 1:
        step = factors[1] / factors[0]
        if factors[0] / step >= first[0] / (first[1] / first[0]) ** steps * (1 - 1e-9):
            grown.insert(0, round_lr(factors[0] / step))
    return grown


def _alike(scores):
    """Whether two or more rates scored the same, to rounding (smoothing sums three weighted scores)."""
    return len(scores) > 1 and max(scores.values()) - min(scores.values()) < 1e-9


def search_state(factors, scores, first, steps):
    """How a value's search ended: "interior", or why its best rate is still on an edge."""
    known = {f: v for f, v in scores.items() if v is not None}
    if len(known) < len(factors):
        return "runs missing"
    if _alike(known):
        return "every rate scored alike: none trained"
    best = max(known, key=known.get)
    if best not in (factors[0], factors[-1]) or len(factors) == 1:
        return "interior"
    return f"at the {'highest' if best == factors[-1] else 'lowest'} rate tried, the limit of --widen {steps}"


def job(base, point, factor, seed):
    """The run of one point at one lr factor and seed: the base, the point's settings, the seed, the
    lr times factor."""
    values = {**base, **point.settings, "seed": seed}
    if factor != 1:
        values["lr"] = round_lr(settings.make_config(values)["lr"] * factor)
    config = settings.make_config(values)
    return Job(point, factor, seed, config, settings.run_key(config), settings.to_argv(values))


def actions(jobs, out):
    """What each job needs, from the run folders under out: "reuse" a finished run, "resume" an
    unfinished one, or "train"."""
    index = runs.index(out)
    return ["reuse" if runs.finished(index, j.key) else "resume" if j.key in index else "train" for j in jobs]


def command(job, threads=None, force=False):
    """The train.py command line of a job, as a list."""
    return script_command("train.py", job.argv, threads, ([] if force else ["--once"]) + ["--quiet"])


def script_command(script, argv, threads=None, extra=()):
    """The command line that runs one of this folder's scripts with argv, as a list: --threads added
    where argv does not set it, then extra."""
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable
    given = "--threads" in argv  # a sweep's own --threads is already among the run's settings
    return [python, os.path.relpath(ROOT / script), *argv, *(["--threads", str(threads)] if threads and not given
                                                               else []), *extra]


# ---------------------------------------------------------------------------- running

def execute(todo, total, n_parallel, threads, force, command=command):
    """Run the (job, action) pairs' subprocesses (command(job, threads, force)), n_parallel at a time,
    printing progress. Returns the number of runs that failed (crashed or exited with an error)."""
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
        finished = runs.finished(index, j.key)
        run_dir = finished[-1] if finished else found[-1][0] if found else None
        group = grouped.setdefault((j.point.label, j.factor), (j, [], []))
        group[1].append(runs.read_run(run_dir) if run_dir else None)
        group[2].append(j.seed)
    return [Candidate(first.point, first.factor, first.config, found, seeds)
            for first, found, seeds in grouped.values()]


def choose(candidates, first, steps, score=None):
    """Per value, the candidate whose learning rate scored best on the validation set (search_scores, or
    score(options) -> {factor: score}), holding all of the value's candidates in options and how its
    search ended. Test accuracy plays no part in the choice."""
    chosen = []
    for options in by_label(candidates).values():
        scores = (score or search_scores)(options)
        best = max(options, key=lambda c: -math.inf if scores[c.factor] is None else scores[c.factor])
        chosen.append(best._replace(options=tuple(options), scores=scores,
                                    search=search_state(sorted(scores), scores, first, steps)))
    return chosen


def search_scores(options):
    """{factor: score} of one value's candidates: stats.smoothed over their mean validation accuracies."""
    return stats.smoothed({c.factor: c.val_score for c in options})


def by_label(candidates):
    """{label: the candidates of that value}, in the order the values come."""
    grouped = {}
    for c in candidates:
        grouped.setdefault(c.label, []).append(c)
    return grouped


# ---------------------------------------------------------------------------- the command

def run_sweep(argv=None, setting=None, values=None, description=None, defaults=None):
    """The sweep command: search each value's learning rate, train the comparison's missing runs, time,
    then write tables, plots and runs.csv."""
    sweep, args = parse_cli(argv, setting, values, description, defaults)
    return run_compared(sweep, args, lambda results, threads: report(sweep, results, threads, args))


def run_compared(sweep, args, write, score=None):
    """Train (or, with --print-commands, print) what a Sweep's comparison is missing, then write(results,
    threads) its outputs: the command of the sweeps and of the studies built on them (batch_quality.py).
    score: as tune's. Returns the command's exit status: 1 where a run failed."""
    out = sweep.base["out"]
    if not args.plot_only:
        runs.check_out(out)
    threads = threads_per_run(sweep.base, args.jobs)
    provide, failed = provider(args, out, threads)
    results = compare(sweep, provide, score)
    if args.print_commands:
        if results is None:
            print("# the next runs depend on these results: run this command again once they are done",
                  file=sys.stderr)
        return 0
    write(results, threads)
    return 1 if any(failed) else 0


def provider(args, out, threads, command=command):
    """provide(jobs, stage) for a command's options args: train the jobs' missing runs (command(job,
    threads, force) each), or print their commands and say False when there are some; and the list of
    each stage's count of failed runs."""
    failed, forced, force = [], set(), getattr(args, "force", False)

    def provide(jobs, stage):
        todo = [(j, "train" if force else a) for j, a in zip(jobs, actions(jobs, out))
                if a != "reuse" or (force and j.key not in forced)]  # --force retrains a run once
        forced.update(j.key for j, _ in todo)
        if args.print_commands:
            for j, _ in todo:
                print(shlex.join(command(j, None, force)))
            return not todo
        if args.plot_only or getattr(args, "retime", False):
            return True
        print(f"{stage}: ", end="")
        failed.append(execute(todo, len(jobs), args.jobs, threads, force, command))
        return True
    return provide, failed


def compare(sweep, provide, score=None):
    """The values on the comparison's seeds, each at its chosen learning rate (see tune; score as there),
    their runs read back; None while the search waits for runs that --print-commands printed."""
    if not sweep.tuned:
        jobs = plan(sweep.base, [(p, [1.0]) for p in sweep.points], sweep.seeds)
        provide(jobs, "comparison")
        return collect(jobs, sweep.base["out"])
    chosen = tune(sweep, provide, score)
    if chosen is None:
        return None
    points = {p.label: p for p in sweep.points}
    jobs = [job(sweep.base, points[c.label], c.factor, seed) for seed in sweep.seeds for c in chosen]
    provide(jobs, "comparison")
    picked = {c.label: c for c in chosen}
    return [r._replace(options=picked[r.label].options, search=picked[r.label].search, scores=picked[r.label].scores)
            for r in collect(jobs, sweep.base["out"])]


def tune(sweep, provide, score=None):
    """The learning-rate search: every value trains on the tuning seeds over its grid of rates, and its
    grid is widened round by round while its best rate is on an edge (see widen). Returns each value's
    chosen candidate (see choose), or None where the search waits for printed runs. score(candidates) ->
    {factor: score} scores a value's rates (default search_scores: smoothed final validation accuracy)."""
    score = score or search_scores
    def round_(grids, number):
        jobs = plan(sweep.base, [(p, grids[p.label]) for p in sweep.points], sweep.tune_seeds)
        if provide(jobs, f"learning-rate search, round {number}"):
            return by_label(collect(jobs, sweep.base["out"]))
        return None

    candidates = search([p.label for p in sweep.points], sweep.factors, sweep.widen, round_, score)
    if candidates is None:
        return None
    return choose([c for options in candidates.values() for c in options], sweep.factors, sweep.widen, score)


def search(labels, first, steps, round_, score):
    """The widening learning-rate search that the sweeps and the batch-scaling study share: each label's
    grid starts at the factors `first`; each round, round_(grids, number) trains the grids and reads back
    {label: its candidates} (None: it waits for runs --print-commands printed), and a label's grid widens
    while its best score (score(candidates) -> {factor: score}) is on an edge (see widen), by up to
    `steps` factors a side. Returns the last round's candidates by label, or None."""
    grids = {label: list(first) for label in labels}
    for number in range(1, 2 * steps + 2):
        candidates = round_(grids, number)
        if candidates is None:
            return None
        wider = {label: widen(factors, score(candidates[label]), first, steps) for label, factors in grids.items()}
        if wider == grids:
            break
        grids = wider
    return candidates


def report(sweep, results, threads, args):
    """Write the tables and plots of a sweep into <out>/<name>/, and <out>/runs.csv."""
    out, name = sweep.base["out"], sweep.name
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    timed = timing.timings(results, folder / f"{name}_timing.json", threads, args.retime, args.plot_only)
    title = f"{name}: {tables.describe_base(sweep)}"
    outputs = tables.write_sweep_tables(results, timed, folder / name, title, sweep)
    outputs.append(tables.write_runs_csv(results, folder / name, sweep.target, sweep.column))
    outputs.append(tables.write_epochs_csv(results, folder / name, sweep.column))
    outputs += plots.sweep_plots(results, timed, folder / name, title)
    if sweep.tuned:
        outputs.append(plots.lr_plot(results, folder / f"{name}_lr.png", title))
    if sweep.base["diagnostics"]:
        outputs.append(plots.gradient_plot(results, folder / f"{name}_gradients.png", title))
        outputs.append(plots.gradient_loss_plot(results, folder / f"{name}_gradient_loss.png", title))
    if sweep.base["activation_stats"]:
        outputs.append(plots.activation_stats_plot(results, folder / f"{name}_activations.png", title))
    if len(sweep.points[0].coords) == 2:
        outputs += tables.write_grid(results, folder / f"{name}_grid", title, sweep.column.split(" / ")[0])
        outputs.append(plots.heatmap(results, folder / f"{name}_heatmap.png", title, sweep.column.split(" / ")))
    tables.write_index(out)
    print(Path(folder / f"{name}.md").read_text())
    print("wrote " + ", ".join(map(str, outputs)) + f" and {Path(out) / 'runs.csv'}")


def cli(setting, values, description, **defaults):
    """Entry point of the one-setting scripts (batch_size.py, ...): exit with the sweep's status. The
    description is the script's docstring, of which --help shows the first paragraph."""
    description = " ".join(description.split("\n\n")[0].split())
    sys.exit(run_cli(lambda: run_sweep(None, setting, values, description, defaults), STOPPED))


STOPPED = "interrupted; run the same command again to resume"

if __name__ == "__main__":
    sys.exit(run_cli(run_sweep, STOPPED))
