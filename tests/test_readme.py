"""The README stays true: its set-up commands match CI, its tables match the registry and the results."""
import pytest

from conftest import ROOT
from registry import ACTIVATIONS, LOSSES, OPTIMIZERS

README = (ROOT / "README.md").read_text()


def setup_commands():
    """The command lines of the README's first code block."""
    block = README.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_opens_with_the_main_job_and_the_tests():
    main_job, tests = setup_commands()
    assert main_job.endswith("pip install -r requirements.txt && python train.py")
    assert tests.endswith("pip install -r requirements.txt && python -m pytest -q")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    steps = setup_commands()[1].split(" && ")
    for step in steps:
        assert step in ci, step


@pytest.mark.parametrize("table", [ACTIVATIONS, LOSSES, OPTIMIZERS])
def test_readme_tables_list_every_registry_entry(table):
    for name, entry in table.items():
        assert f"| `{name}` |" in README and entry.description in README, name


def table_rows(text):
    """The cells of each row of the first Markdown table in text, header and rule excluded."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


SWEEP = ("lr", "final_test_acc_%", "vs_best", "epochs_to_97%", "seconds_per_epoch", "time_vs_fastest")
# The committed tables the README repeats, and the columns it repeats of each.
TABLES = {"batch_size": SWEEP, "batch_size_fixed_lr": SWEEP, "activation": SWEEP, "loss": SWEEP, "optimizer": SWEEP,
          "best_mnist": ("final_test_acc_%", "vs_best", "total_train_seconds"),
          "best_mnist_augmented": ("final_test_acc_%", "vs_best", "total_train_seconds"),
          "best_fashion": ("final_test_acc_%", "vs_best", "total_train_seconds"),
          "best_speed": ("final_test_acc_%", "vs_best", "seconds_to_98%", "total_train_seconds")}


@pytest.mark.parametrize("sweep", list(TABLES))
def test_readme_sweep_tables_are_the_committed_results(sweep):
    """Each README results row repeats the committed table's figures, column for column."""
    table = (ROOT / "results" / sweep / f"{sweep}.md").read_text()
    columns = [cell.strip() for cell in table.splitlines()[0].strip("|").split("|")]
    committed = {row[0]: [row[columns.index(c)] for c in TABLES[sweep]] for row in table_rows(table)}
    shown = table_rows(README[README.index(f"(results/{sweep}/{sweep}.md)"):])
    assert {row[0]: row[1:] for row in shown} == committed


def test_readme_grid_table_is_the_committed_grids():
    """The README's activation x loss table repeats both committed grids, cell by cell."""
    shown = table_rows(README[README.index("| hidden | activation |"):])
    for hidden, name in (("256,128", "act_loss_h256x128"), ("128", "act_loss_h128")):
        grid = table_rows((ROOT / "results" / name / f"{name}_grid.md").read_text())
        mine = [row[1:] for row in shown if row[0] == hidden]
        assert len(mine) == len(grid)
        for readme_row, grid_row in zip(mine, grid):
            assert readme_row[0] == grid_row[0]
            for readme_cell, grid_cell in zip(readme_row[1:], grid_row[1:]):
                assert readme_cell == grid_cell or ("diverged" in readme_cell and "diverged" in grid_cell)
