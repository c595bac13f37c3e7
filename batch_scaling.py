"""Steps to a target validation accuracy against the batch size, as Shallue et al. (2019) measure it.

    python batch_scaling.py                                     # batch sizes 16 to 8192, 2 seeds
    python batch_scaling.py --batch-sizes 64,1024 --seeds 1     # a quick look at two sizes
    python batch_scaling.py --plot-only                         # table and plot the saved runs
    python batch_scaling.py --print-commands                    # one command per missing run, for a cluster
    python batch_scaling.py --train-size 6875 --target 0.93 --sweep-name batch_scaling_n6875   # 1/8 of the images

batch_size.py asks what a fixed number of epochs gives at each batch size; this asks how many steps each
batch size needs to reach a validation accuracy (--target), which is what the claims about batch size
are about. Every run trains at a constant learning rate (a schedule would fix the horizon in advance)
and stops at the first evaluation that reaches the target, the validation set evaluated after steps 1
to 10 and then every 5% more steps (so a step count is good to 5%), or at the step budget. Each batch
size searches its own learning rate as the sweeps do (a factor-2 grid, widened while the best rate is on
an edge) and keeps the one that reaches the target in the fewest steps, geometric mean over seeds. The
study runs on the sweeps' engine (sweep.py): each run is one `python batch_scaling.py --run ...`
subprocess, reused by its key when finished, --jobs at a time.
Outputs in <out>/<sweep-name>/ (default <out>/batch_scaling/): a table, steps and time to target
against the batch size with the perfect-scaling line and the fitted critical batch size, the learning
rates chosen against the linear and square-root scaling rules, and the gradient noise scale B_simple of
a --noise-scale run (at the base batch size, which --batch-sizes must hold).
"""
import errors

if __name__ == "__main__":
    errors.handle_interrupts()  # before torch loads: Ctrl-C while importing ends with one line too

import contextlib
import math
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch

import claims
import dataloader
import diagnostics
import files
import runs
import scaling_plots
import settings
import sweep
import tables
import timing
import train
from errors import UserError, run_cli

NAME = "batch_scaling"
BATCH_SIZES = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
EVAL_GROWTH = 1.05  # after step 10, the validation set is evaluated every 5% more steps
PATIENT = 200       # steps before a run may stop for want of progress (see check)
CONSTANT = "the study trains at a constant learning rate: a schedule would fix the horizon in advance"
OWNED = {  # train.py's settings that the study sets itself or does not use, and why (settings.refuse)
    "schedule": CONSTANT, "warmup": CONSTANT, "step_size": CONSTANT, "gamma": CONSTANT,
    "batch_size": "the study sets it to each of --batch-sizes (the learning rates scale from the default; "
                  "to move them, give --lr)",
    "epochs": "a run stops at --target or at its budget: give --max-steps or --max-epochs",
    "patience": "a run stops at --target, or where its validation accuracy stalls",
    "log_every": "a study run records its evaluations (evals.csv), not steps.csv",
    **{m: "a study run measures nothing per epoch" for m in diagnostics.MEASUREMENTS},
    **{m: "a study run measures nothing at its end" for m in diagnostics.END_MEASUREMENTS},
    "noise_scale": "the study trains its own --noise-scale run, at the default batch size",
}


class Row(NamedTuple):
    """A batch size at its chosen learning rate: what the table and figures show."""
    batch_size: int
    lr: float          # the chosen rate, None where no rate has a score yet
    summaries: list    # the summaries of its seeds' runs (None: missing)
    tried: list        # (lr, whether every seed reached the target) of each rate tried
    search: str        # "interior", or why the chosen rate is on an edge
    seconds_per_step: float

    @property
    def steps(self):
        """Steps to target of each seed of the chosen rate that reached it."""
        return [s["steps"] for s in self.summaries if s and s.get("reached")]


# ---------------------------------------------------------------------------- one run

def eval_steps(limit):
    """The steps after which a run evaluates: 1 to 10, then every EVAL_GROWTH more, up to limit."""
    step, steps = 1, []
    while step <= limit:
        steps.append(step)
        step = step + 1 if step < 10 else max(step + 1, math.ceil(step * EVAL_GROWTH))
    return steps


def to_target(config, tensors, target, max_steps):
    """Train config at its constant learning rate until the validation accuracy reaches target or
    max_steps pass; returns (summary, evaluation rows). Training seconds exclude evaluation."""
    trainer = train.build_trainer(config, tensors, config["device"])
    x, y = tensors["train"]
    checks, rows, seconds, step, epoch = set(eval_steps(max_steps)), [], 0.0, 0, 0
    summary = {"status": "completed", "reached": False, "steps": None}  # a run that stops has completed
    train.sync(config["device"])
    t0 = time.perf_counter()
    while not _stopped(summary, step, max_steps):
        for taken in train.epoch_steps(trainer, x, y, epoch):  # at a constant rate: OWNED refuses a schedule
            step += 1
            if step in checks:
                train.sync(config["device"])
                seconds += time.perf_counter() - t0
                row = _evaluate(trainer, tensors, step, seconds, taken.loss)
                rows.append(row)
                summary = check(summary, rows, target, config, len(y))
                trainer.model.train()
                t0 = time.perf_counter()
            if _stopped(summary, step, max_steps):
                break
        epoch += 1
    return _finish(summary, trainer, tensors, rows), rows


def _stopped(summary, step, max_steps):
    return step >= max_steps or summary["reached"] or summary.get("stalled") or summary["status"] == "diverged"


def _evaluate(trainer, tensors, step, seconds, loss):
    val_loss, val_acc = train.evaluate(train.evaluated_model(trainer), trainer.eval_loss_fn, *tensors["val"])
    return {"step": step, "seconds": seconds, "train_loss": loss.item(), "val_loss": val_loss, "val_acc": val_acc}


def check(summary, rows, target, config, n):
    """The summary after an evaluation: reached, diverged, stalled, or still going. A run stalls when its
    best validation accuracy has not improved over the last half of its steps (from step PATIENT on): a
    rate that stalls below the target would spend the rest of the budget there."""
    row, step = rows[-1], rows[-1]["step"]
    if not math.isfinite(row["train_loss"]):
        return {**summary, "status": "diverged", "diverged_step": step}
    if row["val_acc"] >= target:
        return {**summary, "reached": True, "steps": step, "epochs": step * config["batch_size"] / n,
                "seconds": row["seconds"], "val_acc": row["val_acc"]}
    if step >= PATIENT and max(r["val_acc"] for r in rows if r["step"] <= step / 2) >= max(r["val_acc"] for r in rows):
        return {**summary, "stalled": True}
    return summary


def _finish(summary, trainer, tensors, rows):
    """The summary with the test accuracy where the run stopped and the best validation accuracy."""
    test_loss, test_acc = train.evaluate(train.evaluated_model(trainer), trainer.eval_loss_fn, *tensors["test"])
    best = max((r["val_acc"] for r in rows), default=None)
    return {**summary, "test_acc": test_acc, "best_val_acc": best, "evaluations": len(rows),
            "last_step": rows[-1]["step"] if rows else 0}


def run_one(argv):
    """`python batch_scaling.py --run --target T --max-steps N FLAGS`: train one run of the study (what
    the study and --print-commands start) unless a finished run with its key exists; another process
    training it is waited for."""
    own = {k: why for k, why in OWNED.items() if k != "batch_size"}
    p = settings.build_parser(sweep.SWEPT_SCOPES, "Train one run of the batch-scaling study.", owned=own)
    p.set_defaults(schedule="constant")
    p.add_argument("--run", action="store_true", required=True, help="train one run of the study")
    p.add_argument("--target", type=settings.FRACTION, required=True, help="validation accuracy to reach")
    p.add_argument("--max-steps", type=settings.POSITIVE_INT, required=True, help="step budget of the run")
    args = p.parse_args(argv)
    settings.refuse(p, args, own)
    config = settings.make_config(sweep.base_config(args))
    key, config["device"] = study_key(config, args.target, args.max_steps), settings.resolve_device(config["device"])
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    runs.check_out(config["out"])
    with claims.claim(config["out"], key, say=lambda *a, **k: None):
        if runs.finished(runs.index(config["out"]), key):
            return
        data, tensors = dataloader.for_run(config, config["device"])
        with contextlib.ExitStack() as held:  # the new folder is held while this process writes it
            run_dir = runs.start({**config, "study": {"target": args.target, "max_steps": args.max_steps,
                                                      "eval_growth": EVAL_GROWTH}}, key, data, tensors, held)
            summary, rows = to_target(config, tensors, args.target, args.max_steps)
            tables.write_csv(run_dir / "evals.csv", rows, ["step", "seconds", "train_loss", "val_loss", "val_acc"])
            files.write_json(run_dir / "summary.json", summary)


def study_key(config, target, max_steps):
    """A study run's key: its settings' run key, the target, the step budget and the evaluation schedule."""
    return runs.digest({"run": settings.run_key(config), "target": target, "max_steps": max_steps,
                        "eval_growth": EVAL_GROWTH})


def command(job, threads=None, force=False):
    """The command line that trains a study run (run_one), as a list."""
    return sweep.script_command("batch_scaling.py", job.argv, threads)


# ---------------------------------------------------------------------------- the study

def parse(argv=None):
    """The study's options and its base configuration: train.py's settings (SGD with momentum 0.9,
    784-256-128-10 ReLU) at a constant learning rate, those in OWNED refused."""
    p = settings.build_parser(sweep.SWEPT_SCOPES, __doc__.split("\n")[0], owned=OWNED)
    g = p.add_argument_group("study")
    g.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)),
                   help="comma-separated batch sizes ('full': the whole training set)")
    g.add_argument("--target", type=settings.FRACTION, default=0.97,
                   help="validation accuracy to reach, a fraction")
    g.add_argument("--max-steps", type=settings.POSITIVE_INT, default=40000, help="step budget of a run")
    g.add_argument("--max-epochs", type=settings.POSITIVE, default=300,
                   help="budget in passes over the training set (large batches hit this before --max-steps)")
    g.add_argument("--lr-scaling", default="sqrt", choices=list(sweep.LR_SCALINGS),
                   help="where each batch size's search starts: the base lr times the batch size over the "
                        "base batch size (linear) or its square root (sqrt); the search widens from there")
    g.add_argument("--seeds", type=settings.POSITIVE_INT, default=2, help="seeds per run: --seed, --seed+1, ...")
    g.add_argument("--sweep-name", default=NAME,
                   help="output folder <out>/<sweep-name>/ and file prefix of the table, figures and timing, as "
                        "the sweeps' option (runs are shared through <out>/runs/ whatever the name)")
    sweep.engine_options(g, "each batch size keeps the one that reaches --target in the fewest steps")
    p.set_defaults(schedule="constant", tune_lr=sweep.TUNE)
    args = p.parse_args(argv)
    settings.refuse(p, args, OWNED)
    if not args.sweep_name or Path(args.sweep_name).name != args.sweep_name or args.sweep_name in (".", ".."):
        raise UserError(f"--sweep-name {args.sweep_name!r}: expected a folder name, without '/'")
    base = sweep.base_config(args)
    if not base["val_split"]:
        raise UserError("the study stops at a validation accuracy: give --val-split N with N > 0")
    return args, base


def job(base, size, factor, seed, args, n):
    """The study run of one batch size at one lr factor and seed (a sweep.Job: its argv are run_one's)."""
    scale = sweep.LR_SCALINGS[args.lr_scaling](size / base["batch_size"])
    values = {**base, "batch_size": size, "seed": seed,
              "lr": sweep.round_lr(settings.make_config(base)["lr"] * scale * factor)}
    config, max_steps = settings.make_config(values), min(args.max_steps, math.ceil(args.max_epochs * n / size))
    argv = ["--run", "--target", str(args.target), "--max-steps", str(max_steps), *settings.to_argv(values)]
    return sweep.Job(sweep.Point(str(size), {"batch_size": size, "lr": values["lr"]}), factor, seed, config,
                     study_key(config, args.target, max_steps), argv)


def first_round(args, base, n):
    """The runs of the learning-rate search's first round, on a training set of n images."""
    return [job(base, size, factor, seed, args, n) for seed in range(base["seed"], base["seed"] + args.seeds)
            for size in sweep.batch_sizes(args.batch_sizes, n) for factor in sweep.parse_factors(args.tune_lr)]


def summaries(candidate):
    """The summaries of a candidate's seeds' runs, None where a run is missing or unfinished."""
    return [r.summary if r and r.status in runs.FINISHED else None for r in candidate.runs]


def score(candidate):
    """Minus the mean log steps to target over seeds (higher is better), None while a run is missing;
    where a seed did not reach the target, -1e6 plus the mean best validation accuracy, so that the
    search widens towards the rate that came closest."""
    found = summaries(candidate)
    if not all(found):
        return None
    if not all(s.get("reached") for s in found):
        return -1e6 + statistics.mean(s.get("best_val_acc") or 0.0 for s in found)
    return -statistics.mean(math.log(s["steps"]) for s in found)


def scores(options):
    return {c.factor: score(c) for c in options}


def search(base, sizes, args, n, provide):
    """Each batch size's learning-rate search (sweep.search); returns each size's chosen candidate
    (sweep.choose), or None while it waits for runs --print-commands printed."""
    first, seeds = sweep.parse_factors(args.tune_lr), range(base["seed"], base["seed"] + args.seeds)

    def round_(grids, number):
        jobs = [job(base, int(size), f, seed, args, n) for seed in seeds for size, factors in grids.items()
                for f in factors]
        if provide(jobs, f"learning-rate search, round {number}"):
            return sweep.by_label(sweep.collect(jobs, base["out"]))
        return None

    found = sweep.search([str(s) for s in sizes], first, args.widen, round_, scores)
    if found is None:
        return None
    chosen = sweep.choose([c for options in found.values() for c in options], first, args.widen, scores)
    return {int(c.label): c for c in chosen}


def row(size, chosen, per_step):
    """The table's and figures' Row of a batch size from its chosen candidate."""
    hit = lambda c: all(s and s.get("reached") for s in summaries(c))  # noqa: E731
    pick = chosen if score(chosen) is not None else None
    return Row(size, pick.lr if pick else None, summaries(pick) if pick else [],
               [(c.lr, hit(c)) for c in chosen.options], chosen.search, per_step.get(size))


# ---------------------------------------------------------------------------- results

def fit_critical(sizes, steps):
    """Fit S = S_min (1 + B_crit / B) to steps to target S at batch sizes B, in log space (the steps span
    decades); returns (S_min, B_crit)."""
    logs = [math.log(s) for s in steps]

    def residual(log_b):
        b = math.exp(log_b)
        shifts = [math.log(1 + b / size) for size in sizes]
        log_smin = statistics.mean(l - d for l, d in zip(logs, shifts))
        return sum((l - log_smin - d) ** 2 for l, d in zip(logs, shifts)), log_smin

    grid = [math.log(min(sizes) / 100) + i * math.log(max(sizes) * 1e4 / min(sizes)) / 4000 for i in range(4001)]
    log_b = min(grid, key=lambda g: residual(g)[0])
    return math.exp(residual(log_b)[1]), math.exp(log_b)


def seconds_per_step(chosen, folder, threads, plot_only, n, name=NAME):
    """Seconds per training step of each batch size at its chosen rate, from a timing pass in which the
    batch sizes train in turn (timing.py): the time to target compares the batch sizes, not the moments
    their runs happened to train at."""
    values = [c for c in chosen.values() if score(c) is not None]
    timed = timing.timings(values, folder / f"{name}_timing.json", threads, plot_only=plot_only)
    keys = {c.label: c.key for c in values}
    return {int(label): v["median"] / math.ceil(n / int(label)) for label, v in timed["values"].items()
            if label in keys and v["key"] == keys[label]}


def noise_scale_run(base, chosen, args):
    """A train.py run with --noise-scale at the base batch size and its chosen rate, constant, long enough
    to pass the target: its metrics.jsonl holds B_simple after each epoch. None where it was never trained
    (--plot-only), or --print-commands printed its command."""
    pick = chosen.get(base["batch_size"])
    if pick is None or score(pick) is None:
        return None
    values = {**base, "lr": pick.lr, "noise_scale": True, "epochs": 10}
    config = settings.make_config({**values, "quiet": True})
    found = runs.finished(runs.index(base["out"]), settings.run_key(config))
    if not found and args.print_commands:
        print(shlex.join(sweep.script_command("train.py", settings.to_argv(values), extra=["--once", "--quiet"])))
    elif not found and not args.plot_only:
        print(f"noise scale: training {base['batch_size']} x lr {pick.lr:g} with --noise-scale", flush=True)
        train.train_once(config)
        found = runs.finished(runs.index(base["out"]), settings.run_key(config))
    return runs.read_run(found[-1]) if found else None


def report(rows, chosen, args, base, n, noise, fit):
    """Write the table, the per-run (and noise-scale) CSVs and the figures into <out>/<sweep-name>/;
    chosen: each batch size's chosen candidate, with the rates tried."""
    name = args.sweep_name
    folder = Path(base["out"]) / name
    timed = folder / f"{name}_timing.json"  # its thread count, not this command's: --plot-only times nothing
    threads = files.read_json(timed).get("threads") if timed.exists() else None
    tables.write_tables(tables.scaling_rows(rows, n), folder / name,
                        tables.scaling_caption(args, base, fit, threads, EVAL_GROWTH, PATIENT))
    written = [tables.write_scaling_runs_csv(chosen, folder / name)]
    if noise:
        written.append(tables.write_noise_csv(noise, folder / name))
    paths = [folder / f"{name}.csv", folder / f"{name}.md", *written,
             *scaling_plots.figures(rows, n, fit, noise, folder, args.target, base["batch_size"], name)]
    print((folder / f"{name}.md").read_text())
    print("wrote " + ", ".join(map(str, paths)))


class Study(NamedTuple):
    """What a study command found, for a caller that combines several (train_size.py)."""
    rows: list         # a Row per batch size
    n: int             # training-set size
    fit: tuple         # (S_min, B_crit), None with fewer than 3 batch sizes reached by every seed
    noise: object      # the --noise-scale run (runs.read_run), or None
    failed: bool       # whether a run failed


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--run" in argv:
        return run_one(argv)
    found = study(argv)
    return 1 if found and found.failed else 0


def study(argv):
    """The study command without --run: search, train and time what is missing (unless --plot-only), write
    the table and figures; returns a Study, or None under --print-commands."""
    args, base = parse(argv)
    n = len(dataloader.for_run(settings.make_config({**base, "batch_size": 1}), "cpu")[1]["train"][1])
    sizes = sweep.batch_sizes(args.batch_sizes, n)
    if not args.plot_only:
        runs.check_out(base["out"])
    threads = sweep.threads_per_run(base, args.jobs)
    provide, failed = sweep.provider(args, base["out"], threads, command)
    chosen = search(base, sizes, args, n, provide)
    base = {**base, "threads": threads}
    noise = noise_scale_run(base, chosen, args) if chosen else None
    if args.print_commands:
        if chosen is None:
            print("# the next runs depend on these results: run this command again once they are done",
                  file=sys.stderr)
        return None
    folder = Path(base["out"]) / args.sweep_name
    folder.mkdir(parents=True, exist_ok=True)
    per_step = seconds_per_step(chosen, folder, threads, args.plot_only, n, args.sweep_name)
    rows = [row(size, chosen[size], per_step) for size in sizes]
    reached = [(r.batch_size, statistics.mean(r.steps)) for r in rows if r.steps and len(r.steps) == len(r.summaries)]
    fit = fit_critical(*zip(*reached)) if len(reached) >= 3 else None
    report(rows, chosen, args, base, n, noise, fit)
    return Study(rows, n, fit, noise, any(failed))


if __name__ == "__main__":
    sys.exit(run_cli(main, "interrupted; run the same command again to resume: finished runs are reused"))
