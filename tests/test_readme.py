"""The README stays true: its set-up commands match CI, and its tables match the registry."""
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
        assert f"| `{name}` |" in README and entry[-1] in README, name
