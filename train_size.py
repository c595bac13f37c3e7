"""The training-set-size study (issue 27): does the batch size training wants depend on the training set?

    python train_size.py                          # N = 6875,13750,27500,55000: both parts, 2 seeds
    python train_size.py --jobs 2 --threads 1     # two runs at once, one thread each (2 cores)
    python train_size.py --plot-only              # table and figure from the saved runs, nothing trained
    python train_size.py --print-commands         # one command per missing run, for a cluster
    python train_size.py --train-sizes 500,1000 --batch-sizes 16,128 --fixed-batch-sizes 16,128 \\
        --target 0.8 --max-epochs 5 --fixed-epochs 2 --seeds 1 --fixed-seeds 2 --tune-lr 1   # a smoke test

For each N in --train-sizes, two studies on a nested, class-balanced subset of N training images
(--train-size N), both on the existing engines (no training loop of its own):
  1. steps to --target validation accuracy against the batch size, the constant rate searched per batch
     size: batch_scaling.py --train-size N --sweep-name batch_scaling_n<N>, which also fits the critical
     batch size B_crit and trains a --noise-scale run at batch 128 for B_simple (so --batch-sizes must
     hold 128 for B_simple). Shallue et al. (2019, Sec. 4.5) and McCandlish et al. (2018) find the steps
     to a target nearly unchanged in N once the rate is tuned.
  2. one fixed rate for every batch size: batch_size.py's contrast (--lr-scaling none --tune-lr 1) at a
     constant schedule, train.py's default rate (or --lr) and momentum, --fixed-epochs epochs, as
     batch_size_fixed_lr_n<N>; the batch size with the best mean final validation accuracy. Smith & Le
     (2018) predict B_opt = eps N / (1 - m) up to a constant: best/N the same at every N, a slope of 1
     of log B_opt against log N. The epochs are fixed, so a run's steps scale as N / B.
Flags not listed under "study" (--lr, --hidden, --out, --threads, --seed, ...) go to both engines as
train.py settings. Combined outputs in <out>/train_size/: train_size.md and .csv (a row per N) and
train_size.png (steps to target, and validation accuracy at the fixed rate, against the batch size, a
curve per N). B_simple is read at the noise-scale run's first epoch at or above the target (its last
epoch where none is), as batch_scaling.py's figure reads it.

Target: 0.93 by default. One check run (train.py --train-size 6875 --epochs 5 --schedule constant
--threads 1: batch 128, lr 0.05, momentum 0.9) reached 89.7, 92.9, 92.6, 94.4, 94.4% validation
accuracy over its 5 epochs, its training accuracy already 98.3%: 97% looks out of reach at 6,875
images and 95% was not reached; 0.93 leaves about 1.4 points of margin (0.94 may do: try --target 0.94).
--lr moves both part 2's fixed rate and the rate part 1's search starts from.
Cost of the default study on 2 cores, estimated from batch_scaling.py's 14 minutes (10 sizes, 2 seeds,
full MNIST, to 97%) and not measured: part 1 costs about the same at every N (the steps to a target
hardly depend on N): about half of those 14 minutes per N (5 sizes, without the costly 4096 and 8192)
plus a few seconds to start each of its ~60 runs, so 30 to 40 minutes for four N; part 2 scales with
N: 7 sizes x 2 seeds x 12 epochs at about 9 s an epoch for the 7 sizes together at 55,000, about 4
minutes there and 8 for the four N (1.9 times the full set), with run start-up and timing passes about
12. In all about 45 minutes to an hour; --jobs 2 --threads 1 overlaps the runs' start-up.
"""
import errors

if __name__ == "__main__":
    errors.handle_interrupts()  # before torch loads: Ctrl-C while importing ends with one line too

import argparse
import csv
import math
import statistics
import sys
from pathlib import Path

import batch_scaling
import dataloader
import plots
import scaling_plots
import settings
import sweep
import tables
from errors import UserError, run_cli

NAME = "train_size"
TRAIN_SIZES = [6875, 13750, 27500, 55000]  # 1/8, 1/4, 1/2 and all of the training images after --val-split
BATCH_SIZES = [16, 64, 128, 512, 2048]     # part 1: 128 is the noise-scale run's batch size
FIXED_BATCH_SIZES = [16, 32, 64, 128, 256, 512, 1024]  # part 2
TARGET = 0.93
# Flags the study sets itself for each engine, and what to give instead.
REFUSED = {
    "--train-size": "the study trains at each of --train-sizes",
    "--batch-size": "the study sets the batch sizes: give --batch-sizes (part 1) and --fixed-batch-sizes (part 2)",
    "--epochs": "part 1 stops at --target (give --max-steps, --max-epochs); part 2: give --fixed-epochs",
    "--schedule": "both parts train at a constant rate",
    "--sweep-name": "the study names its folders batch_scaling_n<N> and batch_size_fixed_lr_n<N>",
    "--values": "give --fixed-batch-sizes",
    "--lr-scaling": "part 1 starts its search at the sqrt-scaled rate; part 2 keeps one rate (none)",
}


def part_one_name(n):
    """The output folder and prefix of part 1 (batch_scaling.py) at training-set size n."""
    return f"batch_scaling_n{n}"


def part_two_name(n):
    """The output folder and prefix of part 2 (the fixed-rate batch-size sweep) at training-set size n."""
    return f"batch_size_fixed_lr_n{n}"


# ---------------------------------------------------------------------------- options

def parse(argv=None):
    """The study's own options, and the remaining flags, which go to both engines as train.py settings."""
    # allow_abbrev=False: --batch-size must be refused below, not taken for --batch-sizes
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                epilog="Other flags are train.py settings given to both parts (see train.py --help).")
    g = p.add_argument_group("study")
    g.add_argument("--train-sizes", default=",".join(map(str, TRAIN_SIZES)), help="comma-separated sizes N")
    g.add_argument("--target", type=settings.FRACTION, default=TARGET, help="validation accuracy of part 1")
    g.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)), help="part 1's batch sizes")
    g.add_argument("--seeds", type=settings.POSITIVE_INT, default=2, help="part 1's seeds per batch size and rate")
    g.add_argument("--tune-lr", default=sweep.TUNE, help="part 1's first learning-rate factors (1: no search)")
    g.add_argument("--max-steps", type=settings.POSITIVE_INT, default=40000, help="part 1's step budget of a run")
    g.add_argument("--max-epochs", type=settings.POSITIVE, default=300, help="part 1's budget in epochs")
    g.add_argument("--fixed-batch-sizes", default=",".join(map(str, FIXED_BATCH_SIZES)), help="part 2's batch sizes")
    g.add_argument("--fixed-epochs", type=settings.POSITIVE_INT, default=12, help="part 2's epochs per run")
    g.add_argument("--fixed-seeds", type=settings.POSITIVE_INT, default=2, help="part 2's seeds per batch size")
    g.add_argument("--jobs", type=settings.POSITIVE_INT, default=1, help="runs trained at once")
    g.add_argument("--plot-only", action="store_true", help="train and time nothing; table and plot the saved runs")
    g.add_argument("--print-commands", action="store_true", help="print one command per missing run; train nothing")
    g.add_argument("--out", default="results", help="results root, as train.py's")
    args, rest = p.parse_known_args(argv)
    for flag in rest:
        if flag.split("=")[0] in REFUSED:
            raise UserError(f"{flag.split('=')[0]}: {REFUSED[flag.split('=')[0]]}")
    if args.plot_only and args.print_commands:
        raise UserError("--plot-only and --print-commands: give one")
    args.train_sizes = _ints(args.train_sizes, "--train-sizes")
    args.batch_sizes, args.fixed_batch_sizes = (_ints(args.batch_sizes, "--batch-sizes"),
                                                _ints(args.fixed_batch_sizes, "--fixed-batch-sizes"))
    return args, rest


def _ints(text, flag):
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise UserError(f"{flag} {text!r}: expected positive whole numbers separated by commas, e.g. 16,128")
    return values


def check_sizes(args, available, classes):
    """Refuse train sizes outside [classes, available] and batch sizes above the smallest N, before
    anything trains (the engines would refuse them only at that N)."""
    bad = [n for n in args.train_sizes if not classes <= n <= available]
    if bad:
        raise UserError(f"--train-sizes: {', '.join(map(str, bad))} outside {classes} (one image per class) to "
                        f"{available}, the training images left after --val-split")
    smallest = min(args.train_sizes)
    for flag, sizes in (("--batch-sizes", args.batch_sizes), ("--fixed-batch-sizes", args.fixed_batch_sizes)):
        if max(sizes) > smallest:
            raise UserError(f"{flag}: batch {max(sizes)} is larger than the smallest training set ({smallest} "
                            f"images); give batch sizes up to {smallest}")


def part_one_argv(args, rest, n):
    """batch_scaling.py's command line at training-set size n."""
    return [*rest, "--out", args.out, "--train-size", str(n), "--sweep-name", part_one_name(n),
            "--batch-sizes", ",".join(map(str, args.batch_sizes)), "--target", str(args.target),
            "--seeds", str(args.seeds), "--tune-lr", args.tune_lr, "--max-steps", str(args.max_steps),
            "--max-epochs", str(args.max_epochs), "--jobs", str(args.jobs), *_modes(args)]


def part_two_argv(args, rest, n):
    """The fixed-rate batch-size sweep's command line at training-set size n (batch_size.py's contrast)."""
    return [*rest, "--out", args.out, "--train-size", str(n), "--sweep-name", part_two_name(n),
            "--values", ",".join(map(str, args.fixed_batch_sizes)), "--lr-scaling", "none", "--tune-lr", "1",
            "--schedule", "constant", "--epochs", str(args.fixed_epochs), "--seeds", str(args.fixed_seeds),
            "--target", str(args.target), "--jobs", str(args.jobs), *_modes(args)]


def _modes(args):
    return ["--plot-only"] * args.plot_only + ["--print-commands"] * args.print_commands


# ---------------------------------------------------------------------------- combining

def part_one(found):
    """What the combined table takes from part 1's batch_scaling.Study: the mean steps to target of each
    batch size that every seed reached, 'k/s' reached of each, the fit and the noise-scale run."""
    steps = {r.batch_size: statistics.mean(r.steps) for r in found.rows if r.steps and len(r.steps) == len(r.summaries)}
    reached = {r.batch_size: f"{len(r.steps)}/{len(r.summaries)}" if r.lr else "" for r in found.rows}
    return {"steps": steps, "reached": reached, "fit": found.fit, "noise": found.noise}


def read_fixed(path):
    """Part 2's runs from its <name>_runs.csv: {batch size: (lr, [final validation accuracy of each
    comparison seed, None where that run is missing or has none])}."""
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["role"] == "comparison":
                acc = float(row["final_val_acc"]) if row["final_val_acc"] else None
                out.setdefault(int(row["batch_size"]), (float(row["lr"]), []))[1].append(acc)
    return out


def best_batch(fixed):
    """(batch size, mean accuracy) with the best mean final validation accuracy among the batch sizes
    whose every seed has one; None where none has."""
    means = {b: statistics.mean(accs) for b, (_, accs) in fixed.items() if accs and None not in accs}
    if not means:
        return None
    b = max(means, key=means.get)
    return b, means[b]


def log_slope(ns, values):
    """Least-squares slope of log value against log N: 1 where the values grow in proportion to N."""
    xs, ys = [math.log(n) for n in ns], [math.log(v) for v in values]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else None


def table_rows(parts, target, batch_sizes):
    """A row per N from parts {N: {"one": part_one(...) or None, "fixed": read_fixed(...) or None}}."""
    rows = []
    for n, part in sorted(parts.items()):
        one, fixed = part.get("one"), part.get("fixed")
        row = {"train_size": n, "target_%": f"{100 * target:g}"}
        for b in batch_sizes:
            mean = one["steps"].get(b) if one else None
            row[f"steps_b{b}"] = f"{mean:.0f}" if mean else (f"not reached ({one['reached'].get(b)})" if one and
                                                              one["reached"].get(b) else "")
        fit = one["fit"] if one else None
        row["S_min"], row["B_crit"] = (f"{fit[0]:.0f}", f"{fit[1]:.0f}") if fit else ("", "")
        at = scaling_plots.noise_at_target(one["noise"], target) if one and one["noise"] else None
        late = "" if not at or any(m.get("val_acc", 0) >= target for m in one["noise"].metrics) else \
            ", the last: target not reached"
        row["B_simple_at_target"] = f"{at[1]:.0f} (epoch {at[0]}{late})" if at else ""
        row["B_simple_range"] = f"{at[2]:.0f}-{at[3]:.0f}" if at else ""
        best = best_batch(fixed) if fixed else None
        row["fixed_lr"] = f"{next(iter(fixed.values()))[0]:g}" if fixed else ""
        row["best_batch"] = best[0] if best else ""
        row["best_val_acc_%"] = f"{100 * best[1]:.2f}" if best else ""
        row["best_on_edge"] = ("yes" if best[0] in (min(fixed), max(fixed)) else "no") if best else ""
        row["best_over_N"] = f"{best[0] / n:.3g}" if best else ""
        rows.append(row)
    return rows


def caption(args, rows):
    """The combined table's caption, with the slope of log best batch against log N."""
    best = [(r["train_size"], r["best_batch"]) for r in rows if r["best_batch"]]
    slope = log_slope(*zip(*best)) if len(best) >= 2 else None
    text = (f"{NAME}: per training-set size N (class-balanced subset). Part 1 ({part_one_name('<N>')}): steps to "
            f"{100 * args.target:g}% validation accuracy, mean over the {args.seeds} seed(s) of each batch size's "
            f"chosen constant rate (searched per batch size; 'not reached (k/s)': not every seed reached it), "
            f"S = S_min (1 + B_crit / B) fitted to the batch sizes every seed reached (3 or more), B_simple of the "
            f"noise-scale run at batch 128 at its first epoch at the target (its last where none is) and its range "
            f"over the run. Part 2 ({part_two_name('<N>')}): one constant rate and momentum for every batch size, "
            f"{args.fixed_epochs} epochs, {args.fixed_seeds} seed(s); the batch size with the best mean final "
            f"validation accuracy, 'best_on_edge' where it is the smallest or largest tried (the optimum may lie "
            f"beyond). Smith & Le predict best/N the same at every N.")
    if slope is not None:
        text += f" Slope of log best batch against log N: {slope:.2f} (1: in proportion to N)."
    return text


def figure(parts, target, path):
    """Steps to target against the batch size, and the fixed rate's validation accuracy against it, a
    curve per N (the best batch size marked); read from the saved runs only."""
    fig, (left, right) = plots.plt.subplots(1, 2, figsize=(11, 4.5))
    off = []  # part 2's off-scale batch sizes of each N, and its colour
    for (n, part), (colour, dash) in zip(sorted(parts.items()), plots.styles(len(parts))):
        one, fixed = part.get("one"), part.get("fixed")
        if one and one["steps"]:
            sizes = sorted(one["steps"])
            left.plot(sizes, [one["steps"][b] for b in sizes], "o", ls=dash, color=colour, label=f"N = {n}")
            if one["fit"]:  # the fitted S_min (1 + B_crit / B), thin, over the sizes reached
                grid = [sizes[0] * (sizes[-1] / sizes[0]) ** (i / 50) for i in range(51)]
                left.plot(grid, [one["fit"][0] * (1 + one["fit"][1] / b) for b in grid], ":", color=colour, lw=1)
        if fixed:
            off.append((_fixed_curve(right, fixed, colour, dash, f"N = {n}"), colour))
    left.set(ylabel=f"steps to {100 * target:g}% validation accuracy (log)",
             title="steps to target, the rate tuned per batch size (dotted: fit)")
    for i, (sizes, colour) in enumerate(off):  # at the top, stacked by N: they are off the axis, not values
        right.plot(sizes, [0.96 - 0.05 * i] * len(sizes), "^", ms=9, color=colour, ls="",
                   transform=right.get_xaxis_transform())
    right.set(ylabel="final validation error (%, log)",
              title=f"one fixed constant rate and momentum (star: best;\n"
                    f"triangle: more than {plots.OFF_SCALE} points above the best, off the axis)")
    for ax in (left, right):
        if not ax.lines:  # nothing saved yet: an empty panel, not a log axis without data
            continue
        ax.set_yscale("log")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size (log 2)")
        ax.grid(alpha=0.3, which="both")
        plots.plain_ticks(ax)
        ax.legend(fontsize=8)
    fig.suptitle(f"{NAME}: the batch size against the training-set size N", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plots.plt.close(fig)
    return path


def _fixed_curve(ax, fixed, colour, dash, label):
    """Part 2's mean final validation error against the batch size on ax (log), the best batch size
    starred; returns the batch sizes left off, more than plots.OFF_SCALE points above the best (a
    collapse to chance), which the caller marks at the axis' top: the differences between those that
    train stay visible."""
    errors = {b: 100 - 100 * statistics.mean(accs) for b, (_, accs) in sorted(fixed.items()) if None not in accs}
    if not errors:
        return []
    low = min(errors.values())
    kept = {b: e for b, e in errors.items() if e <= low + plots.OFF_SCALE}
    ax.plot(list(kept), list(kept.values()), "o", ls=dash, color=colour, label=label)
    best = best_batch(fixed)
    if best:
        ax.plot([best[0]], [100 - 100 * best[1]], "*", ms=16, color=colour, mec="black")
    return sorted(set(errors) - set(kept))


def report(args, parts):
    """Write <out>/train_size/train_size.{md,csv,png}; returns their paths."""
    folder = Path(args.out) / NAME
    folder.mkdir(parents=True, exist_ok=True)
    rows = table_rows(parts, args.target, args.batch_sizes)
    tables.write_tables(rows, folder / NAME, caption(args, rows))
    paths = [folder / f"{NAME}.md", folder / f"{NAME}.csv", figure(parts, args.target, folder / f"{NAME}.png")]
    print((folder / f"{NAME}.md").read_text())
    print("wrote " + ", ".join(map(str, paths)))
    return paths


# ---------------------------------------------------------------------------- the command

def main(argv=None):
    args, rest = parse(argv)
    # The engines' own parsers check the forwarded flags; part 1's also gives the data settings.
    _, base = batch_scaling.parse(part_one_argv(args, rest, min(args.train_sizes)))
    data, tensors = dataloader.for_run(settings.make_config({**base, "batch_size": 1, "train_size": None}), "cpu")
    check_sizes(args, len(tensors["train"][1]), len(data["classes"]))
    parts, failed = {}, False
    for n in args.train_sizes:
        found, code = None, 0
        if _saved(args, part_one_name(n)):
            print(f"== N = {n}: part 1, steps to {100 * args.target:g}% ({part_one_name(n)})", flush=True)
            found = batch_scaling.study(part_one_argv(args, rest, n))
        if _saved(args, part_two_name(n)):
            print(f"== N = {n}: part 2, one fixed rate ({part_two_name(n)})", flush=True)
            code = sweep.run_sweep(part_two_argv(args, rest, n), "batch_size", args.fixed_batch_sizes,
                                   "Sweep the batch size at one fixed rate (train_size.py, part 2).")
        failed |= bool(code) or bool(found and found.failed)
        if not args.print_commands:
            runs_csv = Path(args.out) / part_two_name(n) / f"{part_two_name(n)}_runs.csv"
            parts[n] = {"one": part_one(found) if found else None,
                        "fixed": read_fixed(runs_csv) if runs_csv.exists() else None}
    if not args.print_commands:
        report(args, parts)
    return 1 if failed else 0


def _saved(args, name):
    """Whether to run an engine: always, except under --plot-only where it has not trained yet (no timing
    pass saved: there is nothing of it to plot, and batch_scaling.py's figures fail on no runs at all)."""
    if not args.plot_only or (Path(args.out) / name / f"{name}_timing.json").exists():
        return True
    print(f"{name}: nothing saved yet, left out", flush=True)
    return False


if __name__ == "__main__":
    sys.exit(run_cli(main, "interrupted; run the same command again to resume: finished runs are reused"))
