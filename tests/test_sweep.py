"""End-to-end tests of sweep.py on tiny synthetic data: one sweep of 2 learning rates x 2 seeds (one
rate diverges) is trained once for the module; the other tests check reuse, --plot-only,
--print-commands, the grid and bad inputs against it."""
import csv
import re
import shlex
import statistics
import subprocess

import pytest

from conftest import ROOT, TINY, make_dataset, run_script
import runs
import sweep
from errors import UserError

GOOD, BAD = "0.05", "1e6"  # plain SGD at lr 1e6 overflows within the first epoch


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """Train the tiny sweep once; returns (base flags, out folder, first call's output)."""
    root = tmp_path_factory.mktemp("sweep")
    flags = [*TINY, "--data-dir", make_dataset(root / "data"), "--out", root / "out", "--seeds", "2"]
    result = run_script("sweep.py", "lr", GOOD, BAD, "--optimizer", "sgd", *flags)
    assert result.returncode == 0, result.stderr
    return flags, root / "out", result.stdout


def read_table(out, name="lr"):
    with open(out / name / f"{name}.csv") as f:
        return list(csv.DictReader(f))


def run_dirs(out):
    return {p.name for p in (out / "runs").iterdir()}


def test_outputs_and_table_numbers(swept):
    _, out, stdout = swept
    assert "[4/4]" in stdout and "0 reused, 4 to train" in stdout
    for suffix in ("_loss.png", "_acc.png", "_time.png", ".csv", ".md"):
        assert (out / "lr" / f"lr{suffix}").stat().st_size > 0
    rows = read_table(out)
    assert [row["lr"] for row in rows] == [GOOD, BAD]
    finals = [runs.read_jsonl(d / "metrics.jsonl")[-1]["test_acc"] for d in runs.find_runs(out)
              if runs.read_json(d / "config.json")["lr"] == float(GOOD)]
    assert len(finals) == 2
    expected = f"{100 * statistics.mean(finals):.2f} ± {100 * statistics.stdev(finals):.2f}"
    assert rows[0]["final_test_acc_%"] == expected and rows[0]["completed"] == "2/2"
    assert len(list(csv.DictReader(open(out / "runs.csv")))) == 4


def test_diverged_run_is_tabled_not_dropped(swept):
    _, out, _ = swept
    statuses = [runs.read_json(d / "summary.json")["status"] for d in runs.find_runs(out)
                if runs.read_json(d / "config.json")["lr"] == float(BAD)]
    assert statuses == ["diverged", "diverged"]  # the value really diverges on this data
    row = read_table(out)[1]
    assert row["completed"] == "0/2" and "seed 0 diverged at epoch 1" in row["status"]
    assert "diverged at epoch 1" in (out / "lr" / "lr.md").read_text()


def test_second_call_trains_nothing(swept):
    flags, out, _ = swept
    before = run_dirs(out)
    result = run_script("sweep.py", "lr", GOOD, BAD, "--optimizer", "sgd", *flags)
    assert result.returncode == 0, result.stderr
    assert "4 reused, 0 to train" in result.stdout and "[1/" not in result.stdout
    assert run_dirs(out) == before


def test_plot_only_replots_without_training(swept):
    flags, out, _ = swept
    before = run_dirs(out)
    (out / "lr" / "lr_loss.png").unlink()
    result = run_script("sweep.py", "lr", GOOD, BAD, "--optimizer", "sgd", *flags, "--plot-only")
    assert result.returncode == 0, result.stderr
    assert (out / "lr" / "lr_loss.png").exists() and "to train" not in result.stdout
    assert run_dirs(out) == before


def test_grid_reuses_runs_and_draws_heatmap(swept):
    flags, out, _ = swept
    before = run_dirs(out)
    result = run_script("sweep.py", "--grid", f"lr={GOOD},{BAD}", "optimizer=sgd", *flags)
    assert result.returncode == 0, result.stderr
    assert "4 reused, 0 to train" in result.stdout and run_dirs(out) == before
    grid = list(csv.DictReader(open(out / "lr_x_optimizer" / "lr_x_optimizer_grid.csv")))
    assert [row["lr"] for row in grid] == [GOOD, BAD] and "diverged" in grid[1]["sgd"]
    assert (out / "lr_x_optimizer" / "lr_x_optimizer_heatmap.png").stat().st_size > 0


def test_print_commands_are_runnable(swept):
    flags, out, _ = swept
    args = ["lr", GOOD, "0.02", "--optimizer", "sgd", *flags, "--print-commands"]
    lines = run_script("sweep.py", *args).stdout.splitlines()
    assert len(lines) == 2 and all("--lr 0.02" in line for line in lines)
    before = run_dirs(out)
    done = subprocess.run(shlex.split(lines[0]), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(run_dirs(out) - before) == 1
    assert len(run_script("sweep.py", *args).stdout.splitlines()) == 1


def test_bad_input_is_one_error_line(tmp_path):
    result = run_script("optimizer.py", "--values", "sgd,nope", "--out", tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: --optimizer nope: ") and "invalid choice" in result.stderr
    assert not any((tmp_path / "runs").glob("*"))


@pytest.mark.parametrize("args, message", [
    (["lr", "0.1", "--bogus"], "unrecognized arguments: --bogus"),
    (["lr", "abc"], "--lr abc: "),
    (["colour", "red"], "cannot sweep 'colour'"),
    (["seed", "1", "2"], "cannot sweep 'seed'"),
    (["lr", "0.1", "--grid", "a=1", "b=2"], "not both"),
    ([], "say what to vary"),
])
def test_bad_input_is_a_user_error(tmp_path, args, message):
    with pytest.raises(UserError, match=re.escape(message)):
        sweep.run_sweep([*args, "--out", str(tmp_path)])
