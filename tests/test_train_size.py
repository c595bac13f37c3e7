"""The training-set-size study (train_size.py): combining the two parts' saved outputs, its refusals, the
batch-scaling study's output folder (--sweep-name), and one tiny study end to end."""
import csv
import shlex
from types import SimpleNamespace

import pytest

import batch_scaling
import sweep
import tables
import train_size
from conftest import make_dataset, run_script
from errors import UserError


def fixed_runs(path, accs, lr=0.05):
    """A part-2 <name>_runs.csv with comparison runs of the final validation accuracies accs {batch: [...]}
    (None: a missing run) and a tuning row that must be ignored."""
    rows = [{"batch_size": 64, "lr": "0.1", "seed": 0, "role": "tuning", "status": "completed", "final_val_acc": 1.0}]
    rows += [{"batch_size": b, "lr": f"{lr:g}", "seed": s, "role": "comparison",
              "status": "missing" if a is None else "completed", "final_val_acc": "" if a is None else a}
             for b, values in accs.items() for s, a in enumerate(values)]
    tables.write_csv(path, rows, list(rows[0]))
    return path


def test_the_best_batch_is_the_best_mean_over_seeds_and_ignores_tuning_runs_and_incomplete_sizes(tmp_path):
    fixed = train_size.read_fixed(fixed_runs(tmp_path / "r.csv", {16: [0.90, 0.94], 32: [0.93, 0.92],
                                                                  128: [0.99, None]}))
    assert sorted(fixed) == [16, 32, 128] and fixed[16] == (0.05, [0.90, 0.94])
    assert train_size.best_batch(fixed) == (32, pytest.approx(0.925))  # 128 misses a seed; 64 only tuned
    assert train_size.best_batch({16: (0.05, [None])}) is None


def test_the_slope_of_log_best_batch_against_log_n_is_one_for_proportional_growth():
    assert train_size.log_slope([1000, 2000, 4000], [8, 16, 32]) == pytest.approx(1.0)
    assert train_size.log_slope([1000, 2000, 4000], [64, 64, 64]) == pytest.approx(0.0)
    assert train_size.log_slope([1000, 1000], [8, 16]) is None


def test_table_rows_per_n_from_fake_parts(tmp_path):
    noise = SimpleNamespace(metrics=[{"epoch": 1, "val_acc": 0.90, "noise_scale": 300.0},
                                     {"epoch": 2, "val_acc": 0.95, "noise_scale": 500.0},
                                     {"epoch": 3, "val_acc": 0.96, "noise_scale": 900.0}])
    one = {"steps": {16: 2000.0, 128: 400.0}, "reached": {16: "2/2", 128: "2/2", 1024: "1/2"},
           "fit": (300.0, 600.0), "noise": noise}
    small = train_size.read_fixed(fixed_runs(tmp_path / "a.csv", {16: [0.95, 0.95], 64: [0.93, 0.93]}))
    large = train_size.read_fixed(fixed_runs(tmp_path / "b.csv", {16: [0.96, 0.96], 64: [0.98, 0.98],
                                                                  256: [0.97, 0.97]}))
    rows = train_size.table_rows({2000: {"one": one, "fixed": small}, 1000: {"one": None, "fixed": None},
                                  4000: {"one": None, "fixed": large}}, 0.94, [16, 128, 1024])
    assert [r["train_size"] for r in rows] == [1000, 2000, 4000]
    mid = rows[1]
    assert (mid["steps_b16"], mid["steps_b128"], mid["steps_b1024"]) == ("2000", "400", "not reached (1/2)")
    assert (mid["S_min"], mid["B_crit"], mid["B_simple_at_target"], mid["B_simple_range"]) == \
        ("300", "600", "500 (epoch 2)", "300-900")
    assert (mid["best_batch"], mid["best_over_N"], mid["best_on_edge"], mid["fixed_lr"]) == (16, "0.008", "yes", "0.05")
    assert (rows[2]["best_batch"], rows[2]["best_over_N"], rows[2]["best_on_edge"]) == (64, "0.016", "no")
    assert rows[0]["best_batch"] == "" and rows[0]["B_crit"] == ""
    never = train_size.table_rows({2000: {"one": one, "fixed": None}}, 0.99, [16])[0]  # the noise run's last epoch
    assert never["B_simple_at_target"] == "900 (epoch 3, the last: target not reached)" and never["best_batch"] == ""
    args = SimpleNamespace(target=0.94, seeds=2, fixed_epochs=12, fixed_seeds=2)  # 16 at 2000, 64 at 4000: slope 2
    assert "Slope of log best batch against log N: 2.00" in train_size.caption(args, rows)


def test_the_engines_command_lines_parse_and_name_their_folders_by_n():
    args, rest = train_size.parse(["--train-sizes", "1000,500", "--hidden", "32", "--threads", "1"])
    assert args.train_sizes == [500, 1000] and rest == ["--hidden", "32", "--threads", "1"]
    one, base = batch_scaling.parse(train_size.part_one_argv(args, rest, 500))
    assert one.sweep_name == "batch_scaling_n500" and base["train_size"] == 500 and base["schedule"] == "constant"
    two, _ = sweep.parse_cli(train_size.part_two_argv(args, rest, 500), "batch_size", [16])
    assert two.name == "batch_size_fixed_lr_n500" and two.base["train_size"] == 500 and not two.tuned
    assert two.base["schedule"] == "constant" and two.lr_scaling == "none" and two.base["hidden"] == [32]


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "64"], "--batch-sizes"),
    (["--train-size=500"], "--train-sizes"),
    (["--epochs", "3"], "--fixed-epochs"),
    (["--train-sizes", "0,500"], "positive whole numbers"),
    (["--plot-only", "--print-commands"], "give one"),
])
def test_flags_the_study_sets_itself_are_refused_with_what_to_give(flags, message):
    with pytest.raises(UserError, match=message):
        train_size.parse(flags)


def test_a_train_size_above_the_split_or_a_batch_above_the_smallest_n_is_refused_before_training(tiny_data, tmp_path):
    flags = ["--data-dir", str(tiny_data), "--no-verify", "--val-split", "100", "--out", str(tmp_path / "out")]
    with pytest.raises(UserError, match="600 outside 10 .* to 500, the training images left after --val-split"):
        train_size.main([*flags, "--train-sizes", "200,600", "--batch-sizes", "16", "--fixed-batch-sizes", "16"])
    with pytest.raises(UserError, match="--fixed-batch-sizes: batch 256 is larger than the smallest training set"):
        train_size.main([*flags, "--train-sizes", "200,400", "--batch-sizes", "16", "--fixed-batch-sizes", "16,256"])
    assert not (tmp_path / "out").exists()


def test_batch_scaling_names_its_folder_by_sweep_name_and_keeps_batch_scaling_by_default(tiny_data, tmp_path, capsys):
    assert batch_scaling.parse([])[0].sweep_name == "batch_scaling" == batch_scaling.NAME
    with pytest.raises(UserError, match="a folder name"):
        batch_scaling.parse(["--sweep-name", "a/b"])
    flags = ["--data-dir", str(tiny_data), "--no-verify", "--val-split", "100", "--hidden", "8", "--device", "cpu",
             "--out", str(tmp_path / "out"), "--batch-sizes", "50,100", "--seeds", "1", "--tune-lr", "1",
             "--target", "0.3", "--max-steps", "20", "--threads", "1", "--train-size", "400", "--sweep-name", "small"]
    assert batch_scaling.main([*flags, "--print-commands"]) == 0
    for line in capsys.readouterr().out.splitlines():
        batch_scaling.main(shlex.split(line)[2:])  # the runs, in-process: the study then starts none
    found = batch_scaling.study(flags)  # times the two sizes in-process, then writes the table and figures
    folder = tmp_path / "out" / "small"
    names = {p.name for p in folder.iterdir()}
    assert {"small.csv", "small.md", "small_steps.png", "small_time.png", "small_lr.png", "small_timing.json"} <= names
    assert not (tmp_path / "out" / "batch_scaling").exists() and found.n == 400
    assert "class-balanced subset of 400 images" in (folder / "small.md").read_text()


@pytest.mark.slow
def test_a_tiny_study_end_to_end(tmp_path):
    out, data = tmp_path / "out", make_dataset(tmp_path / "data", n_train=1100)
    flags = ["--data-dir", data, "--no-verify", "--val-split", "100", "--train-sizes", "500,1000",
             "--batch-sizes", "16,128", "--fixed-batch-sizes", "16,128", "--target", "0.7",
             "--max-epochs", "3", "--fixed-epochs", "1", "--seeds", "1", "--fixed-seeds", "1", "--tune-lr", "1",
             "--threads", "1", "--hidden", "64", "--jobs", "2", "--out", out]  # jobs: the runs' start-up overlaps
    done = run_script("train_size.py", *flags)
    assert done.returncode == 0, done.stderr + done.stdout
    for n in (500, 1000):
        assert (out / f"batch_scaling_n{n}" / f"batch_scaling_n{n}.md").exists()
        assert (out / f"batch_size_fixed_lr_n{n}" / f"batch_size_fixed_lr_n{n}_runs.csv").exists()
    rows = list(csv.DictReader(open(out / "train_size" / "train_size.csv")))
    assert [int(r["train_size"]) for r in rows] == [500, 1000] and all(r["best_batch"] in ("16", "128") for r in rows)
    assert (out / "train_size" / "train_size.png").stat().st_size > 0
    assert train_size.main([*map(str, flags), "--plot-only"]) == 0  # from the saved runs: the same table
    assert list(csv.DictReader(open(out / "train_size" / "train_size.csv"))) == rows



def test_plot_only_before_any_run_leaves_both_parts_out_and_writes_an_empty_table(tiny_data, tmp_path, capsys):
    out = tmp_path / "out"
    assert train_size.main(["--data-dir", str(tiny_data), "--no-verify", "--val-split", "100", "--out", str(out),
                            "--train-sizes", "200,400", "--batch-sizes", "50", "--fixed-batch-sizes", "50",
                            "--plot-only"]) == 0
    assert "batch_scaling_n200: nothing saved yet, left out" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "train_size" / "train_size.csv")))
    assert [r["train_size"] for r in rows] == ["200", "400"] and not any(r["best_batch"] for r in rows)
    assert not (out / "runs").exists() and (out / "train_size" / "train_size.png").exists()
