"""The batch-scaling study's figures (batch_scaling.py): steps and epochs to the target, time to it,
the learning rates chosen, and the gradient noise scale, each against the batch size. They read the
study's rows alone: a batch size at its chosen rate (batch_size, lr, steps, tried, seconds_per_step)."""
import math
import statistics

import plots
from plots import plt

NAME = "batch_scaling"


def figures(rows, n, fit, noise, folder, target, base_batch, name=NAME):
    """Draw the study's figures into folder; returns their paths. n: the training-set size; fit: (S_min,
    B_crit) or None; noise: the --noise-scale run (runs.read_run) or None; name: the files' prefix (the
    study's --sweep-name)."""
    paths = [plot_steps(rows, n, fit, noise, folder, target, name), plot_time(rows, folder, target, name),
             plot_lr(rows, base_batch, folder, target, name)]
    if noise:
        paths.append(plot_noise(noise, fit, folder, target, name))
    return paths


def noise_at_target(noise, target):
    """(epoch, B_simple) of the noise-scale run at the first epoch whose validation accuracy reached the
    target (the last epoch where none did), and B_simple's range over the run."""
    rows = [m for m in noise.metrics if m.get("noise_scale")]
    if not rows:
        return None
    at = next((m for m in rows if m["val_acc"] >= target), rows[-1])
    return at["epoch"], at["noise_scale"], min(m["noise_scale"] for m in rows), max(m["noise_scale"] for m in rows)


def plot_steps(rows, n, fit, noise, folder, target, name=NAME):
    """Steps and epochs to target against the batch size, log-log: seeds as dots, means as diamonds,
    the perfect-scaling line through the smallest batch size, the fit and the critical batch size."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.4))
    done = [r for r in rows if r.steps]
    for ax, per in ((left, lambda b, s: s), (right, lambda b, s: s * b / n)):
        for r in done:
            ax.plot([r.batch_size] * len(r.steps), [per(r.batch_size, s) for s in r.steps], ".", color="tab:blue", alpha=0.5)
        ax.plot([r.batch_size for r in done], [per(r.batch_size, statistics.mean(r.steps)) for r in done], "D-", color="tab:blue",
                label="steps to target (mean over seeds)" if ax is left else "epochs to target (mean over seeds)")
        if done:
            b0, s0 = done[0].batch_size, statistics.mean(done[0].steps)
            sizes = [r.batch_size for r in rows]
            ax.plot(sizes, [per(b, s0 * b0 / b) for b in sizes], ":", color="grey",
                    label="perfect scaling: twice the batch, half the steps")
        if fit:
            grid = [rows[0].batch_size * (rows[-1].batch_size / rows[0].batch_size) ** (i / 100) for i in range(101)]
            ax.plot(grid, [per(b, fit[0] * (1 + fit[1] / b)) for b in grid], "-", color="tab:orange", alpha=0.7,
                    label=f"fit S_min (1 + B_crit / B): B_crit {fit[1]:.0f}")
            ax.axvline(fit[1], color="tab:orange", linestyle="--", linewidth=1)
        at = noise_at_target(noise, target) if noise else None
        if at:
            ax.axvline(at[1], color="tab:green", linestyle="-.", linewidth=1,
                       label=f"gradient noise scale B_simple {at[1]:.0f} (epoch {at[0]})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size (log 2)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    left.set_ylabel(f"training steps to {100 * target:g}% validation accuracy")
    right.set_ylabel(f"epochs to {100 * target:g}% validation accuracy")
    left.set_title("steps to target: dots are seeds, each batch size at its own tuned learning rate", fontsize=9)
    right.set_title("the same in passes over the training set: what a larger batch costs in data", fontsize=9)
    return _save(fig, folder / f"{name}_steps.png", target, name)


def plot_time(rows, folder, target, name=NAME):
    """Seconds to target and seconds per step against the batch size."""
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
    left.set_ylabel(f"training seconds to {100 * target:g}% validation accuracy")
    left.set_title("time to target: steps x seconds per step (timing pass), dots are seeds", fontsize=9)
    right.set_ylabel("seconds per training step (timing pass)")
    right.set_title("the price of a step: flat while per-step overhead dominates, then linear in the batch", fontsize=9)
    return _save(fig, folder / f"{name}_time.png", target, name)


def plot_lr(rows, base_batch, folder, target, name=NAME):
    """The chosen learning rate against the batch size, every rate tried as a dot (filled: all seeds
    reached the target), and the linear and square-root scaling rules through the base batch size."""
    fig, ax = plt.subplots(figsize=(8, 5.4))
    for r in rows:
        for lr, hit in r.tried:
            ax.plot([r.batch_size], [lr], "o", color="grey", markersize=4, markerfacecolor="grey" if hit else "white")
    chosen = [r for r in rows if r.lr]
    ax.plot([r.batch_size for r in chosen], [r.lr for r in chosen], "D-", color="tab:blue", label="chosen rate")
    ref = next((r for r in chosen if r.batch_size == base_batch), chosen[0] if chosen else None)
    if ref:
        sizes = [r.batch_size for r in rows]
        for rule, f, style in (("linear", lambda k: k, "--"), ("square root", math.sqrt, ":")):
            ax.plot(sizes, [ref.lr * f(b / ref.batch_size) for b in sizes], style, color="tab:orange",
                    label=f"{rule} scaling from batch {ref.batch_size}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size (log 2)")
    ax.set_ylabel("learning rate (log)")
    ax.set_title("learning rate that reaches the target in the fewest steps; dots: rates tried "
                 "(filled: every seed reached it)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, folder / f"{name}_lr.png", target, name)


def plot_noise(noise, fit, folder, target, name=NAME):
    """B_simple after each epoch of the --noise-scale run, beside the fitted critical batch size."""
    fig, ax = plt.subplots(figsize=(8, 5.4))
    rows = [m for m in noise.metrics if m.get("noise_scale")]
    ax.plot([m["epoch"] for m in rows], [m["noise_scale"] for m in rows], "o-", color="tab:green", label="B_simple")
    at = noise_at_target(noise, target)
    if at:
        ax.axvline(at[0], color="grey", linestyle=":", label=f"first epoch at {100 * target:g}% validation accuracy")
    if fit:
        ax.axhline(fit[1], color="tab:orange", linestyle="--", label=f"fitted B_crit {fit[1]:.0f}")
    config = noise.config
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("gradient noise scale B_simple = tr(Sigma) / |G|^2 (log)")
    ax.set_title(f"gradient noise scale during training: batch {config['batch_size']}, lr {config['lr']:g} constant",
                 fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, folder / f"{name}_noise.png", target, name)


def _save(fig, path, target, name=NAME):
    for ax in fig.axes:
        plots.plain_ticks(ax)
    fig.suptitle(f"{name}: steps to {100 * target:g}% validation accuracy against the batch size", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plots.plt.close(fig)
    return path
