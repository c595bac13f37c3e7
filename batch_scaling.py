"""Steps to a target validation accuracy against the batch size, as Shallue et al. (2019) measure it.

    python batch_scaling.py                                     # batch sizes 16 to 8192, 2 seeds
    python batch_scaling.py --batch-sizes 64,1024 --seeds 1     # a quick look at two sizes
    python batch_scaling.py --plot-only                         # table and plot the saved runs

batch_size.py asks what a fixed number of epochs gives at each batch size; this asks how many steps each
batch size needs to reach a validation accuracy (--target), which is what the claims about batch size
are about. Every run trains at a constant learning rate (a schedule would fix the horizon in advance)
and stops at the first evaluation that reaches the target, the validation set evaluated after steps 1
to 10 and then every 5% more steps (so a step count is good to 5%), or at the step budget. Each batch
size searches its own learning rate as the sweeps do (a factor-2 grid, widened while the best rate is on
an edge) and keeps the one that reaches the target in the fewest steps, geometric mean over seeds.
Outputs in <out>/batch_scaling/: a table, steps and time to target against the batch size with the
perfect-scaling line and the fitted critical batch size, the learning rates chosen against the linear
and square-root scaling rules, and the gradient noise scale B_simple of a --noise-scale run.
"""
import errors

if __name__ == "__main__":
    errors.handle_interrupts()  # before torch loads: Ctrl-C while importing ends with one line too

import concurrent.futures
import contextlib
import math
import multiprocessing
import os
import statistics
import time
from pathlib import Path
from typing import NamedTuple

import torch

import dataloader
import plots
import runs
import settings
import sweep
import tables
import timing
import train
from errors import UserError, run_cli

NAME = "batch_scaling"
BATCH_SIZES = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
EVAL_GROWTH = 1.05  # after step 10, the validation set is evaluated every 5% more steps
PATIENT = 200       # steps before a run may stop for want of progress (see _check)
CONSTANT = "the study trains at a constant learning rate: a schedule would fix the horizon in advance"
OWNED = {  # train.py's settings that the study sets itself or does not use, and why (settings.refuse)
    "schedule": CONSTANT, "warmup": CONSTANT, "step_size": CONSTANT, "gamma": CONSTANT,
    "batch_size": "the study sets it to each of --batch-sizes (the learning rates scale from the default; "
                  "to move them, give --lr)",
    "epochs": "a run stops at --target or at its budget: give --max-steps or --max-epochs",
    "patience": "a run stops at --target, or where its validation accuracy stalls",
    "log_every": "a study run records its evaluations (evals.csv), not steps.csv",
    "diagnostics": "a study run measures nothing per epoch",
    "noise_scale": "the study trains its own --noise-scale run, at the default batch size",
}


class Trial(NamedTuple):
    """One batch size at one learning rate over seeds: its runs' summaries (None where missing)."""
    batch_size: int
    factor: float
    lr: float
    summaries: list

    @property
    def score(self):
        """Minus the mean log steps to target over seeds (higher is better); -inf where a seed did not
        reach it, None while a run is missing."""
        if not all(self.summaries):
            return None
        if not all(s.get("reached") for s in self.summaries):
            return -math.inf
        return -statistics.mean(math.log(s["steps"]) for s in self.summaries)


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
                summary = _check(summary, rows, target, config, len(y))
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


def _check(summary, rows, target, config, n):
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


# ---------------------------------------------------------------------------- the study

def parse(argv=None):
    """The study's options and its base configuration: train.py's settings (SGD with momentum 0.9,
    784-256-128-10 ReLU) at a constant learning rate, those in OWNED refused."""
    p = settings.build_parser(sweep.SWEPT_SCOPES, __doc__.split("\n")[0], owned=OWNED)
    p.set_defaults(schedule="constant")
    g = p.add_argument_group("study")
    g.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)),
                   help="comma-separated batch sizes ('full': the whole training set)")
    g.add_argument("--target", type=settings.FRACTION, default=0.97,
                   help="validation accuracy to reach, a fraction")
    g.add_argument("--max-steps", type=settings.POSITIVE_INT, default=40000, help="step budget of a run")
    g.add_argument("--max-epochs", type=settings.POSITIVE, default=300,
                   help="budget in passes over the training set (large batches hit this before --max-steps)")
    g.add_argument("--tune-lr", default="0.25,0.5,1,2,4",
                   help="learning-rate factors each batch size's search starts with, over the base lr scaled "
                        "with the batch size as --lr-scaling says")
    g.add_argument("--lr-scaling", default="sqrt", choices=list(sweep.LR_SCALINGS),
                   help="where each batch size's search starts: the base lr times the batch size over the "
                        "base batch size (linear) or its square root (sqrt); the search widens from there")
    g.add_argument("--widen", type=settings.NON_NEGATIVE_INT, default=sweep.WIDEN,
                   help="factors the search may add beyond the first grid on each side")
    g.add_argument("--seeds", type=settings.POSITIVE_INT, default=2, help="seeds per run: --seed, --seed+1, ...")
    g.add_argument("--jobs", type=settings.POSITIVE_INT, default=1, help="runs trained at once")
    g.add_argument("--plot-only", action="store_true", help="train nothing; table and plot the saved runs")
    args = p.parse_args(argv)
    settings.refuse(p, args, OWNED)
    base = sweep.base_config(args)
    if not base["val_split"]:
        raise UserError("the study stops at a validation accuracy: give --val-split N with N > 0")
    return args, base


class Job(NamedTuple):
    batch_size: int
    factor: float
    seed: int
    config: dict
    key: str
    max_steps: int


def plan(base, grids, seeds, args, n):
    """The runs of one round, seed by seed: each batch size at each factor of its grid. Pure."""
    base_lr = settings.make_config(base)["lr"]
    jobs = []
    for seed in seeds:
        for size, factors in grids.items():
            for factor in factors:
                lr = sweep.round_lr(base_lr * sweep.LR_SCALINGS[args.lr_scaling](size / base["batch_size"]) * factor)
                config = settings.make_config({**base, "batch_size": size, "lr": lr, "seed": seed})
                max_steps = min(args.max_steps, math.ceil(args.max_epochs * n / size))
                key = runs.digest({"run": settings.run_key(config), "target": args.target, "max_steps": max_steps,
                                   "eval_growth": EVAL_GROWTH})
                jobs.append(Job(size, factor, seed, config, key, max_steps))
    return jobs


def first_round(args, base, n):
    """The runs of the learning-rate search's first round, on a training set of n images."""
    seeds = range(base["seed"], base["seed"] + args.seeds)
    return plan(base, {size: sweep.parse_factors(args.tune_lr) for size in _sizes(args.batch_sizes, n)}, seeds, args, n)


_DATA = {}  # one prepared data set per worker process


def run_job(job, target):
    """Train one job unless a finished run with its key exists (another process training it is waited
    for); returns its summary."""
    config = {**job.config, "device": settings.resolve_device(job.config["device"])}
    with runs.claim(config["out"], job.key, say=lambda *a, **k: None):
        finished = runs.finished(runs.index(config["out"]), job.key)
        if finished:
            return runs.read_summary(finished[-1])
        source = tuple(config[k] for k in ("dataset", "data_dir", "no_verify", "val_split", "normalize", "crop"))
        if source not in _DATA:
            _DATA[source] = dataloader.for_run(config, config["device"])
        data, tensors = _DATA[source]
        with contextlib.ExitStack() as held:  # the new folder is held while this process writes it
            run_dir = runs.start({**config, "study": {"target": target, "max_steps": job.max_steps,
                                                      "eval_growth": EVAL_GROWTH}}, job.key, data, tensors, held)
            summary, rows = to_target(config, tensors, target, job.max_steps)
            tables.write_csv(run_dir / "evals.csv", rows, ["step", "seconds", "train_loss", "val_loss", "val_acc"])
            runs.write_json(run_dir / "summary.json", summary)
        return summary


def _start_worker(threads):
    errors.catch_signals()
    torch.set_num_threads(threads)


def execute(jobs, pool, target, stage):
    """Train the jobs whose runs are missing, in the pool; print progress."""
    index = runs.index(jobs[0].config["out"]) if jobs else {}
    todo = [j for j in jobs if not runs.finished(index, j.key)]
    print(f"{stage}: {len(jobs)} runs: {len(jobs) - len(todo)} reused, {len(todo)} to train", flush=True)
    started = time.perf_counter()
    futures = {pool.submit(run_job, j, target): j for j in todo}
    for number, future in enumerate(concurrent.futures.as_completed(futures), 1):
        j, summary = futures[future], future.result()
        steps = f"{summary['steps']} steps" if summary.get("reached") else summary.get("status") + ", not reached"
        print(f"  [{number}/{len(todo)}] batch {j.batch_size} lr {j.config['lr']:g} seed {j.seed}: {steps} "
              f"({time.perf_counter() - started:.0f} s so far)", flush=True)


def collect(jobs):
    """One Trial per (batch size, factor), the summaries of its seeds' finished runs (None: missing)."""
    index = runs.index(jobs[0].config["out"]) if jobs else {}
    trials = {}
    for j in jobs:
        finished = runs.finished(index, j.key)
        trial = trials.setdefault((j.batch_size, j.factor), Trial(j.batch_size, j.factor, j.config["lr"], []))
        trial.summaries.append(runs.read_summary(finished[-1]) if finished else None)
    return list(trials.values())


def search(base, sizes, args, n, pool):
    """Each batch size's learning-rate search, round by round (see sweep.widen); returns the trials of
    the last round by batch size."""
    first = sweep.parse_factors(args.tune_lr)
    grids = {size: list(first) for size in sizes}
    seeds = list(range(base["seed"], base["seed"] + args.seeds))
    for round_ in range(1, 2 * args.widen + 2):
        jobs = plan(base, grids, seeds, args, n)
        if not args.plot_only:
            execute(jobs, pool, args.target, f"learning-rate search, round {round_}")
        trials = collect(jobs)
        scores = {size: {t.factor: _score(t) for t in trials if t.batch_size == size} for size in sizes}
        wider = {size: sweep.widen(grids[size], scores[size], first, args.widen) for size in sizes}
        if wider == grids:
            break
        grids = wider
    return {size: [t for t in trials if t.batch_size == size] for size in sizes}, first


def _score(trial):
    """The search's score: Trial.score, and among rates that do not reach the target, the best
    validation accuracy they reached, so that the search widens towards it."""
    score = trial.score
    if score == -math.inf:
        return -1e6 + statistics.mean(s.get("best_val_acc") or 0.0 for s in trial.summaries)
    return score



# ---------------------------------------------------------------------------- results

class Row(NamedTuple):
    """A batch size at its chosen learning rate."""
    batch_size: int
    chosen: Trial       # None where no rate has a score yet
    trials: list        # every rate tried
    search: str         # "interior", or why the chosen rate is on an edge
    seconds_per_step: float

    @property
    def steps(self):
        """Steps to target of each seed of the chosen rate that reached it."""
        return [s["steps"] for s in self.chosen.summaries if s and s.get("reached")] if self.chosen else []


def choose(trials_by_size, first, widen):
    """Per batch size, the trial with the best score and how its search ended."""
    chosen = {}
    for size, trials in trials_by_size.items():
        scores = {t.factor: _score(t) for t in trials}
        scored = [t for t in trials if scores[t.factor] is not None]
        best = max(scored, key=lambda t: scores[t.factor]) if scored else None
        chosen[size] = (best, sweep.search_state(sorted(scores), scores, first, widen))
    return chosen


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


class _Timed(NamedTuple):  # what timing.timings needs of a value
    label: str
    config: dict
    key: str


def seconds_per_step(chosen, base, folder, threads, plot_only, n):
    """Seconds per training step of each batch size at its chosen rate, from a timing pass in which the
    batch sizes train in turn (timing.py): the time to target compares the batch sizes, not the moments
    their runs happened to train at."""
    values = [_Timed(str(size), settings.make_config({**base, "batch_size": size, "lr": trial.lr}), "")
              for size, (trial, _) in chosen.items() if trial]
    values = [v._replace(key=settings.run_key(v.config)) for v in values]
    timed = timing.timings(values, folder / f"{NAME}_timing.json", threads, plot_only=plot_only)
    return {int(label): v["median"] / math.ceil(n / int(label)) for label, v in timed["values"].items()
            if label in {t.label for t in values} and v["key"] == {t.label: t.key for t in values}[label]}


def noise_scale_run(base, chosen, args):
    """A train.py run with --noise-scale at the base batch size and its chosen rate, constant, long enough
    to pass the target: its metrics.jsonl holds B_simple after each epoch. None under --plot-only when it
    was never trained."""
    trial = chosen.get(base["batch_size"], (None, ""))[0]
    if trial is None:
        return None
    config = settings.make_config({**base, "lr": trial.lr, "noise_scale": True, "epochs": 10, "quiet": True})
    found = runs.finished(runs.index(base["out"]), settings.run_key(config))
    if not found and not args.plot_only:
        print(f"noise scale: training {base['batch_size']} x lr {trial.lr:g} with --noise-scale", flush=True)
        train.train_once(config)
        found = runs.finished(runs.index(base["out"]), settings.run_key(config))
    return runs.read_run(found[-1]) if found else None


def table(rows, n, target):
    """The study's table: a row per batch size at its chosen rate."""
    out = []
    for r in rows:
        t = r.chosen
        steps = r.steps
        reached = f"{len(steps)}/{len(t.summaries)}" if t else ""
        per_step = r.seconds_per_step
        out.append({
            "batch_size": r.batch_size, "lr": f"{t.lr:g}" if t else "", "search": r.search,
            "reached": reached, "steps_to_target": tables.mean_std(steps, 1, 0),
            "epochs_to_target": tables.mean_std([s * r.batch_size / n for s in steps], 1, 2),
            "seconds_per_step": f"{per_step:.4f}" if per_step else "",
            "seconds_to_target": tables.mean_std([s * per_step for s in steps], 1, 1) if per_step else "",
            "best_val_acc_%": tables.mean_std([100 * s["best_val_acc"] for s in t.summaries if s], 1, 2) if t else "",
            "rates_tried": len(r.trials)})
    return out


def report(rows, args, base, n, noise, fit):
    """Write the table and figures into <out>/batch_scaling/."""
    folder = Path(base["out"]) / NAME
    every = f"{100 * (EVAL_GROWTH - 1):.0f}%"
    timed = folder / f"{NAME}_timing.json"  # its thread count, not this command's: --plot-only times nothing
    threads = runs.read_json(timed).get("threads") if timed.exists() else None
    caption = (f"Steps to {100 * args.target:g}% validation accuracy, {_describe(base, args)}. Each batch size at "
               f"the learning rate (constant, momentum {settings.make_config(base)['momentum']:g}) that reached "
               f"the target in the fewest steps (geometric mean over the seeds), searched over a factor-2 grid "
               f"that starts at the base rate scaled by the {args.lr_scaling} of the batch-size ratio and widens "
               f"while the best rate is on an edge; mean ± sample std over the seeds of that rate, which also "
               f"chose it. Evaluations after steps 1-10 and then every {every} more steps: a step count is the "
               f"first evaluation at or above the target, good to {every}. Seconds: steps times the seconds per "
               f"step of a timing pass in which the batch sizes trained in turn ({threads or 'default'} "
               f"thread(s)). Budget: {args.max_steps} steps or {args.max_epochs:g} epochs, whichever comes first; "
               f"a run also stops where its best validation accuracy has not improved over the last half of its "
               f"steps (from step {PATIENT}).")
    if fit:
        caption += f" Fit of S = S_min (1 + B_crit / B): S_min {fit[0]:.0f} steps, B_crit {fit[1]:.0f}."
    tables.write_tables(table(rows, n, args.target), folder / NAME, caption)
    paths = [folder / f"{NAME}.csv", folder / f"{NAME}.md", plot_steps(rows, n, fit, noise, folder, args),
             plot_time(rows, folder, args), plot_lr(rows, base, folder, args)]
    if noise:
        paths.append(plot_noise(noise, fit, folder, args))
    print((folder / f"{NAME}.md").read_text())
    print("wrote " + ", ".join(map(str, paths)))


def _describe(base, args):
    config = settings.make_config(base)
    return (f"{config['dataset']}, MLP {'-'.join(map(str, [config['crop'] ** 2, *config['hidden'], 10]))}, "
            f"{config['activation']}, loss {config['loss']}, {config['optimizer']}, {args.seeds} seed(s)")


def noise_at_target(noise, target):
    """(epoch, B_simple) of the noise-scale run at the first epoch whose validation accuracy reached the
    target (the last epoch where none did), and B_simple's range over the run."""
    rows = [m for m in noise["metrics"] if m.get("noise_scale")]
    if not rows:
        return None
    at = next((m for m in rows if m["val_acc"] >= target), rows[-1])
    return at["epoch"], at["noise_scale"], min(m["noise_scale"] for m in rows), max(m["noise_scale"] for m in rows)


# ---------------------------------------------------------------------------- figures

def plot_steps(rows, n, fit, noise, folder, args):
    """Steps and epochs to target against the batch size, log-log: seeds as dots, means as diamonds,
    the perfect-scaling line through the smallest batch size, the fit and the critical batch size."""
    plt = plots.plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.4))
    done = [r for r in rows if r.steps]
    for ax, per in ((left, lambda r, s: s), (right, lambda r, s: s * r.batch_size / n)):
        for r in done:
            ax.plot([r.batch_size] * len(r.steps), [per(r, s) for s in r.steps], ".", color="tab:blue", alpha=0.5)
        ax.plot([r.batch_size for r in done], [per(r, statistics.mean(r.steps)) for r in done], "D-", color="tab:blue",
                label="steps to target (mean over seeds)" if ax is left else "epochs to target (mean over seeds)")
        if done:
            b0, s0 = done[0].batch_size, statistics.mean(done[0].steps)
            sizes = [r.batch_size for r in rows]
            ax.plot(sizes, [per(_at(b), s0 * b0 / b) for b in sizes], ":", color="grey",
                    label="perfect scaling: twice the batch, half the steps")
        if fit:
            grid = [rows[0].batch_size * (rows[-1].batch_size / rows[0].batch_size) ** (i / 100) for i in range(101)]
            ax.plot(grid, [per(_at(b), fit[0] * (1 + fit[1] / b)) for b in grid], "-", color="tab:orange", alpha=0.7,
                    label=f"fit S_min (1 + B_crit / B): B_crit {fit[1]:.0f}")
            ax.axvline(fit[1], color="tab:orange", linestyle="--", linewidth=1)
        at = noise_at_target(noise, args.target) if noise else None
        if at:
            ax.axvline(at[1], color="tab:green", linestyle="-.", linewidth=1,
                       label=f"gradient noise scale B_simple {at[1]:.0f} (epoch {at[0]})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size (log 2)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    left.set_ylabel(f"training steps to {100 * args.target:g}% validation accuracy")
    right.set_ylabel(f"epochs to {100 * args.target:g}% validation accuracy")
    left.set_title("steps to target: dots are seeds, each batch size at its own tuned learning rate", fontsize=9)
    right.set_title("the same in passes over the training set: what a larger batch costs in data", fontsize=9)
    return _save(fig, folder / f"{NAME}_steps.png", args)


def _at(batch_size):
    """A stand-in row for a batch size (the epochs panel converts steps with its batch size)."""
    return Row(batch_size, None, [], "", None)


def plot_time(rows, folder, args):
    """Seconds to target and seconds per step against the batch size."""
    plt = plots.plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.4))
    timed = [r for r in rows if r.steps and r.seconds_per_step]
    seconds = [[s * r.seconds_per_step for s in r.steps] for r in timed]
    for r, values in zip(timed, seconds):
        left.plot([r.batch_size] * len(values), values, ".", color="tab:blue", alpha=0.5)
    left.plot([r.batch_size for r in timed], [statistics.mean(v) for v in seconds], "D-", color="tab:blue")
    if timed:
        fastest = min(range(len(timed)), key=lambda i: statistics.mean(seconds[i]))
        left.plot([timed[fastest].batch_size], [statistics.mean(seconds[fastest])], "o", markersize=14,
                  markerfacecolor="none", markeredgecolor="tab:red", markeredgewidth=2,
                  label=f"fastest to target: batch {timed[fastest].batch_size}")
        left.legend(fontsize=8)
    right.plot([r.batch_size for r in rows if r.seconds_per_step], [r.seconds_per_step for r in rows if r.seconds_per_step],
               "o-", color="tab:purple")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size (log 2)")
        ax.grid(alpha=0.3, which="both")
    left.set_ylabel(f"training seconds to {100 * args.target:g}% validation accuracy")
    left.set_title("time to target: steps x seconds per step (timing pass), dots are seeds", fontsize=9)
    right.set_ylabel("seconds per training step (timing pass)")
    right.set_title("the price of a step: flat while per-step overhead dominates, then linear in the batch", fontsize=9)
    return _save(fig, folder / f"{NAME}_time.png", args)


def plot_lr(rows, base, folder, args):
    """The chosen learning rate against the batch size, every rate tried as a dot (filled: all seeds
    reached the target), and the linear and square-root scaling rules through the base batch size."""
    plt = plots.plt
    fig, ax = plt.subplots(figsize=(8, 5.4))
    for r in rows:
        for t in r.trials:
            hit = t.score not in (None, -math.inf)
            ax.plot([r.batch_size], [t.lr], "o", color="grey", markersize=4, markerfacecolor="grey" if hit else "white")
    chosen = [r for r in rows if r.chosen]
    ax.plot([r.batch_size for r in chosen], [r.chosen.lr for r in chosen], "D-", color="tab:blue", label="chosen rate")
    ref = next((r for r in chosen if r.batch_size == base["batch_size"]), chosen[0] if chosen else None)
    if ref:
        sizes = [r.batch_size for r in rows]
        for rule, f, style in (("linear", lambda k: k, "--"), ("square root", math.sqrt, ":")):
            ax.plot(sizes, [ref.chosen.lr * f(b / ref.batch_size) for b in sizes], style, color="tab:orange",
                    label=f"{rule} scaling from batch {ref.batch_size}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size (log 2)")
    ax.set_ylabel("learning rate (log)")
    ax.set_title("learning rate that reaches the target in the fewest steps; dots: rates tried "
                 "(filled: every seed reached it)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, folder / f"{NAME}_lr.png", args)


def plot_noise(noise, fit, folder, args):
    """B_simple after each epoch of the --noise-scale run, beside the fitted critical batch size."""
    plt = plots.plt
    fig, ax = plt.subplots(figsize=(8, 5.4))
    rows = [m for m in noise["metrics"] if m.get("noise_scale")]
    ax.plot([m["epoch"] for m in rows], [m["noise_scale"] for m in rows], "o-", color="tab:green", label="B_simple")
    at = noise_at_target(noise, args.target)
    if at:
        ax.axvline(at[0], color="grey", linestyle=":", label=f"first epoch at {100 * args.target:g}% validation accuracy")
    if fit:
        ax.axhline(fit[1], color="tab:orange", linestyle="--", label=f"fitted B_crit {fit[1]:.0f}")
    config = noise["config"]
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("gradient noise scale B_simple = tr(Sigma) / |G|^2 (log)")
    ax.set_title(f"gradient noise scale during training: batch {config['batch_size']}, lr {config['lr']:g} constant",
                 fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, folder / f"{NAME}_noise.png", args)


def _plain(ax):
    """Log axes with plain-number tick labels (16, 1024, 0.05), not powers."""
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(plots.matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(plots.matplotlib.ticker.NullFormatter())


def _save(fig, path, args):
    for ax in fig.axes:
        _plain(ax)
    fig.suptitle(f"{NAME}: steps to {100 * args.target:g}% validation accuracy against the batch size", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plots.plt.close(fig)
    return path


def main(argv=None):
    args, base = parse(argv)
    data, tensors = dataloader.for_run(settings.make_config({**base, "batch_size": 1}), "cpu")
    n = len(tensors["train"][1])
    sizes = _sizes(args.batch_sizes, n)
    if not args.plot_only:
        runs.check_out(base["out"])
    threads = base["threads"] or max(1, (os.cpu_count() or 1) // args.jobs)
    context = multiprocessing.get_context("spawn")  # a forked torch can hang on its thread pool
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context, initializer=_start_worker,
                                                initargs=(threads,)) as pool:
        trials, first = search(base, sizes, args, n, pool)
    chosen = choose(trials, first, args.widen)
    noise = noise_scale_run({**base, "threads": threads}, chosen, args)
    folder = Path(base["out"]) / NAME
    folder.mkdir(parents=True, exist_ok=True)
    per_step = seconds_per_step(chosen, {**base, "threads": threads}, folder, threads, args.plot_only, n)
    rows = [Row(size, chosen[size][0], trials[size], chosen[size][1], per_step.get(size)) for size in sizes]
    reached = [(r.batch_size, statistics.mean(r.steps)) for r in rows if r.steps and len(r.steps) == len(r.chosen.summaries)]
    fit = fit_critical(*zip(*reached)) if len(reached) >= 3 else None
    report(rows, args, base, n, noise, fit)


def _sizes(text, n):
    """Batch sizes from --batch-sizes; 'full' is the whole training set."""
    try:
        sizes = [n if part.strip() == "full" else int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1 or max(sizes) > n:
        raise UserError(f"--batch-sizes {text!r}: expected sizes from 1 to {n} (the training set) separated by "
                        f"commas, or 'full', e.g. 16,64,256,full")
    return sorted(set(sizes))


if __name__ == "__main__":
    run_cli(main, "interrupted; run the same command again to resume: finished runs are reused")
