"""The batch-size scaling study (batch_scaling.py): its evaluation schedule, its stopping rules, the fit
of the critical batch size on synthetic step counts, and one tiny study end to end."""
import csv
import math
import shlex
import statistics

import pytest

import batch_scaling
import dataloader
import runs
import train
from conftest import TINY_SWEEP, make_dataset, run_script


def test_evaluations_come_at_every_step_to_ten_then_every_five_per_cent():
    steps = batch_scaling.eval_steps(1000)
    assert steps[:11] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert all(b / a <= 1.05 + 1 / a for a, b in zip(steps, steps[1:])) and steps[-1] <= 1000 < steps[-1] * 1.06
    assert len(steps) < 100  # an evaluation per 5% of progress: 10 + log(100) / log(1.05), about 105, capped


@pytest.mark.parametrize("s_min, b_crit", [(1000, 500), (300, 4000)])
def test_the_fit_recovers_the_critical_batch_size_of_synthetic_step_counts(s_min, b_crit):
    sizes = [16 * 2 ** k for k in range(10)]
    steps = [s_min * (1 + b_crit / b) * (1.02 if k % 2 else 0.98) for k, b in enumerate(sizes)]  # 2% noise
    fitted_min, fitted_crit = batch_scaling.fit_critical(sizes, steps)
    assert fitted_min == pytest.approx(s_min, rel=0.05) and fitted_crit == pytest.approx(b_crit, rel=0.1)


def test_a_run_stops_when_it_reaches_the_target_diverges_or_stalls():
    config = {"batch_size": 100}
    start = {"status": "completed", "reached": False, "steps": None}
    row = lambda step, acc, loss=0.1: {"step": step, "val_acc": acc, "train_loss": loss, "seconds": step / 10}  # noqa: E731
    reached = batch_scaling.check(start, [row(5, 0.5), row(50, 0.99)], 0.98, config, 1000)
    assert reached["reached"] and reached["steps"] == 50 and reached["epochs"] == 5.0
    assert batch_scaling.check(start, [row(5, 0.5), row(6, 0.4, math.nan)], 0.98, config, 1000)["status"] == "diverged"
    improving = [row(s, 0.5 + s / 10000) for s in (10, 100, 200, 400)]
    assert not batch_scaling.check(start, improving, 0.98, config, 1000).get("stalled")
    flat = [row(10, 0.5), row(100, 0.9), row(300, 0.89), row(400, 0.9)]  # nothing better since step 100 <= 400 / 2
    assert batch_scaling.check(start, flat, 0.98, config, 1000)["stalled"]


def test_with_ema_the_study_evaluates_the_moving_average(tiny_data, monkeypatch):
    args, base = batch_scaling.parse(["--data-dir", str(tiny_data), "--no-verify", "--val-split", "100", "--hidden",
                                      "32", "--device", "cpu", "--ema", "0.9", "--batch-sizes", "50"])
    config = {**batch_scaling.first_round(args, base, 500)[0].config, "device": "cpu"}
    tensors, built, build = dataloader.for_run(config, "cpu")[1], [], train.build_trainer
    monkeypatch.setattr(train, "build_trainer", lambda *a: built.append(build(*a)) or built[-1])
    summary, rows = batch_scaling.to_target(config, tensors, 0.99, 10)
    trainer = built[0]
    assert rows[-1]["step"] == 10 and trainer.ema
    average, model = (train.evaluate(m, trainer.eval_loss_fn, *tensors["val"]) for m in (trainer.ema.module, trainer.model))
    assert rows[-1]["val_loss"] == average[0] != model[0]
    assert summary["test_acc"] == train.evaluate(trainer.ema.module, trainer.eval_loss_fn, *tensors["test"])[1]


@pytest.mark.slow
def test_a_tiny_study_end_to_end(tmp_path):
    data = make_dataset(tmp_path / "data")
    flags = [*[f for f in TINY_SWEEP if f not in ("--epochs", "2", "--batch-size", "50")], "--data-dir", data, "--out", tmp_path / "out",
             "--batch-sizes", "10,128", "--target", "0.5", "--max-steps", "300", "--tune-lr", "0.5,1,2", "--widen", "1",
             "--seeds", "2", "--threads", "1", "--jobs", "2"]  # jobs: the runs' start-up (torch's import) overlaps
    first = run_script("batch_scaling.py", *flags)
    assert first.returncode == 0, first.stderr + first.stdout
    folder = tmp_path / "out" / "batch_scaling"
    for name in ("batch_scaling.csv", "batch_scaling.md", "batch_scaling_steps.png", "batch_scaling_time.png",
                 "batch_scaling_lr.png", "batch_scaling_noise.png"):
        assert (folder / name).stat().st_size > 0, name
    found = {}
    for run_dir in runs.find_runs(tmp_path / "out"):
        config, summary = runs.read_config(run_dir), runs.read_summary(run_dir)
        if "study" in config and summary.get("reached"):
            found.setdefault((config["batch_size"], config["lr"]), []).append(summary["steps"])
    rows = {int(r["batch_size"]): r for r in csv.DictReader(open(folder / "batch_scaling.csv"))}
    for size in (10, 128):
        both = {lr: s for (b, lr), s in found.items() if b == size and len(s) == 2}
        best = min(both, key=lambda lr: statistics.mean(math.log(s) for s in both[lr]))
        assert rows[size]["lr"] == f"{best:g}"
        assert rows[size]["steps_to_target"] == f"{statistics.mean(both[best]):.0f} ± {statistics.stdev(both[best]):.0f}"
    again = run_script("batch_scaling.py", *flags)  # everything reused: nothing trained or timed again
    rounds = [line for line in again.stdout.splitlines() if line.startswith("learning-rate search, round")]
    assert again.returncode == 0 and rounds and all(line.endswith(" 0 to train") for line in rounds)
    assert "noise scale: training" not in again.stdout and "timing pass:" not in again.stdout


def test_print_commands_prints_one_runnable_command_per_missing_run_and_a_run_is_then_reused(tiny_data, tmp_path,
                                                                                           capsys):
    flags = ["--data-dir", str(tiny_data), "--no-verify", "--val-split", "100", "--hidden", "8", "--device", "cpu",
             "--out", str(tmp_path / "out"), "--batch-sizes", "50,100", "--tune-lr", "1,2", "--seeds", "1",
             "--target", "0.3", "--max-steps", "20", "--threads", "1"]
    assert batch_scaling.main([*flags, "--print-commands"]) == 0
    printed = capsys.readouterr()
    lines = printed.out.splitlines()
    assert len(lines) == 4 and all("batch_scaling.py --run " in line for line in lines)
    assert "run this command again once they are done" in printed.err
    batch_scaling.main(shlex.split(lines[0])[2:])  # as a cluster job would, in-process
    batch_scaling.main([*flags, "--print-commands"])
    assert capsys.readouterr().out.splitlines() == lines[1:]  # the finished run is reused
