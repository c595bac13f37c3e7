"""Sweep figures, from run folders and the timing pass only: loss, error, time, and a grid's heatmap.

Each value is one colour (dashed past ten values): a line for the mean over seeds and a band from the
lowest to the highest seed. Accuracy is shown as error (100 - accuracy, %) on a log axis, the MNIST
convention, so that 1.5% against 2.0% is visible. The axis is fitted to the values that work: a value
with no completed seed, or one whose final test error is more than OFF_SCALE points above the best
value's (a collapse to chance, say), is drawn clipped, and marked and named where it leaves the axis.
Diverged runs are drawn up to where they diverged and marked with an X.
"""
import math
import statistics
import warnings

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.transforms as mtransforms  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

import outcomes  # noqa: E402

BAND = "line: mean over seeds, band: min–max over seeds"
OFF_SCALE = 20        # points of test error above the best value's final error that leave the axis
ERROR_FLOOR = 0.01    # % error: an epoch without mistakes is drawn here, on the log axis
# Tick mantissas for log axes, coarse to fine: the first tier with 3 ticks or more in the range is used,
# thinned to 10 at most.
MANTISSAS = ((1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8),
             tuple(1 + k / 10 for k in range(90)))


def styles(n):
    """n (colour, line style) pairs told apart: tab10's colours, then again dashed."""
    cmap = plt.get_cmap("tab10")
    return [(cmap(i % 10), "-" if i < 10 else "--") for i in range(n)]


def grid_styles(results):
    """For a grid of up to four rows: a colour per column value and a line style per row value, so a
    figure of many lines reads by both factors; otherwise styles(n)."""
    parts = [r.label.split(" / ") for r in results]
    rows = list(dict.fromkeys(p[0] for p in parts))
    if any(len(p) != 2 for p in parts) or len(rows) > 4:
        return styles(len(results))
    cols = list(dict.fromkeys(p[1] for p in parts))
    colour = dict(zip(cols, styles(len(cols))))
    return [(colour[col][0], ("-", "--", "-.", ":")[rows.index(row)]) for row, col in parts]


def _stack(series):
    """Pad per-seed lists with NaN into one array (seeds x points)."""
    length = max((len(s) for s in series), default=0)
    out = np.full((len(series), length), np.nan)
    for i, s in enumerate(series):
        out[i, :len(s)] = s
    return out


def _nan(reduce, data):
    """reduce over seeds, ignoring NaN; a column that is all NaN (every seed stopped) stays NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return reduce(data, 0)


def _band(ax, x, series, style, band=True):
    """Draw the mean line and the min–max band of per-seed series along x; returns the mean."""
    data = _stack(series)
    if data.shape[1] == 0 or np.isnan(data).all():
        return np.array([])
    mean = _nan(np.nanmean, data)
    x = np.asarray(x)[:len(mean)]
    colour, linestyle = style
    ax.plot(x, mean, color=colour, linestyle=linestyle, marker="o", markersize=3,
            markevery=max(1, len(x) // 12))  # a marker on every one of 200 epochs is a smear
    if band and data.shape[0] > 1:
        ax.fill_between(x, _nan(np.nanmin, data), _nan(np.nanmax, data), color=colour, alpha=0.15, linewidth=0)
    return mean


def _runs(result):
    return [r for r in result.runs if r]


def _metric(result, key):
    return [[m[key] for m in r.metrics] for r in _runs(result)]


def _errors(result, key):
    """Per-seed error (%) series of an accuracy key, floored for the log axis."""
    return [[max(100 * (1 - a), ERROR_FLOOR) for a in s] for s in _metric(result, key)]


def _diverged(result):
    """Epochs at which this value's seeds diverged."""
    return sorted({r.summary["diverged_epoch"] for r in _runs(result) if r.status == "diverged"})


def _label(result, show_lr):
    epochs = _diverged(result)
    return (result.label + (f" (lr {result.lr:g})" if show_lr else "")
            + (f", diverged at epoch {', '.join(map(str, epochs))}" if epochs else ""))


def _final_error(result):
    finals = outcomes.final_test_accs(result)
    return 100 * (1 - statistics.mean(finals)) if finals else None


def off_scale(results):
    """Labels of the values left off the error axes: no completed seed, or a final test error more
    than OFF_SCALE points above the best value's."""
    finals = {r.label: _final_error(r) for r in results}
    known = [e for e in finals.values() if e is not None]
    best = min(known, default=0.0)
    return {label for label, e in finals.items() if e is None or e > best + OFF_SCALE}


def _limits(curves, margin=1.15):
    """Log-axis limits around the finite values of some curves."""
    values = np.concatenate([np.ravel(c) for c in curves if len(c)] or [np.array([1.0])])
    values = values[np.isfinite(values) & (values > 0)]
    return (values.min() / margin, values.max() * margin) if values.size else (0.1, 100)


def _log_axis(ax, low, high, axis="y"):
    """A log axis from low to high with plain-number ticks (1.5, 2, 3 ...), enough to read values."""
    for mantissas in MANTISSAS:
        ticks = [round(m * 10.0 ** e, 6) for e in range(-3, 3) for m in mantissas if low <= m * 10.0 ** e <= high]
        if len(ticks) >= 3:
            break
    ticks = ticks[::max(1, -(-len(ticks) // 10))]
    getattr(ax, f"set_{axis}scale")("log")
    getattr(ax, f"set_{axis}lim")(low, high)
    getattr(ax, f"set_{axis}ticks")(ticks, [f"{t:g}" for t in ticks])
    getattr(ax, f"{axis}axis").set_minor_formatter(matplotlib.ticker.NullFormatter())


def plain_ticks(ax):
    """Plain-number tick labels (16, 1024, 0.05), not powers, on both of ax's log axes, no minor labels;
    a log y axis gets 1-2-5 major ticks, so that one spanning a decade or less keeps labelled ticks."""
    if ax.get_yscale() == "log":
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _mark_leaving(ax, x, mean, high, text, style):
    """Mark where an off-scale curve leaves the top of the axis (or its first point), and name it."""
    if not len(mean):
        return
    above = np.flatnonzero(~(mean <= high))
    i = above[0] if len(above) else len(mean) - 1
    ax.plot([x[i]], [high], marker="^", markersize=8, color=style[0], clip_on=False)
    inward = -1 if x[i] > (x[0] + x[-1]) / 2 else 1  # written towards the middle: never past the axis' edge
    ax.annotate(text, (x[i], high), xytext=(4 * inward, -10), textcoords="offset points", fontsize=7,
                color=style[0], ha="left" if inward > 0 else "right")


def _off_text(result):
    error = _final_error(result)
    return f"{result.label}: {error:.1f}% error" if error is not None else f"{result.label}: no completed seed"


def _mark_diverged(axes, result, colour):
    """An X at the top of each panel above the epoch where a seed diverged."""
    for ax in axes:
        top = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
        for epoch in _diverged(result):
            ax.plot([epoch], [0.97], marker="X", markersize=10, color=colour, transform=top, clip_on=False)
            ax.axvline(epoch, color=colour, linestyle=":", linewidth=1)


def _legend(fig, results, all_styles, title, path, band=BAND):
    """The shared legend below the panels, the title above; save and close."""
    handles = [plt.Line2D([], [], color=c, linestyle=ls, marker="o", markersize=3) for c, ls in all_styles]
    with_lr = outcomes.show_lr(results)
    labels = [_label(r, with_lr) for r in results]
    n = len(results)
    ncol = n if n <= 6 else min(6, -(-n // 2))
    ncol = min(ncol, 3) if any(len(label) > 28 for label in labels) else ncol
    fig.suptitle(title, fontsize=10, wrap=True)
    fig.legend(handles, labels, loc="lower center", ncol=max(ncol, 1), fontsize=9, title=band,
               title_fontsize=8, frameon=False)
    rows = -(-n // max(ncol, 1))
    fig.tight_layout(rect=(0, 0.05 + 0.045 * rows, 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_loss(results, path, title):
    """Training loss (every --log-every steps, faint, and per epoch) next to test loss per epoch."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.4))
    all_styles, train_losses, test_losses = styles(len(results)), [], []
    for result, style in zip(results, all_styles):
        for xs, ys in _step_curves(result):
            left.plot(xs, ys, color=style[0], alpha=0.2, linewidth=0.6)
        train_loss, test_loss = _metric(result, "train_loss"), _metric(result, "test_loss")
        epochs = np.arange(1, max(map(len, train_loss), default=0) + 1)
        _band(left, epochs, train_loss, style)
        _band(right, epochs, test_loss, style)
        train_losses += train_loss
        test_losses += [[v for v in s if v is not None] for s in test_loss]
        _mark_diverged((left, right), result, style[0])
    positive = np.array([v for s in train_losses for v in s if v is not None and np.isfinite(v) and v > 0])
    if positive.size and positive.max() / positive.min() > 30:
        left.set_yscale("log")
    _log_axis(right, *_limits(test_losses))  # plain-number ticks: test losses span less than a decade
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    left.set_ylabel("training loss (per sample)")
    left.set_title("training loss: per epoch (line) and every --log-every steps (faint)", fontsize=9)
    right.set_ylabel("test loss (per sample)")
    right.set_title("test loss after each epoch", fontsize=9)
    return _legend(fig, results, all_styles, title, path)


def _step_curves(result):
    """Per-seed training loss every --log-every steps, at fractional epochs (epoch e spans e-1 to e)."""
    curves = []
    for r in _runs(result):
        by_epoch = {}
        for _, epoch, loss in r.steps:
            by_epoch.setdefault(epoch, []).append(loss)
        xs = [e - 1 + (i + 1) / len(ls) for e, ls in sorted(by_epoch.items()) for i in range(len(ls))]
        ys = [loss if np.isfinite(loss) else np.nan for _, ls in sorted(by_epoch.items()) for loss in ls]
        curves.append((xs, ys))
    return curves


def _error_panel(ax, results, all_styles, key, xs_of, off):
    """Error (%) curves of an accuracy key against xs_of(result) on a fitted log axis."""
    drawn = {}
    for result, style in zip(results, all_styles):
        series = _errors(result, key)
        x = xs_of(result, series)
        # An off-scale value's band would reach from its good seeds to its collapsed ones across the axis.
        drawn[result.label] = (x, _band(ax, x, series, style, band=result.label not in off), style)
    low, high = _limits([mean for label, (_, mean, _) in drawn.items() if label not in off])
    _log_axis(ax, low, high)
    for result in results:
        if result.label in off:
            x, mean, style = drawn[result.label]
            _mark_leaving(ax, x, mean, high, _off_text(result), style)
    ax.grid(alpha=0.3, which="both")
    return low, high


def _epochs(result, series):
    return np.arange(1, max(map(len, series), default=0) + 1)


def _timed_seconds(result, series, timing):
    """Cumulative training seconds after each epoch: the epochs times the timing pass's seconds per
    epoch, which measure the settings; the run logs' mean elapsed seconds where the pass did not time
    the value (they measure also what else the machine ran then)."""
    seconds, source = outcomes.seconds_per_epoch(result, timing)
    if source == "timing pass":
        return _epochs(result, series) * seconds
    elapsed = _metric(result, "elapsed_seconds")
    return _nan(np.nanmean, _stack(elapsed)) if any(elapsed) else np.array([])


def plot_acc(results, marks, path, title):
    """Training and test error per epoch, and the values ranked by final test error."""
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(17, 5.6), gridspec_kw={"width_ratios": [1, 1, 0.9]})
    all_styles, off = styles(len(results)), off_scale(results)
    _error_panel(left, results, all_styles, "train_acc", _epochs, off)
    _error_panel(middle, results, all_styles, "test_acc", _epochs, off)
    for result, style in zip(results, all_styles):
        _mark_diverged((left, middle), result, style[0])
    left.set_title(f"training error during each epoch (%, log; 0 drawn at {ERROR_FLOOR:g})", fontsize=9)
    middle.set_title("test error after each epoch (%, log)", fontsize=9)
    for ax in (left, middle):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_ylabel("error (%) = 100 - accuracy")
    _ranking(right, results, all_styles, marks, off)
    return _legend(fig, results, all_styles, title, path)


def _ranking(ax, results, all_styles, marks, off):
    """Each value's final test error: seeds as dots, the mean as a large marker, best at the top.
    Filled: the best value and those within noise of it (outcomes.comparison); hollow: lower."""
    order = sorted(results, key=lambda r: (r.label in off, _final_error(r) if _final_error(r) is not None else 1e9))
    seeds = {r.label: [100 * (1 - a) for a in outcomes.final_test_accs(r)] for r in results}
    low, high = _limits([seeds[r.label] for r in results if r.label not in off], margin=1.08)
    style_of = {r.label: s for r, s in zip(results, all_styles)}
    for rank, r in enumerate(order):
        colour = style_of[r.label][0]
        if r.label in off:
            error = _final_error(r)
            ax.annotate(f"{error:.1f}% ▸" if error is not None else "none completed ▸", (1, rank), fontsize=8,
                        xycoords=("axes fraction", "data"), ha="right", va="center", color=colour)
            continue
        values = seeds[r.label]
        ax.plot(values, [rank] * len(values), "o", color=colour, markersize=3, alpha=0.6)
        filled = marks.get(r.label, "best").split()[0] in ("best", "within")
        ax.plot([statistics.mean(values)], [rank], "D", markersize=8, color=colour,
                markerfacecolor=colour if filled else "white", markeredgewidth=1.5)
    ax.set_yticks(range(len(order)), [r.label for r in order], fontsize=8)
    ax.set_ylim(len(order) - 0.5, -0.5)
    _log_axis(ax, low, high, axis="x")
    ax.grid(alpha=0.3, which="both", axis="x")
    ax.set_xlabel("final test error (%, log)")
    # Right-aligned: long value names narrow the panel, and a centred title would run off the figure.
    ax.set_title("ranking: seeds (dots) and mean (diamond); filled = best or\nwithin noise of it (paired t-test, Holm p ≥ 0.05), "
                 "hollow = lower", fontsize=9, loc="right")


def plot_time(results, timing, path, title):
    """Seconds per epoch of each value (the timing pass), and test error against training seconds."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.4))
    all_styles, off = styles(len(results)), off_scale(results)
    fastest = outcomes.fastest_seconds(results, timing)
    for i, (result, style) in enumerate(zip(results, all_styles)):
        seconds, source = outcomes.seconds_per_epoch(result, timing)
        if seconds is None:
            left.text(i, 0, "no finished\nepoch", ha="center", va="bottom", fontsize=8, color=style[0])
            continue
        timed = timing.get("values", {}).get(result.label) if source == "timing pass" else None
        spread = [[seconds - timed["low"]], [timed["high"] - seconds]] if timed else None
        left.bar(i, seconds, color=style[0], yerr=spread, capsize=3, hatch=None if timed else "//",
                 edgecolor="white")
        if timed:
            left.text(i, timed["high"], f"{seconds / fastest:.2f}x", ha="center", va="bottom", fontsize=7)
    left.set_xlim(-0.6, len(results) - 0.4)
    left.set_xticks(range(len(results)), [r.label for r in results], rotation=30, ha="right", fontsize=8)
    left.set_ylabel("training seconds per epoch")
    rounds = timing.get("rounds")
    left.set_title(f"timing pass: {rounds} rounds, values in turn, {timing['threads']} thread(s), drift between "
                   f"rounds\ndivided out; error bar: quartiles over rounds; above it: time over the fastest value's;\n"
                   f"hatched: median epoch of the run logs"
                   if rounds else
                   "median epoch of the run logs", fontsize=9)
    left.grid(alpha=0.3, axis="y")
    _error_panel(right, results, all_styles, "test_acc", lambda r, series: _timed_seconds(r, series, timing), off)
    right.set_xlabel("training seconds: epochs x s/epoch of the timing pass (else of the run logs)")
    right.set_ylabel("test error (%, log)")
    right.set_title("time to accuracy", fontsize=9)
    return _legend(fig, results, all_styles, title, path)


def sweep_plots(results, timing, prefix, title):
    """Write <prefix>_loss.png, <prefix>_acc.png and <prefix>_time.png; returns their paths."""
    prefix, marks = str(prefix), outcomes.comparison(results)[0]
    return [plot_loss(results, f"{prefix}_loss.png", title), plot_acc(results, marks, f"{prefix}_acc.png", title),
            plot_time(results, timing, f"{prefix}_time.png", title)]


def heatmap(results, path, title, names):
    """Final test accuracy (mean over completed seeds) of a two-setting grid, each cell annotated;
    a cell with no completed seed is grey and says why."""
    rows = list(dict.fromkeys(r.point.coords[0] for r in results))
    cols = list(dict.fromkeys(r.point.coords[1] for r in results))
    cells = {r.point.coords: r for r in results}
    grid = np.full((len(rows), len(cols)), np.nan)
    for (a, b), r in cells.items():
        finals = outcomes.final_test_accs(r)
        if finals:
            grid[rows.index(a), cols.index(b)] = 100 * np.mean(finals)
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    low, high = (np.nanmin(grid), np.nanmax(grid)) if np.isfinite(grid).any() else (0, 100)
    fig, ax = plt.subplots(figsize=(1.7 * len(cols) + 3, 0.9 * len(rows) + 2.5))
    # The colours span the cells' own range (not up to 100%), so close cells still differ in colour.
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=low, vmax=max(high, low + 0.01))
    with_lr = outcomes.show_lr(results)
    for (a, b), r in cells.items():
        i, j = rows.index(a), cols.index(b)
        value, note = grid[i, j], outcomes.short_status(r)
        text = (f"{value:.2f}" if np.isfinite(value) else "") + (f"\n(lr {r.lr:g})" if with_lr else "") \
            + (f"\n({note})" if note else "")
        dark = np.isfinite(value) and image.norm(value) < 0.6
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(names[1])
    ax.set_ylabel(names[0])
    fig.colorbar(image, label="final test accuracy (%), mean over completed seeds")
    ax.set_title(title, fontsize=8, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def lr_plot(results, path, title):
    """The learning-rate search: final validation error against the learning rate, a line per value
    through the mean over its tuning seeds, each seed a dot, the chosen rate ringed (left); the same
    relative to the value's chosen rate and its error there, so the widths of the plateaus compare
    (right). A mean above an axis is drawn at its top as a triangle; a rate where a seed did not
    complete is an X at the top."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.8))
    all_styles = grid_styles(results)
    searches = [_search(r) for r in results]
    best = min((e for s in searches for _, e in s["means"]), default=1.0)
    high = min(max((e for s in searches for _, e in s["means"]), default=100.0), 3 * best) * 1.1
    for r, s, style in zip(results, searches, all_styles):
        _search_line(left, s["means"], high, style, s["failed"])
        left.plot([lr for lr, _ in s["dots"]], [min(e, high) for _, e in s["dots"]], ".", color=style[0], alpha=0.5)
        if s["chosen"]:
            left.plot([r.lr], [min(s["chosen"], high)], "o", markersize=11, markerfacecolor="none",
                      markeredgecolor=style[0], markeredgewidth=2)
            _search_line(right, [(lr / r.lr, e / s["chosen"]) for lr, e in s["means"]], RATIO_TOP, style,
                         [lr / r.lr for lr in s["failed"]])
    left.set_xscale("log")
    # rates labelled plainly, 1-2-5 when they span under two decades: the default log labels overlap there
    rates = [lr for s in searches for lr, _ in s["dots"]] or [1.0]
    narrow = max(rates) / min(rates) < 100
    left.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5) if narrow else (1,)))
    left.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    left.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    _log_axis(left, best / 1.15, high)
    left.set_xlabel("learning rate (log)")
    left.set_ylabel("final validation error (%, log)")
    left.set_title("validation error after training at each rate tried: mean over the tuning seeds (line), "
                   "each seed (dots),\nthe chosen rate (ring); triangle: above the axis; X: a seed diverged",
                   fontsize=9)
    right.set_xscale("log", base=2)
    right.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}" if v >= 1 else f"1/{1 / v:g}"))
    ratios = [e / s["chosen"] for s in searches if s["chosen"] for _, e in s["means"]]
    _log_axis(right, min([0.9] + [q / 1.05 for q in ratios]), RATIO_TOP)
    right.axhline(1, color="grey", linewidth=0.8)
    right.set_xlabel("learning rate / chosen learning rate (log 2)")
    right.set_ylabel("error / error at the chosen rate (log)")
    right.set_title("the same, each value relative to its chosen rate: a flat curve forgives a wrong rate", fontsize=9)
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
    return _legend(fig, results, all_styles, title, path, band="line: mean over the tuning seeds, dots: seeds, "
                                                            "ring: chosen rate")


RATIO_TOP = 2.0  # the relative panel shows errors up to twice the chosen rate's


def _search_line(ax, points, top, style, failed):
    """A value's (x, error) line clipped at top, a triangle at the top where it leaves the axis, and an X at
    the top over each x in failed."""
    xs, ys = [x for x, _ in points], np.array([e for _, e in points])
    ax.plot(xs, np.minimum(ys, top), color=style[0], linestyle=style[1], marker="o", markersize=3)
    above = [x for x, y in zip(xs, ys) if y > top]
    if above:  # an empty unclipped line would still pull tight_layout towards the figure's corner
        ax.plot(above, [top] * len(above), "^", color=style[0], markersize=8, clip_on=False)
    at_top = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    for x in failed:
        ax.plot([x], [0.97], marker="X", markersize=8, color=style[0], transform=at_top, clip_on=False)


def _search(result):
    """A value's search for the lr plot: mean final validation error (%) per rate whose seeds all completed,
    each seed's, the rates where one did not, and the error at the chosen rate."""
    means, dots, failed = [], [], []
    for c in sorted(result.options, key=lambda c: c.factor):
        errors = [100 * (1 - run.final("val_acc")) for run in c.runs if run and run.completed]
        if errors and len(errors) == len(c.runs):
            means.append((c.lr, statistics.mean(errors)))
            dots += [(c.lr, e) for e in errors]
        else:
            failed.append(c.lr)
    chosen = dict(means).get(result.lr)
    return {"means": means, "dots": dots, "failed": failed, "chosen": chosen}


def gradient_plot(results, path, title):
    """--diagnostics of each value, mean over its seeds, layer by layer from the input: the gradient norm
    of each linear layer's weights at initialisation and after the last epoch, and the fraction of each
    hidden layer's units that are dead (zero on every validation image) after the last epoch."""
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.6))
    all_styles = grid_styles(results)
    panels = (("init_grad_norms", 0, "gradient norm at initialisation (log)"),
              ("grad_norms", -1, "gradient norm after the last epoch (log)"),
              ("dead_units", -1, "dead units after the last epoch (fraction)"))
    for result, style in zip(results, all_styles):
        done = [r for r in outcomes.completed(result) if r.metrics and "grad_norms" in r.metrics[-1]]
        for ax, (key, epoch, _) in zip(axes, panels):
            per_seed = [r.metrics[epoch][key] for r in done if key in r.metrics[epoch]]
            if per_seed:
                mean = np.mean(per_seed, axis=0)
                ax.plot(np.arange(1, len(mean) + 1), mean, color=style[0], linestyle=style[1], marker="o", markersize=3)
    for ax, (key, _, label) in zip(axes, panels):
        ax.set_xlabel("layer, from the input (hidden layers only for dead units)")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="both")
        if key != "dead_units":
            ax.set_yscale("log")
            low, high = ax.get_ylim()
            if high < 100 * low:  # under two decades matplotlib labels ticks as 6x10^-1: plain numbers instead
                _log_axis(ax, low, high)
        else:
            ax.set_ylim(bottom=0)  # a fraction: no negative room when no unit died
    axes[0].set_title("|dL/dW| per layer at the start: vanishing shows as a fall towards the input", fontsize=9)
    axes[1].set_title("|dL/dW| per layer after training", fontsize=9)
    axes[2].set_title("units never active on the validation set (ReLU's dead units)", fontsize=9)
    return _legend(fig, results, all_styles, title, path, band="line: mean over the completed seeds")


def activation_stats_plot(results, path, title):
    """--activation-stats of each value per epoch, epoch 0 being initialisation: a column per hidden layer,
    the fraction of its activations that are exactly 0 on the validation images (top; ReLU's sparsity) and
    its mean activation (bottom; how far from centred on zero), mean line and min–max band over seeds."""
    done = [[r for r in outcomes.completed(result) if r.metrics and "zero_fraction" in r.metrics[0]]
            for result in results]
    layers = max((len(r.metrics[0]["zero_fraction"]) for runs in done for r in runs), default=1)
    fig, axes = plt.subplots(2, layers, figsize=(6.5 * layers, 9), squeeze=False)
    all_styles = styles(len(results))
    for runs, style in zip(done, all_styles):
        for row, key in enumerate(("zero_fraction", "mean_activation")):
            per_seed = [[r.metrics[0][f"init_{key}"]] + [m[key] for m in r.metrics] for r in runs]
            for layer in range(layers):
                series = [[epoch[layer] for epoch in s] for s in per_seed if len(s[0]) > layer]
                _band(axes[row, layer], np.arange(max(map(len, series), default=0)), series, style)
    for layer in range(layers):
        axes[0, layer].set_title(f"hidden layer {layer + 1}: fraction of activations exactly 0", fontsize=9)
        axes[1, layer].set_title(f"hidden layer {layer + 1}: mean activation", fontsize=9)
        axes[1, layer].axhline(0, color="grey", linewidth=0.8)
        for ax in axes[:, layer]:
            ax.set_xlabel("epoch (0: initialisation)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        axes[0, layer].set_ylim(-0.02, 1.02)
    return _legend(fig, results, all_styles, title, path)


def gradient_loss_plot(results, path, title):
    """--diagnostics per epoch: the gradient norm over all layers (the root of the sum of the layers'
    squared norms, on 2,048 training images after the epoch) against the epoch, and against the epoch's
    mean training loss, on log axes: a loss whose gradient shrinks as its error shrinks falls along a line
    there, one whose gradient keeps its size stays flat."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.4))
    all_styles = styles(len(results))
    for result, style in zip(results, all_styles):
        runs = [r for r in outcomes.completed(result) if r.metrics and "grad_norms" in r.metrics[0]]
        norms = [[math.sqrt(sum(g * g for g in m["grad_norms"])) for m in r.metrics] for r in runs]
        losses = [[m["train_loss"] for m in r.metrics] for r in runs]
        mean = _band(left, np.arange(1, max(map(len, norms), default=0) + 1), norms, style)
        if len(mean):
            right.plot(_nan(np.nanmean, _stack(losses))[:len(mean)], mean, color=style[0], linestyle=style[1],
                       marker="o", markersize=3)
    for ax in (left, right):
        ax.set_yscale("log")
        ax.set_ylabel("gradient norm, all layers (log)")
        ax.grid(alpha=0.3, which="both")
    left.set_xlabel("epoch")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_xscale("log")
    right.set_xlabel("training loss of the epoch (log)")
    left.set_title("gradient norm after each epoch", fontsize=9)
    right.set_title("gradient norm against the training loss, epoch by epoch (mean over seeds)", fontsize=9)
    return _legend(fig, results, all_styles, title, path)
