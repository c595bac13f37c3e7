"""End-to-end tests of sweep.py on tiny synthetic data: one sweep of 2 learning rates x 2 seeds (one
rate diverges) is trained once for the module; the other tests check reuse, --plot-only,
--print-commands, the grid and bad inputs against it."""
import ast
import csv
import json
import random
import re
import shlex
import statistics
import subprocess
from types import SimpleNamespace

import pytest

from conftest import ROOT, TINY_SWEEP, make_dataset, run_script
import files
import outcomes
import plots
import runs
import sweep
import settings
import stats
import tables
import timing
from errors import UserError

GOOD, BAD = "0.05", "1e6"  # plain SGD at lr 1e6 overflows within the first epoch


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """Train the tiny sweep once; returns (base flags, out folder, first call's output)."""
    root = tmp_path_factory.mktemp("sweep")
    flags = [*TINY_SWEEP, "--data-dir", make_dataset(root / "data"), "--out", root / "out", "--seeds", "2"]
    result = run_script("sweep.py", "lr", GOOD, BAD, "--optimizer", "sgd", *flags)
    assert result.returncode == 0, result.stderr
    return flags, root / "out", result.stdout


def read_table(out, name="lr"):
    with open(out / name / f"{name}.csv") as f:
        return list(csv.DictReader(f))


def run_dirs(out):
    return {p.name for p in runs.find_runs(out)}


@pytest.mark.slow
def test_outputs_and_table_numbers(swept):
    _, out, stdout = swept
    assert "[4/4]" in stdout and "0 reused, 4 to train" in stdout
    for suffix in ("_loss.png", "_acc.png", "_time.png", ".csv", ".md"):
        assert (out / "lr" / f"lr{suffix}").stat().st_size > 0
    rows = read_table(out)
    assert [row["lr"] for row in rows] == [GOOD, BAD]
    finals = [files.read_jsonl(d / "metrics.jsonl")[-1]["test_acc"] for d in runs.find_runs(out)
              if files.read_json(d / "config.json")["lr"] == float(GOOD)]
    assert len(finals) == 2
    expected = f"{100 * statistics.mean(finals):.2f} ± {100 * statistics.stdev(finals):.2f}"
    assert rows[0]["final_test_acc_%"] == expected and rows[0]["completed"] == "2/2"
    assert len(list(csv.DictReader(open(out / "runs.csv")))) == 4


@pytest.mark.slow
def test_diverged_run_is_tabled_not_dropped(swept):
    _, out, _ = swept
    statuses = [files.read_json(d / "summary.json")["status"] for d in runs.find_runs(out)
                if files.read_json(d / "config.json")["lr"] == float(BAD)]
    assert statuses == ["diverged", "diverged"]  # the value really diverges on this data
    row = read_table(out)[1]
    assert row["completed"] == "0/2" and "seed 0 diverged at epoch 1" in row["status"]
    assert "diverged at epoch 1" in (out / "lr" / "lr.md").read_text()


@pytest.mark.slow
def test_second_call_trains_nothing(swept):
    flags, out, _ = swept
    before = run_dirs(out)
    result = run_script("sweep.py", "lr", GOOD, BAD, "--optimizer", "sgd", *flags)
    assert result.returncode == 0, result.stderr
    assert "4 reused, 0 to train" in result.stdout and "[1/" not in result.stdout
    assert run_dirs(out) == before


@pytest.mark.slow
def test_plot_only_replots_without_training(swept):
    flags, out, _ = swept
    before = run_dirs(out)
    (out / "lr" / "lr_loss.png").unlink()
    result = run_script("sweep.py", "lr", GOOD, BAD, "--optimizer", "sgd", *flags, "--plot-only")
    assert result.returncode == 0, result.stderr
    assert (out / "lr" / "lr_loss.png").exists() and "to train" not in result.stdout
    assert run_dirs(out) == before


@pytest.mark.slow
def test_grid_reuses_runs_and_draws_heatmap(swept):
    flags, out, _ = swept
    before = run_dirs(out)
    result = run_script("sweep.py", "--grid", f"lr={GOOD},{BAD}", "optimizer=sgd", *flags)
    assert result.returncode == 0, result.stderr
    assert "4 reused, 0 to train" in result.stdout and run_dirs(out) == before
    grid = list(csv.DictReader(open(out / "lr_x_optimizer" / "lr_x_optimizer_grid.csv")))
    assert [row["lr"] for row in grid] == [GOOD, BAD] and "diverged" in grid[1]["sgd"]
    assert (out / "lr_x_optimizer" / "lr_x_optimizer_heatmap.png").stat().st_size > 0


@pytest.mark.slow
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


def test_a_run_command_names_its_thread_count_once():
    given = SimpleNamespace(argv=["--lr", "0.1", "--threads", "1"])
    assert sweep.command(given, threads=1).count("--threads") == 1
    assert sweep.command(SimpleNamespace(argv=["--lr", "0.1"]), threads=2)[-4:] == ["--threads", "2", "--once", "--quiet"]


@pytest.mark.slow
def test_bad_input_is_one_error_line(tmp_path):
    result = run_script("optimizer.py", "--values", "sgd,nope", "--out", tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: --optimizer nope: ") and "invalid choice" in result.stderr
    assert not any((tmp_path / "runs").glob("*"))


def test_unknown_flag_is_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        sweep.run_sweep(["lr", "0.1", "--bogus", "--out", str(tmp_path)])
    assert stopped.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["lr", "abc"], "--lr abc: "),
    (["colour", "red"], "cannot sweep 'colour'"),
    (["seed", "1", "2"], "cannot sweep 'seed'"),
    (["lr", "0.1", "--grid", "a=1", "b=2"], "not both"),
    ([], "say what to vary"),
])
def test_bad_input_is_a_user_error(tmp_path, args, message):
    with pytest.raises(UserError, match=re.escape(message)):
        sweep.run_sweep([*args, "--out", str(tmp_path)])


# ---------------------------------------------------------------------------- fair sweeps (issue 10)

def fake_run(test_acc, val_acc, status="completed"):
    """A runs.Run as runs.read_run returns it, with only what tables and plots read."""
    summary = {"status": status, "final_test_acc": test_acc, "final_val_acc": val_acc, "best_test_acc": test_acc,
               "final_test_loss": 0.1, "train_seconds": 1.0}
    metrics = [{"epoch": 1, "test_acc": test_acc, "train_acc": test_acc, "elapsed_seconds": 1.0, "epoch_seconds": 1.0,
                "train_loss": 0.1, "test_loss": 0.1}] if status == "completed" else []
    return runs.Run(None, {}, metrics, summary, [])


def fake_result(label, test_accs, val_accs=None, factor=1.0):
    val_accs = val_accs or test_accs
    return sweep.Candidate(sweep.Point(label, {}), factor, {"lr": 0.05 * factor},
                           [fake_run(t, v) for t, v in zip(test_accs, val_accs)], list(range(len(test_accs))))


@pytest.mark.parametrize("mode, expected", [
    ("linear", [0.00625, 0.025, 0.1]), ("sqrt", [0.01768, 0.03536, 0.07071]), ("none", [None, None, None])])
def test_batch_size_sweep_scales_the_learning_rate(tmp_path, mode, expected):
    points = sweep.parse_cli(["--lr-scaling", mode, "--tune-lr", "1", "--out", str(tmp_path)],
                             "batch_size", [16, 64, 256], defaults={"lr_scaling": "linear"})[0].points
    assert [p.settings.get("lr") for p in points] == expected  # base: lr 0.05 at batch 128
    points = sweep.parse_cli(["--optimizer", "adam", "--out", str(tmp_path)], "batch_size", [256],
                             defaults={"lr_scaling": "linear"})[0].points
    assert points[0].settings == {"batch_size": 256, "lr": 0.002}  # adam's default lr 0.001, times 2


def test_jobs_run_seed_by_seed_across_values(tmp_path):
    planned, _ = sweep.parse_cli(["lr", "0.1", "0.2", "--tune-lr", "0.5,1", "--tune-seeds", "2", "--out", str(tmp_path)])
    jobs = sweep.plan(planned.base, [(p, planned.factors) for p in planned.points], planned.tune_seeds)
    order = [(job.seed, job.point.label, job.factor) for job in jobs]
    assert order == [(s, v, f) for s in (0, 1) for v in ("0.1", "0.2") for f in (0.5, 1.0)]


def test_the_learning_rate_is_chosen_on_validation_never_on_test():
    # Validation peaks at factor 1; the test accuracies say factor 4, and swapping them around changes nothing.
    val = {0.25: 0.975, 0.5: 0.979, 1.0: 0.982, 2.0: 0.980, 4.0: 0.970}
    for test in ({0.25: 0.97, 0.5: 0.97, 1.0: 0.97, 2.0: 0.97, 4.0: 0.99}, {f: 0.98 for f in val}):
        candidates = [fake_result("relu", [test[f]] * 2, [v, v + 0.001], f) for f, v in val.items()]
        (chosen,) = sweep.choose(candidates, FIRST, 0)
        assert chosen.factor == 1.0 and chosen.val_score == pytest.approx(0.9825)
        assert {c.factor for c in chosen.options} == set(FIRST) and chosen.search == "interior"
    candidates[0].runs[1] = fake_run(0.1, 0.1, status="diverged")  # a seed that did not complete counts as 0
    assert candidates[0].val_score == pytest.approx(0.975 / 2)


def test_t_distribution_matches_known_values():
    assert stats.t_tail(1.0, 1) == pytest.approx(0.5, abs=1e-6)  # Cauchy: P(|T| > 1) = 1/2
    assert stats.t_tail(4.302653, 2) == pytest.approx(0.05, abs=1e-5)  # the tabled 97.5% points
    assert stats.t_tail(2.776445, 4) == pytest.approx(0.05, abs=1e-5)
    assert stats.t_tail(1.959964, 1e6) == pytest.approx(0.05, abs=1e-4)  # large df: the normal
    # References from scipy.stats (2 * t.sf), computed once outside the project.
    assert stats.t_tail(1.7, 2.6) == pytest.approx(0.2015362, abs=1e-6)  # a fractional df
    assert stats.t_quantile(0.025, 9) == pytest.approx(2.262157, abs=1e-5)  # t.ppf(0.975, 9)
    assert stats.t_quantile(0.2, 9) == pytest.approx(0.883404, abs=1e-5)  # t.ppf(0.8, 9)
    assert stats.t_quantile(0.0025, 11) == pytest.approx(3.496614, abs=1e-5)  # t.ppf(0.9975, 11)
    assert stats.paired_p([1, 2, 3.5, 4], [1.5, 3, 7, 4.1]) == pytest.approx(0.1938137, abs=1e-6)  # ttest_rel


def test_noise_marks_say_which_values_differ_from_the_best():
    results = [fake_result("a", [0.985, 0.986, 0.984]), fake_result("b", [0.983, 0.987, 0.985]),
               fake_result("c", [0.970, 0.971, 0.969]), fake_result("d", [0.99])]
    marks, resolution = outcomes.comparison(results)
    assert marks["a"] == "best" and marks["b"].startswith("within noise (p ")
    assert marks["c"] == "lower (p < 0.001)" and "d" not in marks  # one seed: no test
    assert resolution["seeds"] == 3 and resolution["comparisons"] == 2



def test_plots_take_what_they_share_with_tables_from_outcomes():
    imported = {alias.name for node in ast.walk(ast.parse((ROOT / "plots.py").read_text()))
                if isinstance(node, ast.Import) for alias in node.names}
    assert "outcomes" in imported and "tables" not in imported
    result = fake_result("a", [0.98, 0.97])
    result.runs[1] = fake_run(0.1, 0.1, status="diverged")
    assert outcomes.final_test_accs(result) == [0.98] and outcomes.short_status(result) == "1 diverged"

def test_a_collapsed_value_leaves_the_error_axis():
    results = [fake_result("ok", [0.985, 0.984]), fake_result("slow", [0.925, 0.926]),
               fake_result("collapsed", [0.1135, 0.1135]), fake_result("gone", [0.9])]
    results[3] = results[3]._replace(runs=[fake_run(0.1, 0.1, status="diverged")])
    assert plots.off_scale(results) == {"collapsed", "gone"}


TUNE = ["--tune-lr", "0.5,1", "--widen", "1"]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A tiny activation sweep: the learning rate searched from two factors, widened once at most, on
    tuning seeds 0 and 1, then compared on seeds 2 and 3."""
    root = tmp_path_factory.mktemp("tuned")
    flags = [*TINY_SWEEP, "--data-dir", make_dataset(root / "data"), "--out", root / "out", "--seeds", "2",
             "--jobs", "2", "--lr", "0.1"]
    result = run_script("sweep.py", "activation", "relu", "tanh", *TUNE, *flags)
    assert result.returncode == 0, result.stderr + result.stdout
    return flags, root / "out", result.stdout


@pytest.mark.slow
def test_tuned_sweep_compares_fresh_seeds_at_the_best_validation_lr_per_value(tuned):
    _, out, stdout = tuned
    assert "learning-rate search, round 1: 8 runs: 0 reused, 8 to train" in stdout
    assert "comparison: 4 runs: 0 reused, 4 to train" in stdout
    tuning, compared = {}, {}
    for run_dir in runs.find_runs(out):
        config, summary = runs.read_config(run_dir), files.read_json(run_dir / "summary.json")
        into = tuning if config["seed"] in (0, 1) else compared
        into.setdefault((config["activation"], config["lr"]), []).append(summary)
    rows = {row["activation"]: row for row in read_table(out, "activation")}
    for activation in ("relu", "tanh"):
        tried = [lr for a, lr in tuning if a == activation]
        assert len(tried) in (2, 3)  # the first grid, widened by one rate where its best was on an edge
        means = {lr: statistics.mean(s["final_val_acc"] for s in tuning[(activation, lr)]) for lr in tried}
        smooth = stats.smoothed(means)  # lr and factor are proportional: the same neighbours
        best_lr = max(tried, key=smooth.get)
        assert rows[activation]["lr"] == f"{best_lr:g}"
        assert set(lr for a, lr in compared if a == activation) == {best_lr}  # seeds 2, 3 at that rate only
        chosen = [s["final_test_acc"] for s in compared[(activation, best_lr)]]
        assert len(chosen) == 2 and rows[activation]["final_test_acc_%"].startswith(f"{100 * statistics.mean(chosen):.2f} ± ")
    table = [line for line in (out / "activation" / "activation_tuning.md").read_text().splitlines()
             if line.startswith("| ")]
    assert table[0].startswith("| activation |") and table[0].endswith("| search |")
    assert sum(line.count("*") for line in table) == 2
    assert (out / "activation" / "activation_lr.png").stat().st_size > 0


@pytest.mark.slow
def test_timing_pass_is_saved_retimed_on_request_and_kept_by_plot_only(tuned):
    flags, out, stdout = tuned
    path = out / "activation" / "activation_timing.json"
    assert "timing pass:" in stdout
    first = json.loads(path.read_text())
    assert set(first["values"]) == {"relu", "tanh"} and first["rounds"] == timing.ROUNDS
    assert all(v["low"] <= v["median"] <= v["high"] for v in first["values"].values())
    replot = run_script("sweep.py", "activation", "relu", "tanh", *TUNE, *flags, "--plot-only")
    assert replot.returncode == 0 and "timing pass:" not in replot.stdout and json.loads(path.read_text()) == first
    before = run_dirs(out)
    retimed = run_script("sweep.py", "activation", "relu", "tanh", *TUNE, *flags, "--retime")
    assert retimed.returncode == 0 and "timing pass:" in retimed.stdout and "to train" not in retimed.stdout
    assert json.loads(path.read_text())["values"] != first["values"] and run_dirs(out) == before
    rows = [line for line in (out / "activation" / "activation.md").read_text().splitlines() if line.startswith("| ")]
    assert not any("(log)" in row for row in rows)  # every value's seconds come from the timing pass


@pytest.mark.slow
def test_variants_set_several_flags_each(swept):
    flags, out, _ = swept
    result = run_script("sweep.py", "--variants", "plain=--lr 0.05", "wide and slow=--hidden 48 --lr 0.02",
                        "--optimizer", "sgd", *flags, "--sweep-name", "variants")
    assert result.returncode == 0, result.stderr
    rows = read_table(out, "variants")
    assert [row["variant"] for row in rows] == ["plain", "wide and slow"]
    assert "1 reused" not in result.stdout and "4 runs: 2 reused, 2 to train" in result.stdout  # plain = lr 0.05


def test_timing_divides_out_the_hosts_drift_between_rounds():
    """Values timed in turn keep their true ratio and order while the host's speed swings by 2x between
    rounds and each measurement carries 1% noise."""
    rng = random.Random(0)
    true = {"sgd": 1.00, "momentum": 1.02, "adam": 1.05}
    spent_rounds = [{k: v * drift * rng.uniform(0.99, 1.01) for k, v in true.items()}
                    for drift in (rng.uniform(0.5, 1.0) for _ in range(40))]
    timed = timing.drift_free(spent_rounds)
    assert sorted(timed, key=lambda k: timed[k]["median"]) == ["sgd", "momentum", "adam"]
    for k, v in true.items():
        assert timed[k]["ratio"] / timed["sgd"]["ratio"] == pytest.approx(v, rel=0.005)
        assert timed[k]["low"] <= timed[k]["median"] <= timed[k]["high"]


def test_a_sweep_title_names_every_setting_off_its_default():
    base = vars(settings.build_parser().parse_args(["--norm", "batch", "--adversarial", "vat", "--adv-eps", "2",
                                                 "--rotate", "10", "--hflip", "--dropout", "0.2"]))
    planned = SimpleNamespace(base=base, points=[SimpleNamespace(settings={"dropout": 0.5})], factors=[1.0],
                              seeds=[0, 1, 2], lr_scaling="linear")
    title = tables.describe_base(planned)
    assert "norm batch, dropout varied, adversarial vat, adv eps 2, rotate 10, hflip, 3 seeds" in title
    assert "dropout 0.2" not in title  # a varied setting is not named at its base value
    assert "elastic" not in title and "shift" not in title  # settings at their defaults are not named


def test_each_job_runs_exactly_the_config_it_was_planned_with(tmp_path):
    """plan builds configs without parsing argv back: the train.py flags of every job must give its config."""
    planned, _ = sweep.parse_cli(["--grid", "optimizer=adam,sgd", "batch_size=32,256", "--lr-scaling", "sqrt",
                                  "--tune-lr", "0.5,1,2", "--hidden", "64", "--out", str(tmp_path)])
    jobs = sweep.plan(planned.base, [(p, planned.factors) for p in planned.points], planned.tune_seeds + planned.seeds)
    assert len(jobs) == 4 * 3 * 5
    for job in jobs:
        assert settings.parse_config(job.argv) == job.config and settings.run_key(job.config) == job.key


# ---------------------------------------------------------------------------- tuning and statistics (issue 19)

FIRST = [0.25, 0.5, 1.0, 2.0, 4.0]


def test_the_search_widens_outward_while_the_best_rate_is_on_an_edge():
    rising = {f: f for f in FIRST}  # the higher the rate, the better: widen upwards, by the grid's spacing
    assert sweep.widen(FIRST, rising, FIRST, 2) == FIRST + [8.0]
    assert sweep.widen(FIRST + [8.0, 16.0], {**rising, 8.0: 8, 16.0: 16}, FIRST, 2) == FIRST + [8.0, 16.0]
    assert sweep.search_state(FIRST + [8.0, 16.0], {**rising, 8.0: 8, 16.0: 16}, FIRST, 2) == \
        "at the highest rate tried, the limit of --widen 2"
    falling = {f: -f for f in FIRST}
    assert sweep.widen(FIRST, falling, FIRST, 2) == [0.125] + FIRST
    peaked = {f: -abs(f - 1) for f in FIRST}
    assert sweep.widen(FIRST, peaked, FIRST, 2) == FIRST and sweep.search_state(FIRST, peaked, FIRST, 2) == "interior"
    diverged = {**rising, 8.0: 0.0}  # the next rate diverged: it bounds the search, and 4 is interior
    assert sweep.widen(FIRST + [8.0], diverged, FIRST, 2) == FIRST + [8.0]
    assert sweep.search_state(FIRST + [8.0], diverged, FIRST, 2) == "interior"
    assert sweep.widen(FIRST, {**rising, 4.0: None}, FIRST, 2) == FIRST  # runs missing: wait for them
    chance = {f: 0.1135 for f in FIRST}  # every rate collapsed alike: no edge is the best, nothing to widen
    assert sweep.widen(FIRST, chance, FIRST, 2) == FIRST
    assert sweep.search_state(FIRST, chance, FIRST, 2) == "every rate scored alike: none trained"


def test_holm_adjusts_the_smallest_p_most_and_keeps_the_order():
    adjusted = stats.holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adjusted == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})  # 3 x 0.01; 2 x 0.03; max(0.06, 0.04)
    assert stats.holm({"only": 0.2}) == {"only": 0.2} and stats.holm({"x": 0.6, "y": 0.7}) == {"x": 1.0, "y": 1.0}


def test_the_paired_test_sees_a_steady_difference_that_the_spread_between_seeds_hides():
    rng = random.Random(1)
    seed_effect = [rng.gauss(0, 0.002) for _ in range(10)]  # what a seed does to every value alike
    a = [0.980 + e + rng.gauss(0, 0.0002) for e in seed_effect]
    b = [0.979 + e + rng.gauss(0, 0.0002) for e in seed_effect]  # 0.1 point lower, seed by seed
    assert statistics.stdev(a) > 0.001  # the seeds spread more than the difference
    assert stats.paired_p(a, b) < 0.001
    assert stats.paired_p(a, list(reversed(b))) > 0.05  # unpaired, the same numbers show nothing


@pytest.mark.parametrize("n, comparisons", [(5, 1), (10, 6), (12, 10)])
def test_the_resolvable_difference_is_detected_with_the_stated_power(n, comparisons):
    sd = 0.001
    delta = stats.resolvable(sd, n, comparisons)
    level = stats.ALPHA / comparisons
    critical = stats.t_quantile(level / 2, n - 1)
    rng = random.Random(n)
    hits = 0
    for _ in range(4000):
        d = [delta + rng.gauss(0, sd) for _ in range(n)]
        hits += abs(statistics.mean(d)) / (statistics.stdev(d) / n ** 0.5) > critical
    # The t-based formula is the usual approximation to the noncentral t's power: within a few points.
    assert hits / 4000 == pytest.approx(stats.POWER, abs=0.04)
    assert stats.resolvable(2 * sd, n, comparisons) == pytest.approx(2 * delta)


def test_the_score_averages_a_rate_with_its_neighbours_and_shuns_the_edge_of_stability():
    scores = {0.5: 0.980, 1.0: 0.984, 2.0: 0.985, 4.0: 0.10}  # 4 collapsed
    smooth = stats.smoothed(scores)
    assert smooth[1.0] == pytest.approx((0.980 + 2 * 0.984 + 0.985) / 4)
    assert smooth[0.5] == pytest.approx((2 * 0.980 + 0.984) / 3)  # an edge has one neighbour
    assert max(smooth, key=smooth.get) == 1.0  # 2.0 has the best mean, but beside a collapse
    assert stats.smoothed({1.0: 0.98, 2.0: None}) == {1.0: 0.98, 2.0: None}


def test_a_lucky_rate_beside_poor_ones_loses_to_a_plateau():
    options = [fake_result("relu", [0.9], [v], f) for f, v in ((0.25, 0.970), (0.5, 0.981), (1.0, 0.980),
                                                              (2.0, 0.979), (4.0, 0.9815), (8.0, 0.960))]
    (chosen,) = sweep.choose(options, FIRST, 1)
    assert chosen.factor == 1.0  # 4.0 has the best mean of its own, between 2.0 and a poor 8.0


def test_a_grid_figure_gives_each_column_value_a_colour_and_each_row_value_a_line_style():
    labels = [f"{depth} / {act}" for depth in ("128", "128x128") for act in ("sigmoid", "tanh", "relu")]
    drawn = plots.grid_styles([SimpleNamespace(label=label) for label in labels])
    assert len({colour for colour, _ in drawn}) == 3 and len({style for _, style in drawn}) == 2
    assert drawn[0][0] == drawn[3][0] and drawn[0][1] != drawn[3][1]  # sigmoid: one colour, two depths
    assert plots.grid_styles([SimpleNamespace(label="a"), SimpleNamespace(label="b")]) == plots.styles(2)


@pytest.mark.slow
def test_the_per_run_csv_holds_every_run_and_recomputes_the_table(tuned):
    """<sweep>_runs.csv: the 8 tuning runs and 4 comparison runs, each with its seed, rate and role; the
    table's means and vs_best marks follow from it alone (test_recompute checks the committed ones)."""
    from test_recompute import check_against_table
    _, out, _ = tuned
    path = out / "activation" / "activation_runs.csv"
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert sorted(row["role"] for row in rows).count("comparison") == 4
    assert len([r for r in rows if r["role"] == "tuning"]) in (8, 10, 12)  # widened once per value at most
    assert {int(r["seed"]) for r in rows if r["role"] == "tuning"} == {0, 1}
    assert {int(r["seed"]) for r in rows if r["role"] == "comparison"} == {2, 3}
    assert len({r["run"] for r in rows}) == len(rows)
    check_against_table(path)
    with open(out / "activation" / "activation_epochs.csv") as f:
        epochs = list(csv.DictReader(f))  # every sweep writes it, measurements or not
    comparison = {(r["activation"], r["seed"]): float(r["final_train_loss"]) for r in rows if r["role"] == "comparison"}
    last = {(r["activation"], r["seed"]): float(r["train_loss"]) for r in epochs}  # the last epoch's row wins
    assert last == comparison


def test_seconds_to_target_come_from_the_timing_pass_not_the_moment_a_run_trained():
    """A run that trained while the machine was busy logs slow seconds; the table's seconds to the
    target are its epochs to it times the timing pass's seconds per epoch, and the run logs' only where
    the pass did not time the value."""
    logged = fake_result("a", [0.99, 0.99])  # each reaches the target in epoch 1, logging 1.0 s
    result = logged._replace(config=settings.parse_config([]))  # a whole config: it has a run key
    timed = {"values": {"a": {"key": result.key, "median": 0.3, "low": 0.2, "high": 0.4}}, "rounds": 40}
    row = tables.table_row(result, 0.97, timed, "best", "x", fastest=0.3)
    assert row["seconds_to_97%"] == "0.3 ± 0.0" and row["seconds_per_epoch"] == "0.30"
    assert tables.table_row(result, 0.97, {}, "best", "x")["seconds_to_97%"] == "1.0 ± 0.0"
