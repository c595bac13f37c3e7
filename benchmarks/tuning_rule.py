"""Which rule should pick a learning rate from two tuning seeds? Measured on learning-rate landscapes
trained with more seeds: each rule chooses on two seeds, and the rate it chose is scored on the others.

    python sweep.py lr 0.00625 0.0125 0.025 0.05 0.1 0.2 0.4 --seeds 6 --threads 1 --jobs 2 --sweep-name landscape_relu
    python sweep.py lr 0.00625 0.0125 0.025 0.05 0.1 0.2 0.4 --activation sigmoid --seeds 6 --threads 1 --jobs 2 \\
        --sweep-name landscape_sigmoid
    python benchmarks/tuning_rule.py                  # reads those runs from results/runs

For every pair of seeds (the tuning seeds) and every rule, the rule picks a rate from those two seeds'
runs; its regret is how much lower the mean final validation accuracy of the other seeds is at that rate
than at the rate that is best for them. Test accuracy is never read.
"""
import argparse
import itertools
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import runs  # noqa: E402
import settings  # noqa: E402
import stats  # noqa: E402

LANDSCAPES = {"relu": [], "sigmoid": ["--activation", "sigmoid"]}
RATES = [0.00625, 0.0125, 0.025, 0.05, 0.1, 0.2, 0.4]


def final(run, key):
    """A run's final value of key, or None where it did not complete."""
    return run.final(key) if run and run.completed else None


def mean_of(values, missing):
    return statistics.mean(missing if v is None else v for v in values)


RULES = {
    "final validation accuracy": lambda runs_, i: mean_of([final(r, "val_acc") for r in runs_[i]], 0.0),
    "final validation loss": lambda runs_, i: -mean_of([final(r, "val_loss") for r in runs_[i]], math.inf),
    "validation accuracy of the last 3 epochs": lambda runs_, i: mean_of(
        [statistics.mean(m["val_acc"] for m in r.metrics[-3:]) if final(r, "val_acc") is not None else None
         for r in runs_[i]], 0.0),
    "final validation accuracy, smoothed over neighbouring rates": lambda runs_, i: _smoothed(runs_, i),
}


def _smoothed(runs_, i):
    """The sweeps' own rule (stats.smoothed over stats.rate_score): a rate's mean final validation accuracy
    averaged with its neighbours' in log lr (1/4, 1/2, 1/4)."""
    return stats.smoothed({j: stats.rate_score([final(r, "val_acc") for r in row]) for j, row in enumerate(runs_)})[i]


def landscape(out, flags, seeds):
    """runs_[rate index][seed index]: each rate's runs (runs.read_run, None where missing)."""
    index = runs.index(out)
    grid = []
    for lr in RATES:
        row = []
        for seed in seeds:
            key = settings.run_key(settings.parse_config([*flags, "--lr", str(lr), "--seed", str(seed)]))
            found = [d for d, s in index.get(key, []) if s in runs.FINISHED]
            row.append(runs.read_run(found[-1]) if found else None)
        grid.append(row)
    return grid


def regrets(grid, seeds):
    """{rule: [regret in points of validation accuracy, one per pair of tuning seeds]}."""
    out = {rule: [] for rule in RULES}
    for pair in itertools.combinations(range(len(seeds)), 2):
        rest = [s for s in range(len(seeds)) if s not in pair]
        held = [mean_of([final(row[s], "val_acc") for s in rest], 0.0) for row in grid]
        tuning = [[row[s] for s in pair] for row in grid]
        for rule, score in RULES.items():
            pick = max(range(len(grid)), key=lambda i: score(tuning, i))
            out[rule].append(100 * (max(held) - held[pick]))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "results"))
    p.add_argument("--seeds", type=int, default=6)
    args = p.parse_args()
    seeds = list(range(args.seeds))
    print(f"Regret of each rule (points of mean final validation accuracy on the held-out seeds), over the "
          f"{math.comb(len(seeds), 2)} pairs of tuning seeds among seeds 0-{len(seeds) - 1}:\n")
    print("| landscape | rule | mean regret | worst | picks the held-out best |")
    print("|---|---|---|---|---|")
    for name, flags in LANDSCAPES.items():
        grid = landscape(args.out, flags, seeds)
        missing = sum(r is None for row in grid for r in row)
        if missing:
            print(f"| {name} | {missing} runs missing: train them with the commands in this file's docstring | | | |")
            continue
        for rule, values in regrets(grid, seeds).items():
            print(f"| {name} | {rule} | {statistics.mean(values):.3f} | {max(values):.3f} | "
                  f"{sum(v == 0 for v in values)}/{len(values)} |")


if __name__ == "__main__":
    main()
