"""The codebase stays readable in one sitting: no function over 50 lines (issue 9)."""
import ast

import pytest

from conftest import ROOT

SOURCES = sorted([*ROOT.glob("*.py"), *ROOT.glob("benchmarks/*.py")])
LIMIT = 50


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_function_is_longer_than_50_lines(path):
    tree = ast.parse(path.read_text())
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > LIMIT]
    assert not long, f"{path.name}: split {', '.join(long)} into named steps"
