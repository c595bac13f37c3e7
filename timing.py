"""The timing pass: seconds per training epoch of each value of a sweep, measured side by side.

Seconds read from run logs measure the moment each run trained at as much as its settings: on a shared
machine the host's speed drifts by 10-30% from minute to minute. So after training, every value of a
sweep trains small pieces of an epoch in turn, in one process, round after round, and each piece is
compared with the others of its round only (see drift_free). The pass is saved beside the sweep's tables
as <sweep>_timing.json and repeated when a value's settings change or with --retime.
"""
import json
import math
import statistics
import time

import torch

import dataloader
import files
import settings
import train

ROUNDS, FRACTION = 40, 0.05


def time_values(results, threads, rounds=ROUNDS, fraction=FRACTION):
    """Seconds per training epoch of each value, measured here, in one process: in each of `rounds`
    rounds (after a warm-up round) every value trains `fraction` of an epoch in turn, starting each round
    at the next value. A value's time in a round is divided by the round's geometric mean over values:
    a change of the host's speed between rounds moves every value alike and cancels in that ratio.
    Returns {label: {"key", "ratio", "median", "low", "high"}} (see drift_free)."""
    torch.set_num_threads(threads)
    setups = _setups(results, fraction)
    spent_rounds = []
    for round_ in range(rounds + 1):
        spent = {}
        for r, trainer, x, y, steps in setups[round_ % len(setups):] + setups[:round_ % len(setups)]:
            result, seconds = train.timed_epoch(trainer, x, y, 0)
            spent[r.label] = seconds / len(result.losses) * steps
        if round_:  # round 0 warms up: allocation, library start-up, compilation
            spent_rounds.append(spent)
    timed = drift_free(spent_rounds)
    return {r.label: {"key": r.key, **timed[r.label]} for r in results}


def _setups(results, fraction):
    """Per value: (result, its trainer, the first `fraction` of the training set, steps per epoch);
    each data set is loaded once."""
    data, setups = {}, []
    for r in results:
        config = {**r.config, "device": settings.resolve_device(r.config["device"]), "quiet": True}
        source = tuple(config[k] for k in ("dataset", "data_dir", "no_verify", "val_split", "normalize", "crop", "device"))
        if source not in data:
            data[source] = dataloader.for_run(config, config["device"])[1]
        x, y = data[source]["train"]
        part = min(len(y), max(4 * config["batch_size"], int(fraction * len(y))))
        setups.append((r, train.build_trainer(config, data[source], config["device"]), x[:part], y[:part],
                       math.ceil(len(y) / config["batch_size"])))
    return setups


def drift_free(spent_rounds):
    """Per-value timing figures from rounds of {label: seconds}, each round every value timed in turn:
    {label: {"ratio", "median", "low", "high"}}. A value's seconds in a round over the round's geometric
    mean cancel the host's speed of that round; "ratio" is the median of that over rounds, and the
    seconds are the ratio's median and quartiles times the median round mean."""
    means = [math.exp(statistics.mean(math.log(t) for t in spent.values())) for spent in spent_rounds]
    mean = statistics.median(means)
    timed = {}
    for label in spent_rounds[0]:
        ratios = [spent[label] / m for spent, m in zip(spent_rounds, means)]
        low, median, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        timed[label] = {"ratio": median, "median": median * mean, "low": low * mean, "high": high * mean}
    return timed


def timings(results, path, threads, retime=False, plot_only=False):
    """The saved timing pass of these values, measured anew where `retime` asks or a value's settings
    have none; {} under plot_only when there is none."""
    saved = json.loads(path.read_text()) if path.exists() else {"values": {}}
    fresh = all(saved["values"].get(r.label, {}).get("key") == r.key for r in results)
    if retime or (not fresh and not plot_only):
        print(f"timing pass: each value's training steps in turn, {ROUNDS} rounds of "
              f"{FRACTION:g} epoch, {threads} thread(s)", flush=True)
        saved = {"threads": threads, "rounds": ROUNDS, "fraction": FRACTION,
                 "measured": time.strftime("%Y-%m-%d %H:%M"), "values": time_values(results, threads)}
        files.write_json(path, saved)
    return saved
