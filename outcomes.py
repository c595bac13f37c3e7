"""What each value of a sweep came to over its seeds, read from its runs (runs.Run): which completed,
their final test accuracies, each value against the best one, how long an epoch took, what went wrong.
tables.py and plots.py both show these."""
import statistics

import stats


def completed(result):
    """The runs of a value that completed (not diverged, interrupted or missing)."""
    return [r for r in result.runs if r and r.completed]


def final_test_accs(result):
    """The final test accuracies of a value's completed runs."""
    return [r.final("test_acc") for r in completed(result)]


def seed_accs(result):
    """{seed: final test accuracy} of a value's completed runs."""
    return {seed: r.final("test_acc") for r, seed in zip(result.runs, result.seeds) if r and r.completed}


def comparison(results):
    """Each value against the best one (the highest mean final test accuracy), seed by seed: see
    compare_accs."""
    return compare_accs({r.label: seed_accs(r) for r in results})


def compare_accs(accs):
    """From {label: {seed: final test accuracy}}, each value against the best one (the highest mean),
    seed by seed: ({label: 'best', 'within noise (p 0.31)' or 'lower (p 0.004)'}, what the comparison
    resolves: {"seeds", "comparisons", "sd", "resolves"}, {} where nothing was compared). p is the
    paired t-test's over the seeds both values completed, Holm-adjusted over the values compared; a
    value with fewer than 2 completed seeds is not compared."""
    ranked = [label for label, a in accs.items() if len(a) >= 2]
    if not ranked:
        return {}, {}
    best = max(ranked, key=lambda label: statistics.mean(accs[label].values()))
    pairs = {}
    for label in ranked:
        common = sorted(set(accs[label]) & set(accs[best]))
        if label != best and len(common) >= 2:
            pairs[label] = ([accs[label][s] for s in common], [accs[best][s] for s in common])
    adjusted, resolution = stats.paired_tests(pairs)
    return {best: "best", **{label: f"{'lower' if p < stats.ALPHA else 'within noise'} ({_p(p)})"
                             for label, p in adjusted.items()}}, resolution


def _p(p):
    return "p < 0.001" if p < 0.001 else f"p {p:.2g}"


def short_status(result):
    """'2 diverged', '1 missing', ...: the seeds that did not complete, counted by status."""
    statuses = [r.status if r else "missing" for r in result.runs]
    return ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses) if s != "completed")


def show_lr(results):
    """Whether to name each value's learning rate: where it differs between values and is not the
    value itself (tables, legends and heatmap cells alike)."""
    return len({r.lr for r in results}) > 1 and any(set(r.point.settings) != {"lr"} for r in results)


def seconds_per_epoch(result, timing):
    """(seconds per epoch, where from): the timing pass's median where it timed these settings, else
    the median epoch of each run's log, averaged over seeds."""
    timed = timing.get("values", {}).get(result.label)
    if timed and timed["key"] == result.key:
        return timed["median"], "timing pass"
    logged = [statistics.median(m["epoch_seconds"] for m in r.metrics) for r in result.runs if r and r.metrics]
    return (statistics.mean(logged), "run logs") if logged else (None, "")


def fastest_seconds(results, timing):
    """The timing pass's seconds per epoch of the fastest value it timed, None if it timed none."""
    timed = [seconds_per_epoch(r, timing) for r in results]
    return min((s for s, source in timed if source == "timing pass"), default=None)
