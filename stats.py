"""The statistics of a comparison over seeds: paired t-tests, Holm's correction for the number of
comparisons, and the smallest difference a comparison resolves.

Every value of a sweep trains with the same seeds, and a seed fixes the data order (and, for one
architecture, the initial weights), so the values are compared seed by seed: the test is on the
per-seed differences, whose spread leaves out what the seed does to every value alike.
"""
import math
import statistics

ALPHA, POWER = 0.05, 0.8


def t_tail(t, df, steps=4000):
    """P(|T| > t) for Student's t with df >= 1 degrees of freedom.

    With T = sqrt(df) tan(u), the density of u on [0, pi/2) is proportional to cos(u)^(df - 1), which
    is bounded for df >= 1: the tail is a ratio of two integrals of it, taken by Simpson's rule.
    """
    def integral(a, b):
        h = (b - a) / steps
        f = [math.cos(a + i * h) ** (df - 1) for i in range(steps + 1)]
        return h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))
    return integral(math.atan(t / math.sqrt(df)), math.pi / 2) / integral(0.0, math.pi / 2)


def t_quantile(tail, df):
    """The t with P(T > t) = tail (one-sided), for 0 < tail < 0.5, by bisection on t_tail."""
    low, high = 0.0, 1.0
    while t_tail(high, df) > 2 * tail:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if t_tail(mid, df) > 2 * tail else (low, mid)
    return (low + high) / 2


def paired_p(a, b):
    """Two-sided p-value of the paired t-test that a and b (per-seed values, 2 or more pairs, in the
    same seed order) have one mean."""
    d = [x - y for x, y in zip(a, b)]
    mean, sd = statistics.mean(d), statistics.stdev(d)
    if sd == 0:
        return 1.0 if mean == 0 else 0.0
    return t_tail(abs(mean) / (sd / math.sqrt(len(d))), len(d) - 1)


def holm(pvalues):
    """Holm's step-down adjustment of {name: p}: the family-wise error rate stays at most ALPHA when a
    difference counts where its adjusted p is below ALPHA, however many are tested."""
    ordered = sorted(pvalues, key=pvalues.get)
    adjusted, running = {}, 0.0
    for i, name in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - i) * pvalues[name]))
        adjusted[name] = running
    return adjusted


def resolvable(sd, n, comparisons, alpha=ALPHA, power=POWER):
    """The smallest true difference a paired t-test over n seeds detects with the given power at level
    alpha / comparisons (Holm's strictest step, Bonferroni's level), when the per-seed differences have
    standard deviation sd."""
    df = n - 1
    return (t_quantile(alpha / (2 * comparisons), df) + t_quantile(1 - power, df)) * sd / math.sqrt(n)


def paired_tests(pairs):
    """Paired t-tests of {key: (values, reference values)}, each pair matched seed by seed (2 or more):
    ({key: p, Holm-adjusted over the keys}, what they resolve: {"seeds": the fewest seeds of a pair,
    "comparisons", "sd": the pooled sd of the per-seed differences, "resolves": resolvable's difference},
    {} for no pairs)."""
    adjusted = holm({key: paired_p(a, b) for key, (a, b) in pairs.items()})
    if not pairs:
        return adjusted, {}
    sd = math.sqrt(statistics.mean(statistics.variance([x - y for x, y in zip(a, b)]) for a, b in pairs.values()))
    n = min(len(a) for a, _ in pairs.values())
    return adjusted, {"seeds": n, "comparisons": len(pairs), "sd": sd, "resolves": resolvable(sd, n, len(pairs))}


# How the learning-rate search scores a rate from its runs on the tuning seeds (see sweep.tune), chosen
# by benchmarks/tuning_rule.py: on two landscapes of 7 rates x 6 seeds, choosing on two seeds and scoring
# the choice on the other four, smoothing over neighbouring rates lost the least accuracy.
TUNING_SCORE = ("mean final validation accuracy over the tuning seeds (a seed that did not complete counting as 0), "
                "averaged with the neighbouring rates' in log lr with weights 1/4, 1/2, 1/4")


def rate_score(val_accs):
    """A rate's mean final validation accuracy over the tuning seeds (None: the seed did not complete)."""
    return statistics.mean(a or 0.0 for a in val_accs)


def smoothed(scores):
    """{factor: score} of one value's rates (rate_score, None where runs are missing), each averaged with
    its neighbours in log lr (1/4, 1/2, 1/4): the seed noise of one rate's mean decides less, and a rate
    beside one that diverged or collapsed, on the edge of stability, scores low."""
    factors = sorted(scores)
    out = {}
    for i, f in enumerate(factors):
        near = [scores[g] for g in factors[max(0, i - 1):i] + factors[i + 1:i + 2] if scores[g] is not None]
        out[f] = None if scores[f] is None else (2 * scores[f] + sum(near)) / (2 + len(near))
    return out
