"""Final quality against the batch size, under three training budgets, on the sweep engine.

    python batch_quality.py                                    # 6 batch sizes x 3 budgets, 5 seeds
    python batch_quality.py --budgets epochs,updates --epochs 2 --seeds 3   # two budgets, shorter
    python batch_quality.py --batch-sizes 32,128,full          # 'full': the whole training set
    python batch_quality.py --jobs 2                           # two runs at once, a thread each on 2 cores
    python batch_quality.py --plot-only                        # table and plot the saved runs, train nothing
    python batch_quality.py --print-commands                   # one train.py line per missing run

Does a large batch end at a worse test accuracy, and at a sharper point, than a small one (Keskar et al.
2017), or only where it took fewer steps (Hoffer et al. 2017)? Each batch size (--batch-sizes, default
32 to 8192) trains under each budget (--budgets):

  epochs     a fixed number of epochs E (--epochs, default 4), the default cosine schedule to 0, as
             batch_size.py does: a large batch takes fewer steps;
  updates    matched updates (Hoffer et al.): every batch size takes the steps batch 128 takes in E
             epochs, E * ceil(n / 128), so E * B / 128 epochs, rounded to whole epochs (at least 1) as
             E * ceil(n / 128) / ceil(n / B); cosine to 0 over them;
  converged  until the validation accuracy stops improving: a constant learning rate (a schedule would
             fix the horizon in advance), stopped when validation accuracy has not improved for
             --patience epochs (default 10), or at --max-epochs (default 100). Patience and cap count
             epochs, so a large batch gets fewer steps of patience; the table gives the steps trained.

SGD with momentum 0.9, 784-256-128-10 ReLU, cross-entropy, as train.py. Each (budget, batch size)
searches its own learning rate as the sweeps do (sweep.py): a factor-2 grid (--tune-lr 0.5,1,2) around the
default rate 0.05 scaled from batch 128 by the square root of the batch ratio (--lr-scaling), widened
while the best rate is on an edge, on one tuning seed (--tune-seeds 1), scored by the smoothed mean
*best* validation accuracy (the table reports the test accuracy at the best validation epoch, so the
same epoch chooses). The comparison then trains --seeds 5 fresh seeds at the chosen rate; within each
budget every batch size is tested against the best one seed by seed (paired t-test, Holm), and the
caption says what difference that resolves. Every run measures its distance from initialisation
||theta_T - theta_0|| (--distance) and, once at its end, the sharpness (--end-sharpness: the largest
Hessian eigenvalue over 2048 training images; the end of a 'converged' run is its last epoch, up to
--patience epochs past its best one).

Outputs in results/batch_quality/: batch_quality.csv/.md (a row per budget and batch size: chosen lr,
whether its search was interior, mean ± std over seeds of best validation and test-at-best-validation
accuracy, final training loss and accuracy, distance from initialisation, end sharpness, epochs and
steps trained, vs_best), batch_quality_tuning.csv/.md (every rate tried), batch_quality_runs.csv (every
run), batch_quality.png (test error, sharpness and distance against the batch size, a line per
budget, error bars: std over seeds). --plot-only and the figure read the saved runs; nothing retrains.

Cost on 2 cores, measured (2026-12-06, AMD EPYC Zen 4, --jobs 2, one thread per run, other jobs niced
to fill idle cores): 168 runs (78 in the search over 4 rounds, 90 in the comparison) in 58.5 minutes
of wall time: 30.8 for the search, 27.7 for the comparison. Most of it is the matched updates of the
two largest batch sizes (8192 trains 246 epochs, 2048 64) and the converged runs (16 to 100 epochs;
every comparison run stopped on its patience before the 100-epoch cap). Two tuning seeds
(--tune-seeds 2) or the sweeps' five-rate first grid (--tune-lr 0.25,0.5,1,2,4) would about double the
search; cut it with --budgets, --batch-sizes, --seeds, or share it out (--print-commands).
"""
import errors

if __name__ == "__main__":
    errors.handle_interrupts()  # before torch loads: Ctrl-C while importing ends with one line too

import math
import statistics
import sys
from pathlib import Path

import dataloader
import outcomes
import plots  # noqa: I001 (before pyplot: it sets the file-only backend)
import settings
import stats
import sweep
import tables
from errors import UserError, run_cli

import matplotlib.pyplot as plt  # noqa: E402

NAME = "batch_quality"
BATCH_SIZES = [32, 64, 128, 512, 2048, 8192]
BUDGETS = ("epochs", "updates", "converged")
COLUMN = "budget / batch_size"
SEEDS = 5
# One tuning seed and a three-rate first grid (widened while the best rate is on an edge): 18 searches of
# up to 246 epochs each are what the study costs, and this keeps it to an hour on 2 cores.
TUNE_SEEDS, TUNE = 1, "0.5,1,2"
SCHEDULES = "the study sets each budget's schedule: cosine for epochs and updates, constant for converged"
OWNED = {  # train.py's settings the study sets itself, and why (settings.refuse)
    "batch_size": "the study sets it to each of --batch-sizes (the learning rates scale from the default batch "
                  "size: to move them, give --lr)",
    "schedule": SCHEDULES, "step_size": SCHEDULES, "gamma": SCHEDULES,
    "end_sharpness": "every run of the study measures it", "distance": "every run of the study measures it",
}
# The summary figures of batch_quality_runs.csv: the engine's, and what this study's table shows.
FIGURES = (*tables.RUN_FIGURES, "epochs_completed", "best_val_acc", "best_val_epoch", "test_acc_at_best_val",
           "final_distance", "end_sharpness", "end_sharpness_iterations", "stopped_early")


# ---------------------------------------------------------------------------- the plan

def parse(argv=None):
    """The study's options and its base configuration (train.py's settings, those in OWNED refused)."""
    p = settings.build_parser(sweep.SWEPT_SCOPES, __doc__.split("\n")[0], owned=OWNED)
    g = p.add_argument_group("study")
    g.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)),
                   help="comma-separated batch sizes ('full': the whole training set)")
    g.add_argument("--budgets", default=",".join(BUDGETS),
                   help="comma-separated budgets: epochs (--epochs each), updates (the steps batch 128 takes in "
                        "--epochs epochs), converged (constant lr until --patience epochs without a better "
                        "validation accuracy, at most --max-epochs)")
    g.add_argument("--max-epochs", type=settings.POSITIVE_INT, default=100, help="cap of a 'converged' run")
    g.add_argument("--lr-scaling", default="sqrt", choices=list(sweep.LR_SCALINGS),
                   help="where each batch size's search starts: the base lr times the batch ratio to the "
                        "default batch (linear) or its square root (sqrt)")
    sweep.engine_options(g, "the tuning seeds pick one per budget and batch size by best validation accuracy")
    g.add_argument("--tune-seeds", type=settings.POSITIVE_INT, default=TUNE_SEEDS, help="seeds that choose the rate")
    g.add_argument("--seeds", type=settings.POSITIVE_INT, default=SEEDS,
                   help="fresh seeds per budget and batch size in the comparison")
    g.add_argument("--force", action="store_true", help="retrain even finished runs")
    p.set_defaults(epochs=4, patience=10, tune_lr=TUNE)
    args = p.parse_args(argv)
    args.budget_list = parse_budgets(args.budgets)
    settings.refuse(p, args, {**OWNED, **unused(args)})
    base = sweep.base_config(args)
    if not base["val_split"]:
        raise UserError("the study chooses and reports at the best validation epoch: give --val-split N with N > 0")
    if "converged" in args.budget_list and not base["patience"]:
        raise UserError("--patience 0: the converged budget stops when validation stops improving; give N > 0")
    return args, {**base, "end_sharpness": True, "distance": True}


def unused(args):
    """The options this command would ignore, and why (see settings.refuse)."""
    out, budgets = {}, args.budget_list
    if "converged" not in budgets:
        out.update(patience="only the converged budget stops early", max_epochs="only the converged budget has a cap")
    if not {"epochs", "updates"} & set(budgets):
        out["epochs"] = "only the epochs and updates budgets use E; converged runs to --max-epochs"
    if len(sweep.parse_factors(args.tune_lr)) == 1:
        out.update(tune_seeds="only a learning-rate search uses it", widen="only a learning-rate search uses it")
    return out


def parse_budgets(text):
    budgets = [b.strip() for b in text.split(",") if b.strip()]
    if not budgets or set(budgets) - set(BUDGETS) or len(set(budgets)) != len(budgets):
        raise UserError(f"--budgets {text!r}: expected some of {','.join(BUDGETS)}, each once")
    return [b for b in BUDGETS if b in budgets]


def steps_per_epoch(n, size):
    return math.ceil(n / size)


def budget_epochs(budget, size, epochs, max_epochs, n, base_batch=settings.SETTING["batch_size"].default):
    """The epochs a run of batch `size` trains under a budget, on n training images: E (epochs) for
    'epochs'; for 'updates' the whole epochs nearest to the steps base_batch takes in E epochs (at least
    one); for 'converged' its cap."""
    if budget == "epochs":
        return epochs
    if budget == "updates":
        return max(1, round(epochs * steps_per_epoch(n, base_batch) / steps_per_epoch(n, size)))
    return max_epochs


def points(args, base, sizes, n):
    """The study's values: a sweep.Point per (budget, batch size), each with its budget's epochs,
    schedule and patience, and its batch-scaled starting learning rate."""
    base_lr = settings.make_config(base)["lr"]
    out = []
    for budget in args.budget_list:
        for size in sizes:
            lr = sweep.round_lr(base_lr * sweep.LR_SCALINGS[args.lr_scaling](size / base["batch_size"]))
            converged = budget == "converged"
            out.append(sweep.Point(f"{budget} / {size}", {
                "batch_size": size, "lr": lr, "epochs": budget_epochs(budget, size, base["epochs"], args.max_epochs, n),
                "schedule": "constant" if converged else "cosine", "patience": base["patience"] if converged else 0},
                (budget, str(size))))
    return out


def plan(args, base, n):
    """The study as a sweep.Sweep: its points, lr factors and seeds (the comparison's after the tuning ones)."""
    factors = sweep.parse_factors(args.tune_lr)
    tuned = len(factors) > 1
    tune_seeds = list(range(base["seed"], base["seed"] + args.tune_seeds)) if tuned else []
    first = base["seed"] + len(tune_seeds)
    return sweep.Sweep(NAME, base, points(args, base, sweep.batch_sizes(args.batch_sizes, n), n), COLUMN, factors,
                       args.widen, tune_seeds, list(range(first, first + args.seeds)), args.lr_scaling, 0.97)


def best_val_score(candidate):
    """A rate's mean best validation accuracy over its seeds (a seed that did not complete counts 0),
    None while a run is missing."""
    if not all(candidate.runs):
        return None
    return stats.rate_score([r.summary.get("best_val_acc") if r.completed else None for r in candidate.runs])


def scores(options):
    """{factor: score} of one value's rates: best_val_score smoothed over neighbouring rates (stats.smoothed)."""
    return stats.smoothed({c.factor: best_val_score(c) for c in options})


# ---------------------------------------------------------------------------- the table

def completed_summaries(result):
    return [r.summary for r in result.runs if r and r.completed]


def comparisons(results):
    """Within each budget, each batch size against the best (highest mean test accuracy at the best
    validation epoch), seed by seed (outcomes.compare_accs): ({label: mark}, {budget: resolution})."""
    marks, resolutions = {}, {}
    for budget in dict.fromkeys(r.point.coords[0] for r in results):
        accs = {r.label: {seed: run.summary["test_acc_at_best_val"] for run, seed in zip(r.runs, r.seeds)
                          if run and run.completed} for r in results if r.point.coords[0] == budget}
        found, resolutions[budget] = outcomes.compare_accs(accs)
        marks.update(found)
    return marks, resolutions


def table_row(result, mark, n):
    """One row of the combined table: a budget and batch size at its chosen rate, mean ± std over the
    completed comparison seeds."""
    done, size = completed_summaries(result), result.point.settings["batch_size"]
    epochs = [s["epochs_completed"] for s in done]

    def figure(key, scale=1.0, digits=2):
        return tables.mean_std([s[key] for s in done if s.get(key) is not None], scale, digits)

    return {"budget": result.point.coords[0], "batch_size": size, "lr": f"{result.lr:g}",
            "search": result.search or "not searched", "completed": f"{len(done)}/{len(result.runs)}",
            "epochs": tables.mean_std(epochs, 1, 1), "early_stops": sum(bool(s.get("stopped_early")) for s in done),
            "steps": tables.mean_std([e * steps_per_epoch(n, size) for e in epochs], 1, 0),
            "best_val_acc_%": figure("best_val_acc", 100),
            "test_acc_at_best_val_%": figure("test_acc_at_best_val", 100), "vs_best": mark or "",
            "final_train_loss": figure("final_train_loss", 1, 4), "final_train_acc_%": figure("final_train_acc", 100),
            "distance_from_init": figure("final_distance", 1, 1), "end_sharpness": figure("end_sharpness", 1, 1),
            "status": tables.status_text(result)}


def caption(study, args, n, resolutions):
    """The combined table's caption: the budgets, the search, the seeds and what each budget's test resolves."""
    config, e, p = settings.make_config(study.base), study.base["epochs"], study.base["patience"]
    base_batch = settings.SETTING["batch_size"].default
    budgets = {"epochs": f"epochs: {e} epochs at every batch size, cosine schedule to 0",
               "updates": f"updates: the {e * steps_per_epoch(n, base_batch)} steps batch 128 takes in {e} epochs "
                          f"(Hoffer et al. 2017), so {e} x B / 128 epochs rounded to whole epochs, cosine to 0",
               "converged": f"converged: constant rate until validation accuracy has not improved for {p} epochs, "
                            f"at most {args.max_epochs} epochs"}
    factors = ", x".join(f"{f:g}" for f in study.factors)
    search = (f"searched on the tuning seeds {', '.join(map(str, study.tune_seeds))} from the base rate "
              f"{config['lr']:g} scaled by the {args.lr_scaling} of B / 128 (x{factors}, widened while on an edge), "
              f"scored by {stats.TUNING_SCORE.replace('final', 'best')}" if study.tuned else "not searched")
    return (f"Final quality against the batch size B, {config['dataset']} ({n} training images), MLP "
            f"{'-'.join(map(str, [config['crop'] ** 2, *config['hidden'], 10]))}, optimizer {config['optimizer']} "
            f"(momentum {config['momentum']:g}). Budgets: {'; '.join(budgets[b] for b in args.budget_list)}. "
            f"Learning rate {search}; search 'interior' where a higher and a lower rate scored lower. Mean ± sample "
            f"std over seeds {', '.join(map(str, study.seeds))} (completed ones); test accuracy at the epoch of best "
            f"validation accuracy; early_stops: runs that stopped for want of progress (the rest ran their epochs "
            f"or cap); final training loss and accuracy: averages over the last epoch's steps; distance from "
            f"init: ||theta_T - theta_0|| over all weights at the end; end sharpness: the largest Hessian eigenvalue "
            f"of the training loss over 2048 training images at the end (power iteration). vs_best: within each "
            f"budget, a paired t-test of each batch size's test accuracy at best validation against the best batch "
            f"size's, seed by seed, p Holm-adjusted over the batch sizes compared; 'lower' where it is below "
            f"{stats.ALPHA:g}. {resolved(resolutions)}")


def resolved(resolutions):
    """What each budget's paired tests resolve (stats.paired_tests' resolution), as caption text."""
    parts = [f"{budget}: {r['seeds']} seeds, pooled sd of the per-seed differences {100 * r['sd']:.2f} points, "
             f"detects {100 * r['resolves']:.2f} points with {stats.POWER:.0%} power at "
             f"{stats.ALPHA:g}/{r['comparisons']}"
             if r else f"{budget}: nothing compared" for budget, r in resolutions.items()]
    return "Resolution, " + "; ".join(parts) + "."


# ---------------------------------------------------------------------------- the figure

def figure(results, path, title):
    """Test error at best validation, end sharpness and distance from init against the batch size (log
    x), a line per budget, error bars the sample std over completed seeds. Reads saved runs only. Error on
    a log axis, not accuracy: a budget that starves the largest batch (87% after 4 epochs at 8192) would
    flatten the tenths of a point between the others to nothing."""
    panels = (("test_acc_at_best_val", "test error at best val. (%, log)", lambda a: 100 * (1 - a), True),
              ("end_sharpness", "end sharpness (top Hessian eigenvalue)", lambda v: v, True),
              ("final_distance", "distance from init ||θ_T − θ_0||", lambda v: v, True))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2))
    budgets = list(dict.fromkeys(r.point.coords[0] for r in results))
    for (key, label, value, log), ax in zip(panels, axes):
        for (colour, _), budget in zip(plots.styles(len(budgets)), budgets):
            xs, means, sds = [], [], []
            for r in (r for r in results if r.point.coords[0] == budget):
                values = [value(s[key]) for s in completed_summaries(r) if s.get(key) is not None]
                if values:
                    xs.append(r.point.settings["batch_size"])
                    means.append(statistics.mean(values))
                    sds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
            ax.errorbar(xs, means, yerr=sds, color=colour, marker="o", capsize=3, label=budget)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r.point.settings["batch_size"] for r in results}))
        if log:
            ax.set_yscale("log")
        plots.plain_ticks(ax)  # 32, 8192 and 3, 20: not powers
        ax.set(xlabel="batch size", ylabel=label)
        ax.grid(alpha=0.3)
    axes[0].legend(title="budget")
    fig.suptitle(title + "\nerror bars: sample std over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- the command

def report(study, results, args, n):
    """Write the combined table, the tuning table, the per-run CSV and the figure into <out>/batch_quality/."""
    folder = Path(study.base["out"]) / NAME
    folder.mkdir(parents=True, exist_ok=True)
    marks, resolutions = comparisons(results)
    tables.write_tables([table_row(r, marks.get(r.label), n) for r in results], folder / NAME,
                        caption(study, args, n, resolutions))
    outputs = [folder / f"{NAME}.csv", folder / f"{NAME}.md"]
    if study.tuned:
        tables.write_tables(tables.tuning_rows(results, COLUMN), folder / f"{NAME}_tuning",
                            f"Learning rate per budget and batch size: for each rate tried, by its factor over the "
                            f"row's starting rate, the score that chose, "
                            f"{stats.TUNING_SCORE.replace('final', 'best')}, "
                            f"on the tuning seeds (in brackets the rate's mean final validation accuracy, %); * marks "
                            f"the rate kept. The test set plays no part in the choice.")
        outputs += [folder / f"{NAME}_tuning.csv", folder / f"{NAME}_tuning.md"]
    outputs.append(tables.write_runs_csv(results, folder / NAME, study.target, COLUMN, FIGURES))
    outputs.append(figure(results, folder / f"{NAME}.png", f"{NAME}: {n} training images, {len(study.seeds)} seeds"))
    tables.write_index(study.base["out"])
    print((folder / f"{NAME}.md").read_text())
    print("wrote " + ", ".join(map(str, outputs)))


def training_size(base):
    """The number of training images the runs train on (after --val-split and --train-size)."""
    return len(dataloader.for_run(settings.make_config({**base, "batch_size": 1}), "cpu")[1]["train"][1])


def main(argv=None):
    args, base = parse(argv)
    n = training_size(base)
    study = plan(args, base, n)
    return sweep.run_compared(study, args, lambda results, _: report(study, results, args, n), scores)


if __name__ == "__main__":
    sys.exit(run_cli(main, sweep.STOPPED))
