"""The final-quality-against-batch-size study (batch_quality.py) and the measurements it stands on: the
distance of the weights from their initial values, on a known weight change; the sharpness measured once
at the end, against the per-epoch one of the last epoch; the epochs of each budget; the variants it
plans; its combined table from made-up run summaries; and, slow, a tiny study end to end."""
import csv
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import batch_quality
import dataloader
import diagnostics
import files
import runs
import settings
import sweep
import train
from conftest import TINY, make_dataset, run_script
from errors import UserError
from model import MLP

N = 55000  # MNIST's training images after the default --val-split


def tiny_config(data, out, *extra):
    return settings.parse_config([*TINY, "--data-dir", str(data), "--out", str(out), *extra])


# ---------------------------------------------------------------------------- the measurements

def test_distance_is_the_norm_of_a_known_weight_change():
    torch.manual_seed(0)
    start = MLP(hidden=[6], inputs=5)
    moved = MLP(hidden=[6], inputs=5)
    moved.load_state_dict(start.state_dict())
    with torch.no_grad():
        moved[0].bias += 3.0         # 6 entries moved by 3
        moved[-1].weight[0, :4] -= 2.0  # 4 entries moved by 2
    assert diagnostics.distance(moved, start) == pytest.approx(math.sqrt(6 * 9 + 4 * 4))
    assert diagnostics.distance(start, start) == 0.0


def test_distance_is_taken_from_the_weights_the_seed_built(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path, "--distance")
    _, tensors = dataloader.for_run(config, "cpu")
    trainer = train.build_trainer(config, tensors, "cpu")
    assert diagnostics.measure(trainer, tensors, 0, 1)["distance"] == 0.0  # untrained: at its start
    with torch.no_grad():
        trainer.model[0].bias += 0.5  # TINY: one hidden layer of 32 units
    assert diagnostics.measure(trainer, tensors, 0, 1)["distance"] == pytest.approx(0.5 * math.sqrt(32))


def test_end_sharpness_is_measured_once_and_equals_the_last_epochs(tiny_data, tmp_path):
    every, every_summary = train.train(tiny_config(tiny_data, tmp_path, "--sharpness", "--end-sharpness"))
    end, end_summary = train.train(tiny_config(tiny_data, tmp_path, "--end-sharpness", "--distance"))
    plain, _ = train.train(tiny_config(tiny_data, tmp_path))
    assert every_summary["end_sharpness"] == every_summary["final_sharpness"] > 0
    assert end_summary["end_sharpness"] == every_summary["end_sharpness"]  # the same end point, measured alike
    assert end_summary["end_sharpness_iterations"] == every_summary["final_sharpness_iterations"]
    rows = [runs.read_jsonl(d / "metrics.jsonl") for d in (every, end, plain)]
    assert not any("sharpness" in r for r in rows[1])  # measured at the end only
    assert 0 < rows[1][0]["distance"] < rows[1][1]["distance"] == end_summary["final_distance"]
    keys = ["train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"]
    assert [[r[k] for k in keys] for r in rows[0]] == [[r[k] for k in keys] for r in rows[1]] == \
        [[r[k] for k in keys] for r in rows[2]]  # measuring changes nothing the run computes


def test_the_new_measurements_enter_the_run_key_only_when_asked_for():
    plain = settings.run_key(settings.parse_config([]))
    assert plain == "c5297117"  # the default run's key before they existed
    keys = {settings.run_key(settings.parse_config([flag])) for flag in ("--end-sharpness", "--distance")}
    assert len(keys) == 2 and plain not in keys


# ---------------------------------------------------------------------------- the plan

def test_each_budget_gives_its_epochs():
    epochs = lambda budget, size: batch_quality.budget_epochs(budget, size, 4, 100, N)  # noqa: E731
    assert [epochs("epochs", b) for b in (32, 128, 8192)] == [4, 4, 4]
    # matched updates: batch 128 takes 4 x ceil(55000 / 128) = 1720 steps; 8192 takes 7 a epoch
    assert [epochs("updates", b) for b in (32, 64, 128, 512, 2048, 8192, N)] == [1, 2, 4, 16, 64, 246, 1720]
    assert epochs("converged", 8192) == 100  # its cap; patience stops it earlier
    assert batch_quality.budget_epochs("updates", 32, 1, 100, N) == 1  # a quarter epoch is still one epoch


def plan(*flags, n=N):
    args, base = batch_quality.parse(list(flags))
    return batch_quality.plan(args, base, n)


def test_the_plan_is_a_point_per_budget_and_batch_size_with_its_schedule_and_scaled_rate():
    study = plan("--batch-sizes", "32,512")
    assert [p.label for p in study.points] == ["epochs / 32", "epochs / 512", "updates / 32", "updates / 512",
                                               "converged / 32", "converged / 512"]
    settings_of = {p.label: p.settings for p in study.points}
    assert settings_of["updates / 512"] == {"batch_size": 512, "lr": 0.1, "epochs": 16, "schedule": "cosine",
                                            "patience": 0}  # lr: 0.05 x sqrt(512 / 128)
    assert settings_of["converged / 32"] == {"batch_size": 32, "lr": 0.025, "epochs": 100, "schedule": "constant",
                                             "patience": 10}
    assert study.tune_seeds == [0] and study.seeds == [1, 2, 3, 4, 5] and study.factors == [0.5, 1, 2]
    job = sweep.job(study.base, study.points[3], 2.0, 2)
    assert job.config["lr"] == 0.2 and job.config["end_sharpness"] and job.config["distance"]
    assert {"--end-sharpness", "--distance"} <= set(job.argv) and job.argv[job.argv.index("--epochs") + 1] == "16"


def test_budgets_that_train_alike_share_their_runs():
    study = plan("--batch-sizes", "128", "--budgets", "epochs,updates", "--tune-lr", "1")
    keys = {sweep.job(study.base, p, 1.0, 0).key for p in study.points}
    assert len(keys) == 1  # at batch 128 E epochs are the matched updates: one run, trained once


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "64"], "--batch-size 64: the study sets it"),
    (["--schedule", "constant"], "--schedule constant: the study sets each budget's schedule"),
    (["--end-sharpness"], "--end-sharpness: every run of the study measures it"),
    (["--budgets", "epochs", "--patience", "3"], "--patience 3: only the converged budget"),
    (["--budgets", "converged", "--epochs", "3"], "--epochs 3: only the epochs and updates budgets"),
    (["--tune-lr", "1", "--widen", "2"], "--widen 2: only a learning-rate search"),
    (["--budgets", "epochs,sprint"], "--budgets 'epochs,sprint': expected some of"),
    (["--patience", "0"], "--patience 0: the converged budget"),
])
def test_what_the_study_sets_or_would_ignore_is_refused(flags, message):
    with pytest.raises(UserError, match=message):
        batch_quality.parse(flags)


def test_batch_sizes_are_checked_against_the_training_set():
    assert sweep.batch_sizes("8192,32,full", 1000 * 60) == [32, 8192, 60000]
    with pytest.raises(UserError, match="expected sizes from 1 to 1000"):
        sweep.batch_sizes("32,2048", 1000)


# ---------------------------------------------------------------------------- the table, from made-up runs

def fake_run(seed, test_acc, completed=True, best_val=0.97, epochs=4):
    summary = {"status": "completed" if completed else "diverged", "epochs_completed": epochs,
               "best_val_acc": best_val, "test_acc_at_best_val": test_acc, "final_train_loss": 0.01 * (seed + 1),
               "final_train_acc": 0.99, "final_distance": 10.0 + seed, "end_sharpness": 20.0 + 2 * seed,
               "stopped_early": epochs < 100, "final_test_acc": test_acc, "train_seconds": 1.0,
               **({} if completed else {"diverged_epoch": 1, "diverged_step": 3})}
    return runs.Run(Path(f"run{seed}"), {}, [], summary, [])


def fake_result(budget, size, accs, lr=0.1, **run_kwargs):
    point = sweep.Point(f"{budget} / {size}", {"batch_size": size, "lr": lr}, (budget, str(size)))
    seeds = list(range(2, 2 + len(accs)))
    candidate = sweep.Candidate(point, 1.0, {"lr": lr}, [fake_run(s, a, **run_kwargs) for s, a in zip(seeds, accs)],
                                seeds, search="interior")
    return candidate._replace(options=(candidate,), scores={1.0: 0.97})


def test_the_combined_table_and_its_tests_within_each_budget(tmp_path):
    good = [0.980, 0.982, 0.979, 0.981, 0.980]
    results = [fake_result("epochs", 32, good), fake_result("epochs", 8192, [a - 0.02 for a in good]),
               fake_result("updates", 32, good), fake_result("updates", 8192, [a + 0.001 * (-1) ** i
                                                                                for i, a in enumerate(good)])]
    args = SimpleNamespace(budget_list=["epochs", "updates"], max_epochs=100, lr_scaling="sqrt")
    study = sweep.Sweep("batch_quality", {**settings.make_config(settings.parse_config([])), "out": str(tmp_path)},
                        [r.point for r in results], batch_quality.COLUMN, [1.0], 4, [], [2, 3, 4, 5, 6], "sqrt", 0.97)
    batch_quality.report(study, results, args, N)
    rows = list(csv.DictReader(open(tmp_path / "batch_quality" / "batch_quality.csv")))
    assert [(r["budget"], r["batch_size"]) for r in rows] == [("epochs", "32"), ("epochs", "8192"),
                                                              ("updates", "32"), ("updates", "8192")]
    assert rows[0]["vs_best"] == "best" and rows[1]["vs_best"].startswith("lower (p")
    assert rows[3]["vs_best"] == "best" and rows[2]["vs_best"].startswith("within noise")  # 0.02 points higher
    assert rows[0]["test_acc_at_best_val_%"] == "98.04 ± 0.11" and rows[0]["lr"] == "0.1"
    assert rows[1]["steps"] == "28 ± 0" and rows[0]["steps"] == "6876 ± 0"  # 4 epochs of 7 and of 1719 steps
    assert rows[0]["distance_from_init"] == "14.0 ± 1.6" and rows[0]["end_sharpness"] == "28.0 ± 3.2"
    assert rows[0]["early_stops"] == "5" and rows[0]["search"] == "interior"
    text = (tmp_path / "batch_quality" / "batch_quality.md").read_text()
    assert "Resolution, epochs: 5 seeds" in text and "updates: 5 seeds" in text
    ran = list(csv.DictReader(open(tmp_path / "batch_quality" / "batch_quality_runs.csv")))
    assert len(ran) == 40 and {"end_sharpness", "final_distance", "test_acc_at_best_val"} <= set(ran[0])
    from test_recompute import check_quality  # the check the committed study's table gets
    check_quality(tmp_path / "batch_quality" / "batch_quality_runs.csv")
    assert (tmp_path / "batch_quality" / "batch_quality.png").stat().st_size > 0


def test_a_diverged_seed_is_tabled_not_averaged(tmp_path):
    result = fake_result("converged", 64, [0.1, 0.1], completed=False)
    row = batch_quality.table_row(result, None, N)
    assert row["completed"] == "0/2" and row["test_acc_at_best_val_%"] == "" and "diverged at epoch 1" in row["status"]


def test_the_rate_is_chosen_by_best_validation_accuracy_and_a_failed_seed_counts_zero():
    high = fake_result("epochs", 32, [0.9, 0.9], best_val=0.99)
    failed = fake_result("epochs", 32, [0.9, 0.9], completed=False, best_val=0.99)
    assert batch_quality.best_val_score(high) == 0.99
    assert batch_quality.best_val_score(failed) == 0.0
    assert batch_quality.best_val_score(high._replace(runs=[None, high.runs[1]])) is None  # still missing


# ---------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_a_tiny_study_end_to_end(tmp_path):
    # Two budgets (8 runs): at batch 100 on 1,000 images E epochs are about batch 128's updates, so the
    # epochs budget would repeat the updates one's runs here.
    data = make_dataset(tmp_path / "data", n_train=1100)
    flags = ["--data-dir", data, "--no-verify", "--val-split", "100", "--train-size", "1000", "--epochs", "1",
             "--batch-sizes", "100,1000", "--budgets", "updates,converged", "--seeds", "2", "--tune-lr", "1",
             "--max-epochs", "2", "--patience", "1", "--hidden", "32", "--threads", "1", "--out", tmp_path]
    result = run_script("batch_quality.py", *flags, timeout=240)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "batch_quality"
    rows = list(csv.DictReader(open(folder / "batch_quality.csv")))
    assert [(r["budget"], r["batch_size"], r["epochs"]) for r in rows] == [
        ("updates", "100", "1.0 ± 0.0"), ("updates", "1000", "8.0 ± 0.0"),  # the 8 steps of batch 128's epoch
        ("converged", "100", rows[2]["epochs"]), ("converged", "1000", rows[3]["epochs"])]
    assert all(r["completed"] == "2/2" and float(r["end_sharpness"].split()[0]) > 0 for r in rows)
    summaries = [files.read_json(d / "summary.json") for d in runs.find_runs(tmp_path)]
    assert len(summaries) == 8 and all(s["end_sharpness"] > 0 and s["final_distance"] > 0 for s in summaries)
    md = (folder / "batch_quality.md").read_text()
    again = run_script("batch_quality.py", *flags, "--plot-only")
    assert again.returncode == 0 and "to train" not in again.stdout
    assert (folder / "batch_quality.md").read_text() == md and (folder / "batch_quality.png").stat().st_size > 0
