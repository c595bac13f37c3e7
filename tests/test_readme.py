"""The README and the report stay true: the README's set-up commands match CI and its tables the registry,
the report's tables match the committed results, the README stays a manual read in one sitting, and
every relative link of either resolves."""
import csv
import re
import unicodedata

import pytest

from conftest import ROOT
from registry import ACTIVATIONS, LOSSES, OPTIMIZERS

README = (ROOT / "README.md").read_text()
REPORT = (ROOT / "REPORT.md").read_text()
README_MAX_LINES = 420  # the manual a newcomer reads in one sitting; results go to REPORT.md


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
# The committed tables the report repeats, and the columns it repeats of each.
TABLES = {"batch_size": SWEEP, "batch_size_fixed_lr": SWEEP, "activation": SWEEP, "loss": SWEEP, "optimizer": SWEEP,
          "best_mnist": ("final_test_acc_%", "vs_best", "seconds_per_epoch"),
          "best_mnist_augmented": ("final_test_acc_%", "vs_best", "seconds_per_epoch"),
          "best_fashion": ("final_test_acc_%", "vs_best", "seconds_per_epoch"),
          "best_speed": ("final_test_acc_%", "vs_best", "seconds_to_98%", "total_train_seconds"),
          "train_size": ("steps_b16", "steps_b64", "steps_b128", "steps_b512", "steps_b2048", "B_crit",
                         "B_simple_at_target", "best_batch", "best_val_acc_%", "best_over_N")}


@pytest.mark.parametrize("sweep", list(TABLES))
def test_report_sweep_tables_are_the_committed_results(sweep):
    """Each report results row repeats the committed table's figures, column for column."""
    table = (ROOT / "results" / sweep / f"{sweep}.md").read_text()
    columns = [cell.strip() for cell in table.splitlines()[0].strip("|").split("|")]
    committed = {row[0]: [row[columns.index(c)] for c in TABLES[sweep]] for row in table_rows(table)}
    shown = table_rows(REPORT[REPORT.index(f"(results/{sweep}/{sweep}.md)"):])
    assert {row[0]: row[1:] for row in shown} == committed


def test_report_quality_table_is_the_committed_study():
    """The report's batch-quality table (a row per batch size, a column per budget) repeats the committed
    table's cells: test accuracy with its mark per budget; steps, sharpness, training accuracy converged."""
    committed = {(r["budget"], r["batch_size"]): r
                 for r in csv.DictReader(open(ROOT / "results" / "batch_quality" / "batch_quality.csv"))}
    shown = table_rows(REPORT[REPORT.index("(results/batch_quality/batch_quality.md)"):])
    assert [row[0] for row in shown] == list(dict.fromkeys(size for _, size in committed))
    for size, *cells in shown:
        test = [f"{committed[(b, size)]['test_acc_at_best_val_%']}, {committed[(b, size)]['vs_best']}"
                for b in ("epochs", "updates", "converged")]
        plateau = committed[("converged", size)]
        assert cells == [*test, plateau["steps"], plateau["end_sharpness"], plateau["final_train_acc_%"]], size


def test_report_grid_table_is_the_committed_grids():
    """The report's activation x loss table repeats both committed grids, cell by cell."""
    shown = table_rows(REPORT[REPORT.index("| hidden | activation |"):])
    for hidden, name in (("256,128", "act_loss_h256x128"), ("128", "act_loss_h128")):
        grid = table_rows((ROOT / "results" / name / f"{name}_grid.md").read_text())
        mine = [row[1:] for row in shown if row[0] == hidden]
        assert len(mine) == len(grid)
        for readme_row, grid_row in zip(mine, grid):
            assert readme_row[0] == grid_row[0]
            for readme_cell, grid_cell in zip(readme_row[1:], grid_row[1:]):
                assert readme_cell == grid_cell or ("diverged" in readme_cell and "diverged" in grid_cell)


def test_readme_is_a_manual_read_in_one_sitting():
    assert len(README.splitlines()) <= README_MAX_LINES


def without_code_blocks(text):
    """text with its fenced code blocks removed: a '#' there is a shell comment, a '](' no link."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def slug(heading):
    """The anchor GitHub gives a heading: link syntax and code marks dropped, lower case, every character
    but letters, digits, '-', '_' and spaces removed, spaces turned into '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    kept = "".join(c for c in text if c in "-_ " or unicodedata.category(c)[0] == "L" or unicodedata.category(c) == "Nd")
    return kept.replace(" ", "-")


def anchors(text):
    """The anchors of a Markdown file's headings, a repeated one numbered as GitHub numbers it."""
    seen = {}
    for heading in re.findall(r"^#+ (.+)$", without_code_blocks(text), flags=re.M):
        base = slug(heading)
        seen[base] = seen.get(base, -1) + 1
        yield base if seen[base] == 0 else f"{base}-{seen[base]}"


def relative_links(text):
    """The targets of a Markdown file's links outside code blocks, other than web and mail addresses."""
    targets = re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", without_code_blocks(text))
    return [t for t in targets if not re.match(r"[a-z]+:", t)]


def test_slug_is_githubs():
    assert slug("The course-lab grid: activation × loss, one and two hidden layers") == \
        "the-course-lab-grid-activation--loss-one-and-two-hidden-layers"
    assert slug("The data: `python dataloader.py`") == "the-data-python-dataloaderpy"
    assert list(anchors("# A\n```\n# not a heading\n```\n## A\n")) == ["a", "a-1"]


@pytest.mark.parametrize("name", ["README.md", "REPORT.md"])
def test_every_relative_link_resolves(name):
    """Each relative link of the README and the report names a file that exists and, into a Markdown
    file, an anchor one of its headings makes."""
    text = (ROOT / name).read_text()
    links = relative_links(text)
    assert links
    broken = []
    for link in links:
        path, _, anchor = link.partition("#")
        target = ROOT / (path or name)
        if not target.is_file():
            broken.append(link)
        elif anchor and (target.suffix != ".md" or anchor not in set(anchors(target.read_text()))):
            broken.append(link)
    assert not broken


def test_readme_links_every_report_section():
    sections = [slug(h) for h in re.findall(r"^## (.+)$", without_code_blocks(REPORT), flags=re.M)]
    assert sections
    missing = [s for s in sections if f"(REPORT.md#{s})" not in README]
    assert not missing
