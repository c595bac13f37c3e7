"""The studies of issue 28's claims: sgd_vs_gd.py's weight distance on known tensors and its runs on
synthetic data (same start, full batch against SGD, the same rate times steps); the sweep's figure and
per-epoch CSV of --activation-stats."""
import csv
import math

import pytest
import torch

import sgd_vs_gd
import sweep
from conftest import ROOT, TINY_SWEEP
from errors import UserError


def test_weight_distance_on_known_tensors():
    a = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.tensor([0.0, 0.0])}
    b = {"w": torch.tensor([[1.0, 2.0], [3.0, 1.0]]), "b": torch.tensor([4.0, 0.0])}
    assert sgd_vs_gd.weight_distance(a, b) == 5.0  # sqrt(3^2 + 4^2)
    assert sgd_vs_gd.weight_distance(a, a) == 0.0
    assert sgd_vs_gd.weight_distance(b, a) == 5.0


def test_study_pairs_sgd_with_descent_from_the_same_start(tiny_data, tmp_path):
    flags = ["--no-verify", "--val-split", "100", "--hidden", "32", "--data-dir", str(tiny_data), "--out", str(tmp_path)]
    sgd_vs_gd.main(["--train-size", "200", "--lr", "0.1", "--factors", "1,0.5", "--time", "2",
                    "--batch-sizes", "50", "--seeds", "0,1", *flags])
    with open(tmp_path / "sgd_vs_gd" / "sgd_vs_gd_every_run.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and all(r["same_start"] == "True" and r["status"] == "completed" for r in rows)
    for r in rows:  # lr x steps is the same for every run; full batch is its own reference
        assert math.isclose(float(r["lr"]) * int(r["steps"]), 2.0)
        assert (float(r["distance_to_gd"]) == 0) == (r["batch_size"] == "200")
    assert {r["steps"] for r in rows} == {"20", "40"}
    assert (tmp_path / "sgd_vs_gd" / "sgd_vs_gd.md").read_text().count("(GD)") == 2


def test_study_refuses_what_it_sets_and_steps_that_are_not_whole_epochs():
    with pytest.raises(UserError, match="--batch-size"):
        sgd_vs_gd.main(["--batch-size", "64"])
    with pytest.raises(UserError, match="whole number of epochs"):
        sgd_vs_gd.main(["--train-size", "200", "--lr", "0.1", "--time", "1.5", "--batch-sizes", "50"])


@pytest.mark.slow  # a whole sweep, its timing pass included: 10-40 s
def test_activation_stats_sweep_draws_its_figure(tiny_data, tmp_path):
    sweep.run_sweep(["activation", "relu", "tanh", *map(str, TINY_SWEEP), "--data-dir", str(tiny_data),
                     "--out", str(tmp_path), "--seeds", "1", "--activation-stats", "--sweep-name", "s"])
    assert (tmp_path / "s" / "s_activations.png").stat().st_size > 10_000
    with open(tmp_path / "s" / "s_epochs.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["activation"], r["epoch"]) for r in rows] == [(a, e) for a in ("relu", "tanh") for e in "012"]
    assert [r["zero_fraction_1"] for r in rows if r["activation"] == "tanh"] == ["0.0"] * 3  # tanh is never exactly 0
    assert rows[0]["train_loss"] == "" and float(rows[1]["train_loss"]) > 0  # epoch 0: the init_ measurements only


def _number(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def test_committed_table_is_recomputed_from_its_runs():
    """results/sgd_vs_gd/sgd_vs_gd.md, as REPORT.md quotes it, from the committed per-run CSV alone."""
    folder = ROOT / "results" / "sgd_vs_gd"
    with open(folder / "sgd_vs_gd_every_run.csv") as f:
        rows = [{k: _number(v) for k, v in r.items()} for r in csv.DictReader(f)]
    table = [line for line in (folder / "sgd_vs_gd.md").read_text().splitlines() if line.startswith("| ")][1:]
    again = [f"| {' | '.join(str(v) for v in row.values())} |" for row in sgd_vs_gd.summary_rows(rows)]
    assert again == table


def test_vs_descent_pairs_each_sgd_run_with_descent_of_its_seed_and_rate():
    def row(seed, factor, batch, val, status="completed"):
        return {"seed": seed, "factor": factor, "batch_size": batch, "val_acc": val, "status": status}
    rows = [row(0, 1, 200, 0.90), row(0, 1, 50, 0.92), row(1, 1, 200, 0.80), row(1, 1, 50, 0.825),
            row(0, 0.5, 200, 0.90), row(0, 0.5, 50, 0.5, "diverged")]
    diffs, adjusted, resolves = sgd_vs_gd.vs_descent(rows)
    assert diffs.keys() == {(1, 50)} and diffs[1, 50] == pytest.approx([2.0, 2.5])
    assert adjusted.keys() == {(1, 50)} and 0 < adjusted[1, 50] < 1 and resolves > 0
