"""Vary one training setting (or a grid of two) over several values and seeds; plot and table it.

    python sweep.py lr 0.003 0.01 0.03 0.1 0.3              # any train.py flag, same outputs
    python sweep.py hidden 128 256,128 --seeds 2 --epochs 5
    python sweep.py --grid activation=relu,sigmoid,tanh loss=ce,mse,bce --hidden 128 --sweep-name act_loss_h128
    python sweep.py lr 0.01 0.1 --print-commands            # one train.py line per missing run
    python sweep.py lr 0.01 0.1 --plot-only                 # replot from the run folders alone

Every (value, seed) is one `python train.py ... --quiet` subprocess writing its own folder under
<out>/runs/. A finished run with the same settings (same run_key) is reused, an unfinished one
resumed. Plots and tables go to <out>/<sweep>/; <out>/runs.csv indexes every run.
"""
import argparse
import concurrent.futures
import csv
import io
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import plots
import runs
import train
from errors import UserError, run_cli

ROOT = Path(__file__).resolve().parent
FINISHED = ("completed", "diverged")
# Flags a sweep sets itself, or that name a single run, so they cannot be varied or passed through.
NOT_SWEPT = ("seed", "name", "resume", "quiet", "out", "device", "threads", "help")
NOT_PASSED = ("seed", "name", "resume", "quiet", "threads")


def _raise_user_error(message):
    raise UserError(message)


def _train_parser():
    parser = train.build_parser()
    parser.error = _raise_user_error  # argparse would print usage; one clear error line is enough
    return parser


TRAIN_PARSER = _train_parser()
TRAIN_ACTIONS = {a.dest: a for a in TRAIN_PARSER._actions if a.option_strings and a.dest != "help"}


# ---------------------------------------------------------------------------- command line

def build_parser(description=__doc__.split("\n")[0], setting=None, defaults=None):
    """train.py's parser (the base config) plus the sweep options. With `setting` the values come
    from --values (default `defaults`); without it, from positional arguments or --grid."""
    p = train.build_parser(description)
    p.error = _raise_user_error
    p.epilog = ("Base configuration: train.py's settings as listed above (their defaults unless given); "
                "every run differs from it only in the swept setting and --seed. Outputs go to "
                "<out>/<sweep>/, run folders to <out>/runs/, an index of all runs to <out>/runs.csv.")
    g = p.add_argument_group("sweep")
    if setting:
        g.add_argument("--values", default=",".join(map(str, defaults)),
                       help=f"comma-separated values of --{setting.replace('_', '-')} "
                            f"(hidden layers: 256x128)")
    else:
        g.add_argument("setting", nargs="?", help="train.py flag to vary, e.g. lr or batch-size")
        g.add_argument("values", nargs="*", help="its values, e.g. 0.01 0.1 (hidden layers: 256,128)")
        g.add_argument("--grid", nargs=2, metavar="FLAG=V1,V2",
                       help="vary two flags together, e.g. activation=relu,tanh loss=ce,mse")
    g.add_argument("--seeds", type=int, default=3, help="seeds per value: --seed, --seed+1, ...")
    g.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once, each with --threads cores/jobs")
    g.add_argument("--force", action="store_true", help="retrain even finished runs")
    g.add_argument("--plot-only", action="store_true", help="train nothing; plot the runs there are")
    g.add_argument("--print-commands", action="store_true",
                   help="print one train.py command per missing or unfinished run, and train nothing")
    g.add_argument("--target", type=float, default=0.97,
                   help="test accuracy (fraction) for the time-to-accuracy columns")
    g.add_argument("--sweep-name", default=None,
                   help="output folder <out>/<sweep-name>/ and file prefix (default: the flag name)")
    return p


def find_action(name):
    """The train.py argparse action for a flag named lr, --lr, batch_size or batch-size."""
    dest = name.lstrip("-").replace("-", "_")
    action = TRAIN_ACTIONS.get(dest)
    if action is None or dest in NOT_SWEPT or action.nargs == 0:
        choices = ", ".join(d for d, a in TRAIN_ACTIONS.items() if d not in NOT_SWEPT and a.nargs != 0)
        raise UserError(f"cannot sweep {name!r}; choose a train.py setting: {choices} "
                        f"(seeds: use --seeds)")
    return action


def parse_value(action, text):
    """Check one value with train.py's own type and choices; returns the parsed value."""
    option = action.option_strings[-1]
    try:
        return getattr(TRAIN_PARSER.parse_args([option, text]), action.dest)
    except UserError as e:
        raise UserError(f"{option} {text}: {e}") from None


def make_points(axes):
    """Cross the (flag, [value texts]) axes into points: {"label", "set": {dest: value}, "argv"}."""
    points = [{"label": "", "set": {}, "argv": [], "key": ()}]
    for name, texts in axes:
        action = find_action(name)
        if not texts:
            raise UserError(f"no values given for {name}; e.g. python sweep.py lr 0.01 0.1")
        if len(set(texts)) != len(texts):
            raise UserError(f"{name}: a value is given twice in {', '.join(texts)}")
        points = [{"label": (p["label"] + " / " if p["label"] else "") + text,
                   "set": {**p["set"], action.dest: parse_value(action, text)},
                   "argv": p["argv"] + [action.option_strings[-1], text],
                   "key": p["key"] + (text,)}
                  for p in points for text in texts]
    return points


def _format(value):
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def base_argv(base, skip):
    """The train.py flags that differ from its defaults, as a command line."""
    argv = []
    for dest, action in TRAIN_ACTIONS.items():
        value = getattr(base, dest)
        if dest in skip or dest in NOT_PASSED or value == action.default:
            continue
        option = action.option_strings[-1]
        argv += [option] if action.nargs == 0 else [option, _format(value)]
    return argv


def parse_cli(argv, setting=None, defaults=None, description=None):
    """Parse a sweep command line into (base namespace, sweep options, axes)."""
    parser = build_parser(description or __doc__.split("\n")[0], setting, defaults)
    args = parser.parse_args(argv)
    base = argparse.Namespace(**{dest: getattr(args, dest) for dest in TRAIN_ACTIONS})
    for dest in ("name", "resume"):
        if getattr(base, dest):
            raise UserError(f"--{dest} names a single run; a sweep names its runs itself "
                            f"(use --sweep-name for the output folder)")
    if args.seeds < 1 or args.jobs < 1:
        raise UserError("--seeds and --jobs must be at least 1")
    if not 0 < args.target <= 1:
        raise UserError(f"--target {args.target}: a test accuracy as a fraction, e.g. 0.97")
    if setting:
        axes = [(setting, [v.strip() for v in args.values.split(",") if v.strip()])]
    elif args.grid:
        if args.setting:
            raise UserError("give either a flag with values or --grid, not both")
        axes = [_grid_axis(text) for text in args.grid]
    elif args.setting:
        axes = [(args.setting, args.values)]
    else:
        raise UserError("say what to vary, e.g. python sweep.py lr 0.01 0.1, or "
                        "--grid activation=relu,tanh loss=ce,mse")
    return base, args, axes


def _grid_axis(text):
    name, sep, values = text.partition("=")
    if not sep:
        raise UserError(f"--grid {text!r}: expected FLAG=V1,V2,... e.g. activation=relu,tanh")
    return name, [v.strip() for v in values.split(",") if v.strip()]


# ---------------------------------------------------------------------------- planning

def scan_runs(out):
    """Yield (run folder, config, summary) for each run folder under out in the current format;
    summary is {"status": "unknown"} where the run has not written one yet."""
    for run_dir in runs.find_runs(out):
        try:
            config = runs.read_config(run_dir)
        except UserError:
            continue  # another format or damaged: it can never match a key we compute
        summary_path = run_dir / "summary.json"
        yield run_dir, config, runs.read_json(summary_path) if summary_path.exists() else {"status": "unknown"}


def index_runs(out):
    """run_key -> run folders with their status, oldest first (by start time)."""
    index = {}
    for run_dir, config, summary in scan_runs(out):
        index.setdefault(config.get("run_key"), []).append(
            (config.get("started", ""), run_dir, summary.get("status")))
    return {key: [(d, s) for _, d, s in sorted(found)] for key, found in index.items()}


def plan(points, base, args):
    """One job per (point, seed): its config, command line and what to do (reuse, resume, train)."""
    index = index_runs(base.out)
    jobs = []
    for point in points:
        skip = set(point["set"])
        for seed in range(base.seed, base.seed + args.seeds):
            ns = argparse.Namespace(**{**vars(base), **point["set"], "seed": seed})
            key = runs.run_key(train.config_from_args(ns))
            found = index.get(key, [])
            finished = [d for d, status in found if status in FINISHED]
            job = {"point": point, "seed": seed, "key": key}
            if finished and not args.force:
                job.update(action="reuse")
            elif found and not args.force:  # interrupted, or killed while running
                job.update(action="resume",
                           argv=["--resume", str(found[-1][0]), "--quiet"] + _system_argv(base))
            else:
                job.update(action="train",
                           argv=base_argv(base, skip) + point["argv"] + ["--seed", str(seed), "--quiet"])
            jobs.append(job)
    return jobs


def _system_argv(base):
    return [] if base.device == "auto" else ["--device", base.device]


def command(job, threads=None):
    """The train.py command line of a job, as a list."""
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable
    script = os.path.relpath(ROOT / "train.py")
    return [python, script] + job["argv"] + (["--threads", str(threads)] if threads else [])


# ---------------------------------------------------------------------------- running

def execute(jobs, n_parallel, threads):
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
            left = len(todo) - number + 1
            eta = (f"about {_duration(statistics.mean(durations) * left / n_parallel)} left"
                   if durations else "time left known after the first run")
            print(f"[{number}/{len(todo)}] {job['action']} {job['point']['label']} seed {job['seed']}"
                  f"  ({eta}, {_duration(time.perf_counter() - started)} so far)", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(command(job, threads), capture_output=True, text=True)
        with lock:
            durations.append(time.perf_counter() - t0)
            if proc.returncode not in (0, 130):
                failed.append(job)
                tail = "\n    ".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
                print(f"  run {job['point']['label']} seed {job['seed']} failed (exit "
                      f"{proc.returncode}):\n    {tail}", flush=True)
            if proc.returncode == 130:
                stop.set()  # a run was interrupted (Ctrl-C, SIGTERM): start no further runs

    pool = concurrent.futures.ThreadPoolExecutor(n_parallel)
    try:
        for future in [pool.submit(work, i, job) for i, job in enumerate(todo, 1)]:
            future.result()
    except KeyboardInterrupt:
        stop.set()
        raise
    finally:
        pool.shutdown(cancel_futures=True)
    if stop.is_set():
        raise KeyboardInterrupt
    if todo:
        print(f"trained {len(todo)} runs in {_duration(time.perf_counter() - started)}")
    return len(failed)


def _duration(seconds):
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


# ---------------------------------------------------------------------------- results

def collect(jobs, out):
    """Read back each job's run folder (the newest finished one with its key, else the newest).
    Returns one result per point: {"label", "point", "runs": [run dict, None if missing], "seeds"}."""
    index = index_runs(out)
    results = {}
    for job in jobs:
        found = index.get(job["key"], [])
        finished = [d for d, status in found if status in FINISHED]
        run_dir = finished[-1] if finished else found[-1][0] if found else None
        result = results.setdefault(job["point"]["label"], {"label": job["point"]["label"],
                                                            "point": job["point"], "runs": [], "seeds": []})
        result["runs"].append(runs.read_run(run_dir) if run_dir else None)
        result["seeds"].append(job["seed"])
    return list(results.values())


def _mean_std(values, scale=1.0, digits=2):
    if not values:
        return ""
    mean = statistics.mean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def _to_target(run, target):
    """(epoch, training seconds) when test accuracy first reached target, else None."""
    for m in run["metrics"]:
        if m["test_acc"] >= target:
            return m["epoch"], m["elapsed_seconds"]
    return None


def status_text(result):
    """'completed', or which seeds diverged where, which are missing or unfinished."""
    parts = []
    for run, seed in zip(result["runs"], result["seeds"]):
        status = run["summary"].get("status") if run else "missing"
        if status == "diverged":
            s = run["summary"]
            parts.append(f"seed {seed} diverged at epoch {s['diverged_epoch']} (step {s['diverged_step']})")
        elif status != "completed":
            parts.append(f"seed {seed} {status}")
    return "; ".join(parts) or "completed"


def table_row(result, target, column="value"):
    """One summary-table row: mean ± std over the completed seeds of one value."""
    present = [r for r in result["runs"] if r]
    done = [r for r in present if r["summary"].get("status") == "completed"]
    reached = [t for t in (_to_target(r, target) for r in done) if t]
    epoch_times = [statistics.mean(m["epoch_seconds"] for m in r["metrics"]) for r in present if r["metrics"]]
    final = [r["summary"]["final_test_acc"] for r in done]
    best = [r["summary"]["best_test_acc"] for r in done]
    return {
        column: result["label"],
        "completed": f"{len(done)}/{len(result['runs'])}",
        "final_test_acc_%": _mean_std(final, 100),
        "best_test_acc_%": _mean_std(best, 100),
        "final_test_loss": _mean_std([r["summary"]["final_test_loss"] for r in done], 1, 4),
        f"epochs_to_{100 * target:g}%": (_mean_std([e for e, _ in reached], 1, 1) + f" ({len(reached)}/{len(done)})"
                                    if reached else "not reached" if done else ""),
        f"seconds_to_{100 * target:g}%": _mean_std([s for _, s in reached], 1, 1) if reached else "",
        "seconds_per_epoch": _mean_std(epoch_times, 1, 2) if epoch_times else "",
        "total_train_seconds": _mean_std([r["summary"]["train_seconds"] for r in present], 1, 1),
        "status": status_text(result),
    }


def write_tables(rows, prefix, caption):
    """<prefix>.csv and <prefix>.md from a list of dicts with the same keys."""
    write_csv(f"{prefix}.csv", rows, list(rows[0]))
    header = list(rows[0])
    lines = [f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
    lines += [f"| {' | '.join(str(row[h]).replace('|', '/') for h in header)} |" for row in rows]
    runs.write_atomic(f"{prefix}.md", lambda tmp: tmp.write_text("\n".join(lines) + f"\n\n{caption}\n"))


def grid_rows(results, axes):
    """The grid as a table: a row per value of the first flag, a column per value of the second,
    each cell the final test accuracy (%) as mean ± std over seeds, or what went wrong."""
    cells = {r["point"]["key"]: r for r in results}
    rows = []
    for a in axes[0][1]:
        row = {axes[0][0]: a}
        for b in axes[1][1]:
            result = cells[(a, b)]
            accuracy, note = table_row(result, 1.0)["final_test_acc_%"], plots.short_status(result)
            row[b] = " ".join(filter(None, [accuracy, f"({note})" if note else ""]))
        rows.append(row)
    return rows


def write_index(out):
    """<out>/runs.csv: one row per run folder, its settings and final figures (pandas.read_csv)."""
    rows = []
    for run_dir, config, summary in scan_runs(out):
        settings = {k: _format(v) for k, v in config.items() if not isinstance(v, dict)}
        rows.append({"run": run_dir.name, "status": summary.get("status"),
                     **{k: v for k, v in summary.items() if k not in ("status", "resume")}, **settings})
    if rows:
        write_csv(Path(out) / "runs.csv", rows, list(dict.fromkeys(k for row in rows for k in row)))


def write_csv(path, rows, fields):
    """Write a list of dicts as a CSV file with the given columns, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    runs.write_atomic(path, lambda tmp: tmp.write_text(buffer.getvalue()))


def describe_base(base, axes, seeds):
    """A short text naming the base configuration, for plot titles and table captions."""
    config = train.config_from_args(base)
    varied = {find_action(name).dest for name, _ in axes}
    show = lambda dest, text: f"{dest.replace('_', ' ')} varied" if dest in varied else text
    hidden = "MLP " + "-".join(map(str, [784] + config["hidden"] + [10]))
    lr = "default lr" if "optimizer" in varied and base.lr is None else f"lr {config['lr']:g}"
    return (f"{config['dataset']}, {show('hidden', hidden)}, {show('activation', config['activation'])}, "
            f"{show('loss', 'loss ' + config['loss'])}, {show('optimizer', config['optimizer'])}, "
            f"{show('lr', lr)}, {config['schedule']} schedule, "
            f"{show('batch_size', 'batch ' + str(config['batch_size']))}, "
            f"{show('epochs', str(config['epochs']) + ' epochs')}, {seeds} seed{'s' * (seeds > 1)}")


# ---------------------------------------------------------------------------- the command

def run_sweep(argv=None, setting=None, defaults=None, description=None):
    """The sweep command: plan, train what is missing, then write tables, plots and runs.csv."""
    base, args, axes = parse_cli(argv, setting, defaults, description)
    name = args.sweep_name or "_x_".join(find_action(n).dest for n, _ in axes)
    points = make_points(axes)
    if not args.plot_only:
        train.check_out(base.out)
    jobs = plan(points, base, args)
    if args.print_commands:
        for job in jobs:
            if job["action"] != "reuse":
                print(shlex.join(command(job)))
        return 0
    failed = 0
    if not args.plot_only:
        threads = base.threads or max(1, (os.cpu_count() or 1) // args.jobs)
        failed = execute(jobs, args.jobs, threads)
    report(jobs, base, args, axes, name)
    return 1 if failed else 0


def report(jobs, base, args, axes, name):
    """Write the tables and plots of a sweep into <out>/<name>/, and <out>/runs.csv."""
    results = collect(jobs, base.out)
    folder = Path(base.out) / name
    folder.mkdir(parents=True, exist_ok=True)
    title = f"{name}: {describe_base(base, axes, args.seeds)}"
    caption = (f"{title}. Mean ± sample std over seeds (accuracy, loss, time to target: completed "
               f"seeds only); time to {100 * args.target:g}% test accuracy and seconds count training "
               f"only, not evaluation.")
    rows = [table_row(r, args.target, " / ".join(n for n, _ in axes)) for r in results]
    write_tables(rows, folder / name, caption)
    outputs = [folder / f"{name}.csv", folder / f"{name}.md"]
    outputs += plots.sweep_plots(results, folder / name, title)
    if len(axes) == 2:
        write_tables(grid_rows(results, axes), folder / f"{name}_grid",
                     f"Final test accuracy (%), {title}; rows {axes[0][0]}, columns {axes[1][0]}.")
        outputs += [folder / f"{name}_grid.csv", folder / f"{name}_grid.md",
                    plots.heatmap(results, axes, folder / f"{name}_heatmap.png", title)]
    write_index(base.out)
    print(Path(folder / f"{name}.md").read_text())
    print("wrote " + ", ".join(map(str, outputs)) + f" and {Path(base.out) / 'runs.csv'}")


def cli(setting, defaults, description):
    """Entry point of the one-setting scripts (batch_size.py, ...): exit with the sweep's status."""
    sys.exit(run_cli(lambda: _interruptible(lambda: run_sweep(None, setting, defaults, description))))


def _interruptible(fn):
    try:
        return fn()
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(run_cli(lambda: _interruptible(run_sweep)))
