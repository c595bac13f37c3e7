"""SGD against full-batch gradient descent from the same initial weights, at the same learning rate
times steps.

    python sgd_vs_gd.py      # the study of REPORT.md: --train-size 2048 --lr 0.4 --time 76.8 --batch-sizes 32,128 --seeds 2,3

For each seed, rate (--lr times each of --factors) and batch size (each of --batch-sizes, then the whole
training subset: gradient descent), plain SGD at a constant rate takes time / rate steps from the seed's
initial weights, so every rate travels the same "time" (Smith et al. 2021: for small rates SGD follows
the gradient-flow path that full-batch descent follows). Then it measures the training loss over the whole
subset, validation and test accuracy, and the distance between each SGD run's weights and the descent
run's (same seed and rate). A script of its own, not a sweep: descent takes one step per epoch, and
train.py's evaluation and checkpoint after every epoch would cost several times its steps. Further
train.py flags (--hidden, --loss, ...) set the runs; --optimizer, --schedule and --batch-size are its own.
Writes results/sgd_vs_gd/sgd_vs_gd_every_run.csv (every run; not a sweep's <sweep>_runs.csv) and
sgd_vs_gd.csv/.md (mean ± std over seeds).
"""
import argparse
import math
import sys
from pathlib import Path

import errors

if __name__ == "__main__":
    errors.handle_interrupts()  # before torch loads: Ctrl-C while importing ends with one line too

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import dataloader  # noqa: E402
import settings  # noqa: E402
import stats  # noqa: E402
import tables  # noqa: E402
import train  # noqa: E402


OWN = ("--optimizer", "--schedule", "--batch-size", "--seed", "--epochs")  # train.py flags this script sets


def weight_distance(a, b):
    """Euclidean distance between two state dicts with the same keys, over all their tensors."""
    return math.sqrt(sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in a))


def run(config, tensors, steps):
    """Train config's seeded model for `steps` steps of plain SGD at its constant rate; returns
    (initial weights, final weights, figures)."""
    trainer = train.build_trainer(config, tensors, "cpu")
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    x, y = tensors["train"]
    per_epoch = math.ceil(len(y) / config["batch_size"])
    with tqdm(disable=True) as progress:  # train_epoch's progress bar, silent
        for epoch in range(steps // per_epoch):
            if train.train_epoch(trainer, x, y, epoch, progress).bad_step is not None:
                return start, trainer.model.state_dict(), {"status": "diverged"}
    figures = {"status": "completed"}
    for split in ("train", "val", "test"):
        figures[f"{split}_loss"], figures[f"{split}_acc"] = train.evaluate(trainer.model, trainer.eval_loss_fn,
                                                                           *tensors[split])
    return start, trainer.model.state_dict(), figures


def check_steps(args):
    """Refuse a --time that is not a whole number of epochs at some rate and batch size (an epoch is the
    unit train_epoch runs)."""
    for factor in args.factors:
        for batch in args.batch_sizes:
            steps = round(args.time / (args.lr * factor))
            if steps % math.ceil(args.train_size / batch):
                raise errors.UserError(f"--time {args.time:g} / lr {args.lr * factor:g} = {steps} steps is not a "
                                       f"whole number of epochs at batch {batch}: choose --time so that it is")


def base_config(args, extra):
    """train.py's config for the runs: the further flags, then what this script sets."""
    return settings.make_config(settings.build_parser().parse_args(
        [*extra, "--train-size", str(args.train_size), "--optimizer", "sgd", "--schedule", "constant",
         "--threads", str(args.threads), "--device", "cpu", "--quiet"]))


def study(args, base):
    """Every (seed, factor, batch size) run, full batch first; returns the per-run rows."""
    torch.set_num_threads(args.threads)
    _, tensors = dataloader.for_run(base, "cpu")
    rows = []
    for seed in args.seeds:
        for factor in args.factors:
            lr = args.lr * factor
            steps = round(args.time / lr)
            descent = None
            for batch in [args.train_size, *args.batch_sizes]:
                config = {**base, "seed": seed, "lr": lr, "batch_size": batch}
                start, end, figures = run(config, tensors, steps)
                descent = descent or (start, end)
                rows.append({"seed": seed, "factor": factor, "lr": lr, "batch_size": batch, "steps": steps,
                             **figures, "distance_to_gd": weight_distance(end, descent[1]),
                             "gd_travel": weight_distance(descent[0], descent[1]),
                             "same_start": weight_distance(start, descent[0]) == 0})
                print(", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()),
                      flush=True)
    return rows


def vs_descent(rows):
    """Each SGD (factor, batch size) against descent at the same rate, seed by seed, on validation
    accuracy: ({key: per-seed differences in points}, {key: paired t-test p, Holm-adjusted over the keys},
    the difference the test detects with 80% power, None below 2 seeds)."""
    full = max(r["batch_size"] for r in rows)
    done = [r for r in rows if r["status"] == "completed"]
    descent = {(r["seed"], r["factor"]): r for r in done if r["batch_size"] == full}
    pairs = {}
    for r in done:
        if r["batch_size"] != full and (r["seed"], r["factor"]) in descent:
            pairs.setdefault((r["factor"], r["batch_size"]), []).append(
                (100 * r["val_acc"], 100 * descent[r["seed"], r["factor"]]["val_acc"]))
    adjusted, resolution = stats.paired_tests({k: tuple(zip(*v)) for k, v in pairs.items() if len(v) >= 2})
    return {k: [a - b for a, b in v] for k, v in pairs.items()}, adjusted, resolution.get("resolves")


def summary_rows(rows):
    """Mean ± std over seeds per (factor, batch size), and each SGD row against descent (vs_descent)."""
    out, (diffs, adjusted, _) = [], vs_descent(rows)
    for factor, batch in dict.fromkeys((r["factor"], r["batch_size"]) for r in rows):
        runs = [r for r in rows if (r["factor"], r["batch_size"]) == (factor, batch)]
        group = [r for r in runs if r["status"] == "completed"]
        pick = lambda key: [r[key] for r in group]  # noqa: E731
        out.append({"lr": f"{runs[0]['lr']:g} (x{factor:g})",
                    "batch": f"{batch} (GD)" if batch == max(r["batch_size"] for r in rows) else batch,
                    "steps": runs[0]["steps"], "completed": f"{len(group)}/{len(runs)}",
                    "train_loss": tables.mean_std(pick("train_loss"), digits=4),
                    "val_acc_%": tables.mean_std(pick("val_acc"), 100),
                    "test_acc_%": tables.mean_std(pick("test_acc"), 100),
                    "val_minus_gd_points": tables.mean_std(diffs.get((factor, batch), [])),
                    "vs_gd": f"p {adjusted[factor, batch]:.2g}" if (factor, batch) in adjusted else "",
                    "distance_to_gd": tables.mean_std(pick("distance_to_gd"), digits=3),
                    "distance_over_gd_travel": tables.mean_std(
                        [r["distance_to_gd"] / r["gd_travel"] for r in group], digits=3)})
    return out


def write_outputs(rows, folder, args):
    """<name>_every_run.csv (rows) and <name>.csv/.md (summary_rows) in folder; returns the .md's text."""
    folder.mkdir(parents=True, exist_ok=True)
    tables.write_csv(folder / f"{args.name}_every_run.csv", rows, list(rows[0]))
    resolves = vs_descent(rows)[2]
    caption = (f"{args.name}: plain SGD at a constant rate, {args.train_size} training images, seeds "
               f"{', '.join(map(str, args.seeds))}, lr x steps = {args.time:g} for every run; each seed's runs "
               "start from the same weights. val_minus_gd_points: the run's validation accuracy minus full-batch "
               "descent's (same seed and rate), per seed; vs_gd: the paired t-test of the two over seeds, p "
               "Holm-adjusted over the SGD rows" + (f", which detects {resolves:.2f} points with 80% power at "
               "0.05" if resolves is not None else "") + ". distance_to_gd: Euclidean distance over all weights "
               "and biases between the run's final weights and descent's (same seed and rate); "
               "distance_over_gd_travel: that over how far descent moved from the initial weights. "
               "Mean ± sample std over seeds; training loss over the whole subset, in eval mode.")
    tables.write_tables(summary_rows(rows), folder / args.name, caption)
    return Path(folder / f"{args.name}.md").read_text()


def main(argv=None):
    parser = argparse.ArgumentParser(  # no abbreviations: train.py's --batch-size is not --batch-sizes
        description=__doc__.split("\n\n")[0], allow_abbrev=False,
        epilog="Any other train.py flag (python train.py --help) sets every run, e.g. --hidden 128 or --loss mse.")
    parser.add_argument("--train-size", type=int, default=2048, help="training images (a class-balanced subset)")
    parser.add_argument("--lr", type=float, default=0.4, help="the rate that the factors scale")
    parser.add_argument("--factors", type=lambda t: [float(f) for f in t.split(",")], default=[1, 0.25, 0.0625],
                        help="the rates tried, as factors of --lr, e.g. 1,0.25,0.0625")
    parser.add_argument("--time", type=float, default=76.8,
                        help="learning rate times steps, the same for every run: a whole number of epochs at each")
    parser.add_argument("--batch-sizes", type=lambda t: [int(b) for b in t.split(",")], default=[32, 128],
                        help="SGD's batch sizes, compared with full batch")
    parser.add_argument("--seeds", type=lambda t: [int(s) for s in t.split(",")], default=[2, 3],
                        help="each seed fixes the initial weights that its runs share")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="sgd_vs_gd", help="results/<name>/<name>.md and .csv")
    args, extra = parser.parse_known_args(argv)
    taken = [flag for flag in OWN if any(e == flag or e.startswith(flag + "=") for e in extra)]
    if taken:
        raise errors.UserError(f"{taken[0]} is set by sgd_vs_gd.py itself (plain SGD, constant rate, "
                               "the batch sizes of --batch-sizes and full batch): leave it out")
    base = base_config(args, extra)
    check_steps(args)
    rows = study(args, base)
    print(write_outputs(rows, Path(base["out"]) / args.name, args))


if __name__ == "__main__":
    sys.exit(errors.run_cli(main))
