"""Sweep plots from run folders only: loss, accuracy, time and (for a grid) a heatmap.

Each value of the swept setting is one colour: a line for the mean over seeds and a shaded band
from the lowest to the highest seed. Diverged runs are drawn up to where they diverged and marked.
"""
import warnings

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.transforms as mtransforms  # noqa: E402
import numpy as np  # noqa: E402

BAND = "line: mean over seeds, band: min–max over seeds"


def colours(n):
    """n distinguishable colours: tab10 up to 10 lines, tab20 beyond."""
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _stack(series):
    """Pad per-seed lists with NaN into one array (seeds x points)."""
    length = max((len(s) for s in series), default=0)
    out = np.full((len(series), length), np.nan)
    for i, s in enumerate(series):
        out[i, :len(s)] = s
    return out


def _legend_entry(ax, result, colour):
    """One legend entry per value, even for a value with nothing to draw (diverged in epoch 1)."""
    ax.plot([], [], color=colour, marker="o", markersize=3, label=_label(result))


def _band(ax, x, series, colour, **style):
    """Draw the mean line and the min–max band of per-seed series along x."""
    data = _stack(series)
    if data.shape[1] == 0 or np.isnan(data).all():
        return
    mean, low, high = _nan(np.nanmean, data), _nan(np.nanmin, data), _nan(np.nanmax, data)
    x = np.asarray(x)[:len(mean)]
    ax.plot(x, mean, color=colour, **style)
    if data.shape[0] > 1:
        ax.fill_between(x, low, high, color=colour, alpha=0.2, linewidth=0)


def _nan(reduce, data):
    """reduce over seeds, ignoring NaN; a column that is all NaN (every seed stopped) stays NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return reduce(data, 0)


def _runs(result):
    return [r for r in result["runs"] if r]


def _metric(result, key):
    return [[m[key] for m in r["metrics"]] for r in _runs(result)]


def _diverged(result):
    """Epochs at which this value's seeds diverged."""
    return sorted({r["summary"]["diverged_epoch"] for r in _runs(result)
                   if r["summary"].get("status") == "diverged"})


def _label(result):
    epochs = _diverged(result)
    return result["label"] + (f" (diverged at epoch {', '.join(map(str, epochs))})" if epochs else "")


def _mark_diverged(axes, result, colour):
    """An x at the top of each panel above the epoch where a seed diverged."""
    for ax in axes:
        top = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
        for epoch in _diverged(result):
            ax.plot([epoch], [0.97], marker="X", markersize=10, color=colour, transform=top, clip_on=False)
            ax.axvline(epoch, color=colour, linestyle=":", linewidth=1)


def _step_curves(result):
    """Per-seed per-step training loss, at fractional epochs (epoch e spans e-1 to e)."""
    curves = []
    for r in _runs(result):
        by_epoch = {}
        for _, epoch, loss in r["steps"]:
            by_epoch.setdefault(epoch, []).append(loss)
        xs = [e - 1 + (i + 1) / len(ls) for e, ls in sorted(by_epoch.items()) for i in range(len(ls))]
        ys = [loss if np.isfinite(loss) else np.nan for _, ls in sorted(by_epoch.items()) for loss in ls]
        curves.append((xs, ys))
    return curves


def _set_loss_scale(ax, series):
    """Log scale when the positive losses span more than a decade and a half."""
    values = np.array([v for s in series for v in s if v is not None and np.isfinite(v) and v > 0])
    if values.size and values.max() / values.min() > 30:
        ax.set_yscale("log")


def _finish(fig, axes, title, path, n_lines):
    handles, labels = axes[0].get_legend_handles_labels()
    fig.suptitle(title, fontsize=10)
    ncol = n_lines if n_lines <= 8 else min(8, -(-n_lines // 2))  # rows of similar length
    ncol = min(ncol, 4) if any(len(label) > 22 for label in labels) else ncol
    fig.legend(handles, labels, loc="lower center", ncol=max(ncol, 1), fontsize=9,
               title=BAND, title_fontsize=8, frameon=False)
    rows = -(-n_lines // max(ncol, 1))
    fig.tight_layout(rect=(0, 0.06 + 0.045 * rows, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_loss(results, path, title):
    """Training loss (per step, faint, and per epoch) next to test loss per epoch."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.2))
    all_losses = []
    for result, colour in zip(results, colours(len(results))):
        for xs, ys in _step_curves(result):
            left.plot(xs, ys, color=colour, alpha=0.25, linewidth=0.7)
            all_losses.append(ys)
        train_loss, test_loss = _metric(result, "train_loss"), _metric(result, "test_loss")
        epochs = np.arange(1, max(map(len, train_loss), default=0) + 1)
        _legend_entry(left, result, colour)
        _band(left, epochs, train_loss, colour, marker="o", markersize=3)
        _band(right, epochs, test_loss, colour, marker="o", markersize=3)
        all_losses += test_loss
        _mark_diverged((left, right), result, colour)
    for ax in (left, right):
        _set_loss_scale(ax, all_losses)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    left.set_ylabel("training loss (per sample)")
    left.set_title("training loss: per epoch (dots) and every --log-every steps (faint)", fontsize=9)
    right.set_ylabel("test loss (per sample)")
    right.set_title("test loss after each epoch", fontsize=9)
    return _finish(fig, (left, right), title, path, len(results))


def plot_acc(results, path, title):
    """Training and test accuracy per epoch, side by side on one scale."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.2), sharey=True)
    for result, colour in zip(results, colours(len(results))):
        _legend_entry(left, result, colour)
        for ax, key in ((left, "train_acc"), (right, "test_acc")):
            series = [[100 * v for v in s] for s in _metric(result, key)]
            epochs = np.arange(1, max(map(len, series), default=0) + 1)
            _band(ax, epochs, series, colour, marker="o", markersize=3)
        _mark_diverged((left, right), result, colour)
    left.set_title("training accuracy (during each epoch)", fontsize=9)
    right.set_title("test accuracy after each epoch", fontsize=9)
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    left.set_ylabel("accuracy (%)")
    right.tick_params(labelleft=True)
    return _finish(fig, (left, right), title, path, len(results))


def plot_time(results, path, title):
    """Seconds per epoch for each value, and test accuracy against cumulative training seconds."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.2))
    cols = colours(len(results))
    for i, (result, colour) in enumerate(zip(results, cols)):
        _legend_entry(right, result, colour)
        per_run = [np.mean(s) for s in _metric(result, "epoch_seconds") if s]
        if per_run:
            left.bar(i, np.mean(per_run), color=colour,
                     yerr=(np.std(per_run, ddof=1) if len(per_run) > 1 else None), capsize=3)
        else:
            epochs = _diverged(result)
            note = f"diverged at\nepoch {epochs[0]}" if epochs else "no finished\nepoch"
            left.text(i, 0, note, ha="center", va="bottom", fontsize=8, color=colour)
        elapsed, acc = _metric(result, "elapsed_seconds"), _metric(result, "test_acc")
        if any(elapsed):
            x = _nan(np.nanmean, _stack(elapsed))
            _band(right, x, [[100 * v for v in s] for s in acc], colour, marker="o", markersize=3)
    left.set_xlim(-0.6, len(results) - 0.4)
    left.set_xticks(range(len(results)), [r["label"] for r in results], rotation=30, ha="right", fontsize=8)
    left.set_ylabel("seconds per epoch")
    left.set_title("training seconds per epoch (no evaluation); error bar: ± std over seeds", fontsize=9)
    right.set_xlabel("cumulative training seconds (mean over seeds)")
    right.set_ylabel("test accuracy (%)")
    right.set_title("time to accuracy", fontsize=9)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return _finish(fig, (right, left), title, path, len(results))


def sweep_plots(results, prefix, title):
    """Write <prefix>_loss.png, <prefix>_acc.png and <prefix>_time.png; returns their paths."""
    prefix = str(prefix)
    return [plot_loss(results, f"{prefix}_loss.png", title), plot_acc(results, f"{prefix}_acc.png", title),
            plot_time(results, f"{prefix}_time.png", title)]


def short_status(result):
    """'2 diverged', '1 missing', ...: the seeds that did not complete, counted by status."""
    statuses = [r["summary"].get("status") if r else "missing" for r in result["runs"]]
    return ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses) if s != "completed")


def heatmap(results, axes, path, title):
    """Final test accuracy (mean over completed seeds) of a two-flag grid, each cell annotated;
    a cell with no completed seed is grey and says why."""
    (name_a, values_a), (name_b, values_b) = axes
    cells = {r["point"]["key"]: r for r in results}
    grid = np.full((len(values_a), len(values_b)), np.nan)
    for i, a in enumerate(values_a):
        for j, b in enumerate(values_b):
            done = [r for r in _runs(cells[(a, b)]) if r["summary"].get("status") == "completed"]
            if done:
                grid[i, j] = 100 * np.mean([r["summary"]["final_test_acc"] for r in done])
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    low = np.nanmin(grid) if np.isfinite(grid).any() else 0
    fig, ax = plt.subplots(figsize=(1.7 * len(values_b) + 3, 0.9 * len(values_a) + 2.5))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=low, vmax=100)
    for i, a in enumerate(values_a):
        for j, b in enumerate(values_b):
            value, note = grid[i, j], short_status(cells[(a, b)])
            text = (f"{value:.1f}" if np.isfinite(value) else "") + (f"\n({note})" if note else "")
            dark = np.isfinite(value) and image.norm(value) < 0.6
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
    ax.set_xticks(range(len(values_b)), values_b)
    ax.set_yticks(range(len(values_a)), values_a)
    ax.set_xlabel(name_b)
    ax.set_ylabel(name_a)
    fig.colorbar(image, label="final test accuracy (%), mean over completed seeds")
    ax.set_title(title, fontsize=8, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
