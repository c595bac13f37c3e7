"""Sweep tables, from run folders and the timing pass only: one row per value (mean ± std over seeds),
which values differ from the best by more than the noise between seeds, how each value's learning rate
was chosen, the grid of a two-setting sweep, and <out>/runs.csv, the index of every run."""
import csv
import io
import statistics
from pathlib import Path

import files
import outcomes
import runs
import settings
import stats


def mean_std(values, scale=1.0, digits=2):
    """'mean ± sample std' of values (times scale), '' for none."""
    if not values:
        return ""
    mean = statistics.mean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def to_target(run, target):
    """(epoch, training seconds) when test accuracy first reached target, else None."""
    return next(((m["epoch"], m["elapsed_seconds"]) for m in run.metrics if m["test_acc"] >= target), None)


def status_text(result):
    """'completed', or which seeds diverged where, which are missing or unfinished."""
    parts = []
    for run, seed in zip(result.runs, result.seeds):
        status = run.status if run else "missing"
        if status == "diverged":
            s = run.summary
            parts.append(f"seed {seed} diverged at epoch {s['diverged_epoch']} (step {s['diverged_step']})")
        elif status != "completed":
            parts.append(f"seed {seed} {status}")
    return "; ".join(parts) or "completed"


def table_row(result, target, timing, mark, column, fastest=None):
    """One row of the sweep table: mean ± std over the completed seeds of one value; fastest is the
    timing pass's seconds per epoch of the fastest value."""
    present, done = [r for r in result.runs if r], outcomes.completed(result)
    reached = [t for t in (to_target(r, target) for r in done) if t]
    seconds, source = outcomes.seconds_per_epoch(result, timing)
    row = {column: result.label, "lr": f"{result.lr:g}"}  # the value's own column wins if it is lr
    return {**row, **{column: result.label},
        "completed": f"{len(done)}/{len(result.runs)}",
        "final_test_acc_%": mean_std(outcomes.final_test_accs(result), 100), "vs_best": mark or "",
        "best_test_acc_%": mean_std([r.summary["best_test_acc"] for r in done], 100),
        "final_test_loss": mean_std([r.final("test_loss") for r in done], 1, 4),
        f"epochs_to_{100 * target:g}%": (mean_std([e for e, _ in reached], 1, 1) + f" ({len(reached)}/{len(done)})"
                                         if reached else "not reached" if done else ""),
        # From the timing pass where it timed the value: the run logs' seconds tell when a run trained
        # (beside what else) as much as what its settings cost.
        f"seconds_to_{100 * target:g}%": mean_std([e * seconds if source == "timing pass" else s for e, s in reached],
                                                  1, 1) if reached else "",
        "seconds_per_epoch": "" if seconds is None else f"{seconds:.2f}" + ("" if source == "timing pass" else " (log)"),
        "time_vs_fastest": f"{seconds / fastest:.2f}" if fastest and source == "timing pass" else "",
        "total_train_seconds": mean_std([r.summary["train_seconds"] for r in present], 1, 1),
        "status": status_text(result),
    }


def final_columns(result):
    """Every final_<metric> of the summaries, mean ± std over completed seeds, for the CSV: a metric
    added to train.py's epoch row appears here without a change to this file; a list, such as a value
    per layer, as one column per entry (final_grad_norms_1 for the first layer)."""
    flat = [_flat(r.summary) for r in outcomes.completed(result)]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    return {k: mean_std([f[k] for f in flat if f.get(k) is not None], 1, 6) for k in keys}


def _flat(summary):
    """A summary's numeric final_<metric> (and init_<metric>) values, lists spread over numbered keys."""
    return _spread({k: v for k, v in summary.items() if k.startswith(("final_", "init_"))})


def write_sweep_tables(results, timing, prefix, title, sweep):
    """<prefix>.csv and .md (a row per value), and where the lr is tuned <prefix>_tuning.csv and .md (a
    row per value, a column per learning rate tried). Returns the paths written."""
    marks, resolution = outcomes.comparison(results)
    fastest = outcomes.fastest_seconds(results, timing)
    rows = [table_row(r, sweep.target, timing, marks.get(r.label), sweep.column, fastest) for r in results]
    how = (f"s/epoch: timing pass, {timing['rounds']} rounds in which every value trained "
           f"{timing['fraction']:g} epoch in turn ({timing['threads']} thread(s), {timing['measured']}); a value's "
           f"time in a round over the round's geometric mean, median over rounds, times the median round mean; "
           f"time_vs_fastest: that median over the fastest value's; '(log)': median epoch of the run logs"
           if timing.get("rounds") else "s/epoch: median epoch of the run logs")
    caption = (f"{title}. Mean ± sample std over seeds {_seeds(sweep.seeds)} (accuracy, loss, time to target: "
               f"completed seeds only){_tuned(sweep)}. vs_best: {_test(resolution)} Time to "
               f"{100 * sweep.target:g}% test accuracy: the epochs to it and, in seconds, those epochs times s/epoch "
               f"(training only, not evaluation); total_train_seconds: the run logs'; {how}.")
    write_tables(rows, prefix, caption, extra=[final_columns(r) for r in results])
    paths = [f"{prefix}.csv", f"{prefix}.md"]
    if sweep.tuned:
        write_tables(tuning_rows(results, sweep.column), f"{prefix}_tuning",
                     f"Learning rate per value, {title}: for each lr tried, by its factor over the value's own lr, "
                     f"the score that chooses, {stats.TUNING_SCORE}, on the tuning seeds {_seeds(sweep.tune_seeds)} "
                     f"(in brackets the rate's own mean, %); * marks the lr kept; search: 'interior' where a higher and a lower rate were tried and scored lower. "
                     f"The test set plays no part in the choice.")
        paths += [f"{prefix}_tuning.csv", f"{prefix}_tuning.md"]
    return paths


def _seeds(seeds):
    return f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 2 else ", ".join(map(str, seeds))


def _tuned(sweep):
    return (f", each value at the learning rate its search chose on the tuning seeds {_seeds(sweep.tune_seeds)}, "
            f"which the comparison does not reuse" if sweep.tuned else "")


def _test(resolution):
    """The caption's account of the vs_best test and what it resolves."""
    text = (f"paired t-test of each value's final test accuracies against the best value's, seed by seed, "
            f"p Holm-adjusted over the values compared; 'lower' where it is below {stats.ALPHA:g}.")
    if not resolution:
        return text
    return (text + f" With {resolution['seeds']} seeds and a pooled sd of the per-seed differences of "
            f"{100 * resolution['sd']:.2f} points, it detects a difference of {100 * resolution['resolves']:.2f} "
            f"points with {stats.POWER:.0%} power at {stats.ALPHA:g}/{resolution['comparisons']}.")


def tuning_rows(results, column):
    """A row per value, a column per lr factor tried (any value's): the tuning score with the lr, * on the
    choice; and how the value's search ended."""
    factors = sorted({c.factor for r in results for c in r.options})
    rows = []
    for r in results:
        row = {column: r.label, **{_factor(f): "" for f in factors}}
        smooth = r.scores  # what sweep.choose compared
        for c in r.options:
            score = "" if smooth[c.factor] is None else f"{100 * smooth[c.factor]:.2f}"
            own = "" if c.val_score is None else f"{100 * c.val_score:.2f}, "
            star = "*" if c.factor == r.factor else ""
            note = outcomes.short_status(c)
            row[_factor(c.factor)] = f"{score}{star} ({own}lr {c.lr:g}{', ' + note if note else ''})"
        rows.append({**row, "search": r.search})
    return rows


def _factor(f):
    return f"x{f:.4g}" if f >= 1 else f"x1/{1 / f:.3g}"  # 3 digits: widened factors carry round_lr's rounding


def scaling_rows(rows, n):
    """The batch-scaling study's table (batch_scaling.py): a row per batch size at its chosen rate, from
    its rows (batch_size, lr, summaries, steps, tried, search, seconds_per_step); n: the training-set size."""
    out = []
    for r in rows:
        steps, per_step = r.steps, r.seconds_per_step
        out.append({
            "batch_size": r.batch_size, "lr": f"{r.lr:g}" if r.lr else "", "search": r.search,
            "reached": f"{len(steps)}/{len(r.summaries)}" if r.lr else "",
            "steps_to_target": mean_std(steps, 1, 0),
            "epochs_to_target": mean_std([s * r.batch_size / n for s in steps], 1, 2),
            "seconds_per_step": f"{per_step:.4f}" if per_step else "",
            "seconds_to_target": mean_std([s * per_step for s in steps], 1, 1) if per_step else "",
            "best_val_acc_%": mean_std([100 * s["best_val_acc"] for s in r.summaries if s], 1, 2) if r.lr else "",
            "rates_tried": len(r.tried)})
    return out


def scaling_caption(args, base, fit, threads, growth, patient):
    """The caption of the batch-scaling study's table: its options args, its base configuration, the fit
    (S_min, B_crit) or None, the timing pass's thread count, its evaluation growth and patience in steps."""
    config, every = settings.make_config(base), f"{100 * (growth - 1):.0f}%"
    described = (f"{config['dataset']}, MLP {'-'.join(map(str, [config['crop'] ** 2, *config['hidden'], 10]))}, "
                 f"{config['activation']}, loss {config['loss']}, {config['optimizer']}, {args.seeds} seed(s)")
    if config.get("train_size"):  # only then: the default study's caption stays as committed
        described += f", trained on a class-balanced subset of {config['train_size']} images (--train-size)"
    caption = (f"Steps to {100 * args.target:g}% validation accuracy, {described}. Each batch size at "
               f"the learning rate (constant, momentum {config['momentum']:g}) that reached "
               f"the target in the fewest steps (geometric mean over the seeds), searched over a factor-2 grid "
               f"that starts at the base rate scaled by the {args.lr_scaling} of the batch-size ratio and widens "
               f"while the best rate is on an edge; mean ± sample std over the seeds of that rate, which also "
               f"chose it. Evaluations after steps 1-10 and then every {every} more steps: a step count is the "
               f"first evaluation at or above the target, good to {every}. Seconds: steps times the seconds per "
               f"step of a timing pass in which the batch sizes trained in turn ({threads or 'default'} "
               f"thread(s)). Budget: {args.max_steps} steps or {args.max_epochs:g} epochs, whichever comes first; "
               f"a run also stops where its best validation accuracy has not improved over the last half of its "
               f"steps (from step {patient}).")
    if fit:
        caption += f" Fit of S = S_min (1 + B_crit / B): S_min {fit[0]:.0f} steps, B_crit {fit[1]:.0f}."
    return caption


# The columns of <sweep>_runs.csv taken from each run's summary.json as they are.
RUN_FIGURES = ("final_train_loss", "final_train_acc", "final_val_loss", "final_val_acc", "final_test_loss",
               "final_test_acc", "train_seconds")


def write_runs_csv(results, prefix, target, column, figures=RUN_FIGURES):
    """<prefix>_runs.csv: a row per run of the sweep, the tuning runs of each value and then its
    comparison runs, with the figures its tables are computed from (figures: summary.json's keys), in
    full precision, so that every mean, spread and paired test of the tables can be recomputed from git
    alone. Returns its path."""
    rows = []
    for r in results:
        for role, candidates in (("tuning", r.options), ("comparison", [r])):
            rows += [_run_row(column, r.label, c.lr, seed, role, run, target, figures)
                     for c in candidates for run, seed in zip(c.runs, c.seeds)]
    path = f"{prefix}_runs.csv"
    write_csv(path, rows, list(rows[0]))
    return path


def _run_row(column, label, lr, seed, role, run, target, figures):
    summary = run.summary if run else {}
    reached = to_target(run, target) if run and run.completed else None
    return {column: label, "lr": f"{lr:g}", "seed": seed, "role": role, "status": run.status if run else "missing",
            **{k: summary.get(k, "") for k in figures},
            f"epochs_to_{100 * target:g}%": reached[0] if reached else "", "run": run.dir.name if run else ""}


# The columns of a batch-scaling study's <name>_runs.csv taken from each run's summary.json.
SCALING_FIGURES = ("status", "reached", "steps", "epochs", "best_val_acc", "test_acc", "last_step", "seconds")


def write_scaling_runs_csv(chosen, prefix):
    """<prefix>_runs.csv of a batch-scaling study: a row per run, every rate tried at every batch size and
    seed (chosen: each batch size's chosen candidate, its options the rates tried), 'chosen' marking the
    rate the table reports; the same seeds choose and report a rate, so there is no role column. The
    table's steps, epochs and best validation accuracy are recomputable from it. Returns its path."""
    rows = [{"batch_size": size, "lr": f"{c.lr:g}", "seed": seed, "chosen": c.lr == pick.lr,
             **{k: run.summary.get(k, "") if run else "" for k in SCALING_FIGURES},
             "run": run.dir.name if run else ""}
            for size, pick in sorted(chosen.items()) for c in pick.options for run, seed in zip(c.runs, c.seeds)]
    path = f"{prefix}_runs.csv"
    write_csv(path, rows, list(rows[0]))
    return path


# The per-epoch columns of a --noise-scale run's <name>_noise.csv (diagnostics.noise_scale's keys).
NOISE_FIGURES = ("val_acc", "noise_scale", "noise_grad_sq", "noise_trace")


def write_noise_csv(noise, prefix):
    """<prefix>_noise.csv: the --noise-scale run's B_simple and validation accuracy after each epoch (the
    noise figure's points), so the figures quoted from it are recomputable. Returns its path."""
    rows = [{"epoch": m["epoch"], **{k: m.get(k, "") for k in NOISE_FIGURES}, "run": noise.dir.name}
            for m in noise.metrics if m.get("noise_scale")]
    path = f"{prefix}_noise.csv"
    write_csv(path, rows, ["epoch", *NOISE_FIGURES, "run"])
    return path


def write_tables(rows, prefix, caption, extra=None):
    """<prefix>.csv (rows, plus the extra columns per row) and <prefix>.md (rows) from dicts with the
    same keys."""
    full = [{**row, **more} for row, more in zip(rows, extra)] if extra else rows
    write_csv(f"{prefix}.csv", full, list(dict.fromkeys(k for row in full for k in row)))
    header = list(rows[0])
    lines = [f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
    lines += [f"| {' | '.join(str(row.get(h, '')).replace('|', '/') for h in header)} |" for row in rows]
    files.write_atomic(f"{prefix}.md", lambda tmp: tmp.write_text("\n".join(lines) + f"\n\n{caption}\n"))


def write_csv(path, rows, fields):
    """Write a list of dicts as a CSV file with the given columns, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    files.write_atomic(path, lambda tmp: tmp.write_text(buffer.getvalue()))


def write_grid(results, prefix, title, rows_name):
    """<prefix>.csv and .md: a row per value of the first setting, a column per value of the second,
    each cell the final test accuracy (%), mean ± std over seeds, or what went wrong, and the learning
    rate where show_lr says so."""
    rows, with_lr = {}, outcomes.show_lr(results)
    for r in results:
        a, b = r.point.coords
        notes = ", ".join(filter(None, [f"lr {r.lr:g}" if with_lr else "", outcomes.short_status(r)]))
        cell = " ".join(filter(None, [mean_std(outcomes.final_test_accs(r), 100), f"({notes})" if notes else ""]))
        rows.setdefault(a, {rows_name: a})[b] = cell
    write_tables(list(rows.values()), prefix, f"Final test accuracy (%), {title}.")
    return [f"{prefix}.csv", f"{prefix}.md"]


def write_index(out):
    """<out>/runs.csv: one row per run folder, its settings and final figures (pandas.read_csv)."""
    rows = []
    for run_dir, config, summary in runs.scan(out):
        values = {k: settings.format_value(v) for k, v in config.items() if not isinstance(v, dict)}
        rows.append({"run": run_dir.name, "status": summary.get("status"),
                     **{k: v for k, v in summary.items() if k not in ("status", "resume")}, **values})
    if rows:
        write_csv(Path(out) / "runs.csv", rows, list(dict.fromkeys(k for row in rows for k in row)))


def describe_base(sweep):
    """A short text naming the base configuration, for plot titles and table captions."""
    base = sweep.base
    config = settings.make_config(base)
    varied = set().union(*(p.settings for p in sweep.points))
    show = lambda dest, text: f"{dest.replace('_', ' ')} varied" if dest in varied else text  # noqa: E731
    if len(sweep.factors) > 1:
        lr = f"lr tuned per value (x{', x'.join(f'{f:g}' for f in sweep.factors)}, chosen on validation)"
    elif "lr" in varied and "batch_size" in varied:
        lr = f"lr scaled with the batch ({sweep.lr_scaling})"
    else:
        lr = "default lr" if "optimizer" in varied and base["lr"] is None else show("lr", f"lr {config['lr']:g}")
    hidden = "MLP " + "-".join(map(str, [config["crop"] ** 2] + config["hidden"] + [10])) + (
        ", crop varied" if "crop" in varied else "")
    return (f"{config['dataset']}, {show('hidden', hidden)}, {show('activation', config['activation'])}, "
            f"{show('loss', 'loss ' + config['loss'])}, {show('optimizer', config['optimizer'])}, {lr}, "
            f"{config['schedule']} schedule, {show('batch_size', 'batch ' + str(config['batch_size']))}, "
            f"{show('epochs', str(config['epochs']) + ' epochs')}, "
            + "".join(f"{text}, " for text in other_settings(base, varied))
            + f"{len(sweep.seeds)} seed{'s' * (len(sweep.seeds) > 1)}")


# Named in every title already, or not about what a run computes.
_TITLED = {"dataset", "data_dir", "no_verify", "crop", "hidden", "activation", "loss", "optimizer", "lr",
           "schedule", "batch_size", "epochs", "log_every"}


def other_settings(base, varied):
    """'norm batch', 'adversarial vat', 'rotate 10', 'val split varied', ...: every setting not titled
    already that the sweep varies or that its base sets off its default, so a title names what sets its
    runs apart."""
    texts = []
    for s in settings.SETTINGS:
        value, name = base.get(s.dest, s.default), s.dest.replace("_", " ")
        if s.scope != settings.RUN or s.dest in _TITLED:
            continue
        if s.dest in varied:
            texts.append(f"{name} varied")
        elif value is True:  # a switch such as --hflip
            texts.append(name)
        elif value not in (None, s.default):
            texts.append(f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}")
    return texts


def write_epochs_csv(results, prefix, column):
    """<prefix>_epochs.csv: a row per epoch of every comparison run (epoch 0: the init_ measurements taken
    before the first step), every numeric key of its metrics row, a list (a value per layer) spread over
    numbered columns (grad_norms_1 for the first layer), so that per-epoch figures such as gradient norms
    and activation statistics are in git beside the tables. lr is the value's chosen rate; the metrics'
    own lr (the schedule's rate at the epoch's last step) is epoch_lr, so that neither overwrites the
    other, nor a swept lr's column. Returns its path."""
    rows = []
    for result in results:
        for run, seed in zip(result.runs, result.seeds):
            metrics = run.metrics if run else []
            init = {k[len("init_"):]: v for k, v in metrics[0].items() if k.startswith("init_")} if metrics else {}
            for epoch, row in ([(0, init)] if init else []) + [(m["epoch"], m) for m in metrics]:
                rows.append({column: result.label, "lr": f"{result.lr:g}", "seed": seed, "epoch": epoch,
                             **_spread({("epoch_lr" if k == "lr" else k): v for k, v in row.items()
                                        if k != "epoch" and not k.startswith("init_")})})
    path = f"{prefix}_epochs.csv"
    write_csv(path, rows, list(dict.fromkeys(k for row in rows for k in row)))
    return path


def _spread(row):
    """A row's numeric values, a list's numbers spread over numbered keys (grad_norms_1: the first)."""
    flat = {}
    for key, value in row.items():
        if isinstance(value, list):
            flat.update({f"{key}_{i}": v for i, v in enumerate(value, 1) if isinstance(v, (int, float))})
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[key] = value
    return flat
