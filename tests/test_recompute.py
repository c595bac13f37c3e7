"""Every committed sweep table is recomputable from its per-run CSV (<sweep>_runs.csv): the mean ± std
of the final test accuracy and the paired, Holm-adjusted vs_best marks, from git alone."""
import csv
import statistics
from pathlib import Path

import pytest

import outcomes
import stats
import tables
from conftest import ROOT

# Studies whose per-run CSV has its own shape, recomputed by their own tests below.
OWN_SHAPE = ("batch_scaling", "batch_quality")
COMMITTED = sorted(p for p in (ROOT / "results").glob("*/*_runs.csv") if not p.parent.name.startswith(OWN_SHAPE))
SCALING = sorted((ROOT / "results").glob("batch_scaling*/*_runs.csv"))
# The sweeps whose per-run and per-epoch CSVs are committed: losing one fails, not skips, its recomputation.
RECOMPUTABLE = ("batch_size", "batch_size_fixed_lr", "activation", "loss", "optimizer", "sparsity", "mse_gradient",
                "depth", "depth_batchnorm", "label_noise", "act_loss_h256x128", "act_loss_h128", "batch256_lr02",
                "sgd_lr", "best_speed", "best_mnist", "best_mnist_augmented", "best_fashion")


def read_md(path):
    """A markdown table's rows as dicts (its caption left out)."""
    lines = [line for line in Path(path).read_text().splitlines() if line.startswith("| ")]
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[1:]]


def comparison_accs(runs_csv, key="final_test_acc"):
    """{value: {seed: key}} of a per-run CSV's comparison runs, every value, its completed seeds only."""
    with open(runs_csv) as f:
        rows = [r for r in csv.DictReader(f) if r["role"] == "comparison"]
    column = next(iter(rows[0]))
    accs = {}
    for row in rows:
        seeds = accs.setdefault(row[column], {})
        if row["status"] == "completed":
            seeds[int(row["seed"])] = float(row[key])
    return accs


def recompute(runs_csv):
    """{value: (final test accuracy '%' mean ± std, vs_best mark)} from a per-run CSV's comparison runs."""
    accs = comparison_accs(runs_csv)
    marks, _ = outcomes.compare_accs(accs)
    return {label: (tables.mean_std(list(a.values()), 100), marks.get(label, "")) for label, a in accs.items()}


def check_against_table(runs_csv):
    table = read_md(str(runs_csv).replace("_runs.csv", ".md"))
    column = next(iter(table[0]))
    again = recompute(runs_csv)
    assert set(again) == {row[column] for row in table}
    for row in table:
        assert again[row[column]] == (row["final_test_acc_%"], row["vs_best"]), row[column]


@pytest.mark.parametrize("sweep", RECOMPUTABLE)
def test_the_sweeps_csvs_are_committed(sweep):
    for kind in ("runs", "epochs"):
        assert (ROOT / "results" / sweep / f"{sweep}_{kind}.csv").exists(), f"{sweep}_{kind}.csv"


@pytest.mark.parametrize("runs_csv", COMMITTED, ids=[p.parent.name for p in COMMITTED])
def test_a_committed_table_is_recomputed_from_its_runs(runs_csv):
    check_against_table(runs_csv)


def test_the_recomputation_sees_a_changed_seed(tmp_path):
    """The check can fail: one comparison run's accuracy changed in a copy of a committed CSV moves the
    recomputed mean away from the table's."""
    if not COMMITTED:
        pytest.skip("no committed per-run CSV")
    source = COMMITTED[0]
    copy = tmp_path / source.parent.name / source.name
    copy.parent.mkdir()
    (copy.parent / source.name.replace("_runs.csv", ".md")).write_text(
        Path(str(source).replace("_runs.csv", ".md")).read_text())
    lines = source.read_text().splitlines()
    header = lines[0].split(",")
    at = header.index("final_test_acc")
    for i, line in enumerate(lines[1:], 1):
        cells = line.split(",")
        if cells[header.index("role")] == "comparison" and cells[header.index("status")] == "completed":
            cells[at] = str(float(cells[at]) - 0.05)
            lines[i] = ",".join(cells)
            break
    copy.write_text("\n".join(lines) + "\n")
    with pytest.raises(AssertionError):
        check_against_table(copy)


@pytest.mark.parametrize("sweep", RECOMPUTABLE)
def test_the_per_epoch_csv_ends_where_the_per_run_csv_does(sweep):
    """Each comparison run's last row in <sweep>_epochs.csv holds its final test accuracy and training
    loss as <sweep>_runs.csv has them: the two files describe the same runs."""
    folder = ROOT / "results" / sweep
    with open(folder / f"{sweep}_runs.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["role"] == "comparison" and r["status"] == "completed"]
    with open(folder / f"{sweep}_epochs.csv") as f:
        epochs = list(csv.DictReader(f))
    column = next(iter(rows[0]))
    last = {(r[column], r["seed"]): r for r in epochs}  # a run's rows in epoch order: its last one wins
    assert len(last) == len(rows)
    for row in rows:
        end = last[(row[column], row["seed"])]
        assert float(end["test_acc"]) == pytest.approx(float(row["final_test_acc"]), abs=1e-12)
        assert float(end["train_loss"]) == pytest.approx(float(row["final_train_loss"]), abs=1e-12)
        assert end["lr"] == row["lr"]  # the chosen rate, not the schedule's (epoch_lr)


def paired_said(a, b):
    """What REPORT says of a paired test of two lists of accuracies, seed by seed: the mean ± std of b's
    per-seed differences from a, in points, and the paired p."""
    diffs = [100 * (y - x) for x, y in zip(a, b)]
    return (f"end {statistics.mean(diffs):.2f} ± {statistics.stdev(diffs):.2f} points apart",
            f"paired over the {len(a)} seeds, p {stats.paired_p(a, b):.2g}")


def planned_test(sweep, first, second):
    """What REPORT says of a planned paired test no table holds, recomputed from the sweep's per-run CSV:
    second's final test accuracies against first's (paired_said)."""
    accs = comparison_accs(ROOT / "results" / sweep / f"{sweep}_runs.csv")
    seeds = sorted(accs[first])
    return paired_said([accs[first][s] for s in seeds], [accs[second][s] for s in seeds])


def test_the_reports_bce_against_bce_logits_test_is_the_committed_runs():
    """REPORT's one planned test of `bce` against `bce_logits` (no table holds it) recomputes from
    loss_runs.csv: the mean ± std of the per-seed differences and the paired p."""
    from test_readme import REPORT
    said = planned_test("loss", "bce", "bce_logits")
    text = " ".join(REPORT.split())
    assert all(s in text for s in said), said


def test_the_reports_sigmoid_against_tanh_test_is_the_committed_runs():
    """REPORT's planned test of sigmoid against tanh (no table holds it) recomputes from
    activation_runs.csv, and their training error in epoch 1 from activation_epochs.csv."""
    from test_readme import REPORT
    with open(ROOT / "results" / "activation" / "activation_epochs.csv") as f:
        first = [r for r in csv.DictReader(f) if r["epoch"] == "1"]
    error = {act: tables.mean_std([1 - float(r["train_acc"]) for r in first if r["activation"] == act], 100, 1)
             for act in ("sigmoid", "tanh", "relu")}
    said = (*planned_test("activation", "sigmoid", "tanh"),
            f"{error['sigmoid']}% against {error['tanh']}% (ReLU {error['relu']}%;")
    text = " ".join(REPORT.split())
    assert all(s in text for s in said), said


def test_the_reports_account_of_the_augmented_recipes_epochs_is_the_committed_runs():
    """How validation chose 60 epochs over 30 for recipes/mnist_augmented.args (the held-out runs'
    validation accuracies and their paired test) and the planned test of VAT at 30 epochs, which no table
    holds, recompute from best_mnist_augmented_runs.csv."""
    from test_readme import REPORT
    with open(ROOT / "results" / "best_mnist_augmented" / "best_mnist_augmented_runs.csv") as f:
        rows = sorted((r for r in csv.DictReader(f) if r["role"] == "comparison" and r["status"] == "completed"),
                      key=lambda r: int(r["seed"]))
    thirty, sixty = ([float(r["final_val_acc"]) for r in rows if r["variant"] == f"{n} epochs, 5000 held out"]
                     for n in (30, 60))
    said = (f"30 epochs ended at {tables.mean_std(thirty, 100)}% validation accuracy",
            f"60 epochs at {tables.mean_std(sixty, 100)}%", *paired_said(thirty, sixty),
            *planned_test("best_mnist_augmented", "30 epochs, 5000 held out, no VAT", "30 epochs, 5000 held out"))
    text = " ".join(REPORT.split())
    assert len(thirty) == len(sixty) == 3 and all(s in text for s in said), said


def recompute_scaling(runs_csv):
    """{batch size: (steps to target, best validation accuracy)} as the batch-scaling table writes them,
    from the chosen rate's runs in a study's per-run CSV."""
    with open(runs_csv) as f:
        chosen = [r for r in csv.DictReader(f) if r["chosen"] == "True"]
    out = {}
    for size in dict.fromkeys(r["batch_size"] for r in chosen):
        mine = [r for r in chosen if r["batch_size"] == size]
        steps = [int(r["steps"]) for r in mine if r["reached"] == "True"]
        best = [100 * float(r["best_val_acc"]) for r in mine]
        out[size] = (tables.mean_std(steps, 1, 0), tables.mean_std(best, 1, 2))
    return out


@pytest.mark.parametrize("runs_csv", SCALING, ids=[p.parent.name for p in SCALING])
def test_a_batch_scaling_table_is_recomputed_from_its_runs(runs_csv):
    table = read_md(str(runs_csv).replace("_runs.csv", ".md"))
    again = recompute_scaling(runs_csv)
    assert set(again) == {row["batch_size"] for row in table}
    for row in table:
        assert again[row["batch_size"]] == (row["steps_to_target"], row["best_val_acc_%"]), row["batch_size"]


QUALITY = sorted((ROOT / "results").glob("batch_quality/batch_quality_runs.csv"))


def recompute_quality(runs_csv):
    """{'budget / batch size': (test accuracy at best validation '%' mean ± std, vs_best mark)} from the
    quality study's comparison runs, each budget's batch sizes tested against its best as the study does."""
    accs = comparison_accs(runs_csv, "test_acc_at_best_val")
    marks = {}
    for budget in dict.fromkeys(label.split(" / ")[0] for label in accs):
        found, _ = outcomes.compare_accs({k: v for k, v in accs.items() if k.split(" / ")[0] == budget})
        marks.update(found)
    return {label: (tables.mean_std(list(a.values()), 100), marks.get(label, "")) for label, a in accs.items()}


@pytest.mark.parametrize("runs_csv", QUALITY, ids=[p.parent.name for p in QUALITY])
def test_the_quality_table_is_recomputed_from_its_runs(runs_csv):
    check_quality(runs_csv)


def check_quality(runs_csv):
    """The quality study's table (beside runs_csv) says what its per-run CSV recomputes to."""
    table = read_md(str(runs_csv).replace("_runs.csv", ".md"))
    again = recompute_quality(runs_csv)
    assert set(again) == {f"{row['budget']} / {row['batch_size']}" for row in table}
    for row in table:
        label = f"{row['budget']} / {row['batch_size']}"
        assert again[label] == (row["test_acc_at_best_val_%"], row["vs_best"]), label


def test_the_train_size_tables_noise_scales_are_the_committed_noise_runs():
    """train_size.md's B_simple at the target (the noise-scale run's first epoch at it) and its range over
    the run recompute from each N's batch_scaling_n<N>_noise.csv."""
    table = read_md(ROOT / "results" / "train_size" / "train_size.md")
    assert table
    for row in table:
        with open(ROOT / "results" / f"batch_scaling_n{row['train_size']}" /
                  f"batch_scaling_n{row['train_size']}_noise.csv") as f:
            epochs = list(csv.DictReader(f))
        scales = [float(e["noise_scale"]) for e in epochs]
        at = next(e for e in epochs if 100 * float(e["val_acc"]) >= float(row["target_%"]))
        assert row["B_simple_at_target"] == f"{float(at['noise_scale']):.0f} (epoch {at['epoch']})"
        assert row["B_simple_range"] == f"{min(scales):.0f}-{max(scales):.0f}"


@pytest.mark.parametrize("path", ["batch_quality/batch_quality_runs.csv",
                                  *[f"batch_scaling_n{n}/batch_scaling_n{n}_{kind}.csv"
                                    for n in (6875, 13750, 27500, 55000) for kind in ("runs", "noise")],
                                  "batch_scaling/batch_scaling_runs.csv", "batch_scaling/batch_scaling_noise.csv"])
def test_the_studies_csvs_are_committed(path):
    """The studies' per-run CSVs that the tests above recompute from: losing one fails, not skips."""
    assert (ROOT / "results" / path).exists(), path


def test_the_reports_noise_scale_is_the_committed_noise_run():
    """REPORT's B_simple at the first epoch at 97% validation accuracy, and after epoch 1, recompute from
    batch_scaling_noise.csv (they were once read off the figure)."""
    from test_readme import REPORT
    with open(ROOT / "results" / "batch_scaling" / "batch_scaling_noise.csv") as f:
        epochs = list(csv.DictReader(f))
    at = next(e for e in epochs if float(e["val_acc"]) >= 0.97)
    said = (f"B_simple ≈ {float(at['noise_scale']):,.0f} when the run first reaches 97% validation accuracy** (epoch "
            f"{at['epoch']}), {float(epochs[0]['noise_scale']):,.0f} after epoch 1")
    assert said in " ".join(REPORT.split()), said
