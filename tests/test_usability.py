"""Tried as a new user would (issue 12): `python test.py` with no argument, the sweeps' --help,
Ctrl-C while a script is still starting, and two sweeps sharing a run on one results folder."""
import ast
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import runs
from conftest import ROOT, TINY, TINY_SWEEP, make_dataset, run_script

pytestmark = pytest.mark.slow  # every test here starts the scripts as a user would


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """An out folder with a completed run, a newer completed one, and a newer still interrupted one."""
    root = tmp_path_factory.mktemp("two_runs")
    data = make_dataset(root / "data")
    for name, extra in (("older", []), ("newer", ["--hidden", "16"]), ("stopped", [])):
        result = run_script("train.py", *TINY, "--data-dir", data, "--out", root, "--name", name, *extra)
        assert result.returncode == 0, result.stderr
        time.sleep(0.05)  # distinct modification times
    summary = root / "runs" / "stopped" / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "status": "interrupted"}))
    return root, data


def test_test_py_without_argument_tests_the_newest_completed_run(two_runs):
    out, data = two_runs
    result = run_script("test.py", "--out", out, "--data-dir", data)
    assert result.returncode == 0, result.stderr
    assert "testing the newest completed run" in result.stdout and "python test.py RUN_FOLDER" in result.stdout
    assert f"run: {out / 'runs' / 'newer'} " in result.stdout  # not the interrupted one, nor the older
    assert "accuracy" in result.stdout


def test_test_py_without_any_run_says_how_to_train_one(tmp_path):
    result = run_script("test.py", "--out", tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"no completed run under {tmp_path / 'runs'} yet; train one with: python train.py --out {tmp_path}" \
        in result.stderr


def test_softmax_regression_is_named_so(tiny_data, tmp_path):
    trained = run_script("train.py", *TINY, "--data-dir", tiny_data, "--out", tmp_path, "--hidden", "",
                         "--name", "linear")
    assert trained.returncode == 0, trained.stderr
    result = run_script("test.py", tmp_path / "runs" / "linear", "--data-dir", tiny_data)
    assert result.returncode == 0, result.stderr
    assert "softmax regression (no hidden layer)" in result.stdout and "hidden []" not in result.stdout


@pytest.mark.parametrize("script", ["batch_size.py", "activate_function.py", "loss_function.py",
                                    "optimizer.py", "sweep.py"])
def test_sweep_help_lists_only_what_a_sweep_accepts(script):
    text = run_script(script, "--help").stdout
    for flag in ("--name", "--resume", "--quiet", "--once"):
        assert flag not in text, flag
    assert "--seeds" in text and "--tune-lr" in text and "--epochs" in text
    if script != "sweep.py":  # the description is the script's whole first paragraph, not a cut line
        doc = " ".join(ast.get_docstring(ast.parse((ROOT / script).read_text())).split("\n\n")[0].split())
        assert doc in " ".join(text.split())
    refused = run_script(script, "--name", "x")
    assert refused.returncode == 2 and "unrecognized arguments: --name" in refused.stderr


def test_a_single_run_does_take_the_flags_a_sweep_refuses():
    text = run_script("train.py", "--help").stdout
    assert all(flag in text for flag in ("--name", "--resume", "--quiet", "--once"))


def test_an_error_an_interrupt_caused_while_importing_is_one_line_too():
    """A signal inside a C extension's initialisation (seen in matplotlib's ft2font) surfaces as an
    ImportError caused by the KeyboardInterrupt: still one line and exit code 130."""
    code = ("import errors\nerrors.handle_interrupts()\ntry:\n    raise KeyboardInterrupt\n"
            "except KeyboardInterrupt as e:\n    raise ImportError('initialization failed') from e\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 130 and "interrupted" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("script", ["train.py", "test.py", "dataloader.py", "batch_size.py", "sweep.py"])
def test_interrupt_while_starting_is_one_line(script, signum, tmp_path):
    """A signal while torch is still importing: one line, exit code 130, no traceback."""
    proc = subprocess.Popen([sys.executable, ROOT / script], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.3)  # python is up; importing torch takes seconds
    assert proc.poll() is None, "the script ended before the signal"
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.strip() == "interrupted", stderr


CLAIMER = """
import sys, time
sys.path.insert(0, {root!r})
import claims
with claims.claim({out!r}, "k3y"):
    print("claimed", flush=True)
    time.sleep({hold})
"""


def test_a_claim_ends_with_its_process(tmp_path):
    """While a process holds a run's claim another waits; once it is killed, the claim is free."""
    def claimer(hold):
        return subprocess.Popen([sys.executable, "-c", CLAIMER.format(root=str(ROOT), out=str(tmp_path), hold=hold)],
                                stdout=subprocess.PIPE, text=True)
    holder = claimer(hold=60)
    assert holder.stdout.readline().strip() == "claimed"
    waiter = claimer(hold=0)
    waiting = waiter.stdout.readline()  # blocks until the second process has found the claim taken
    assert waiting.startswith("waiting: process ") and "is training a run with these settings" in waiting
    assert waiter.poll() is None, "the second claim did not wait"
    holder.kill()  # SIGKILL: no clean-up code runs
    holder.wait()
    stdout, _ = waiter.communicate(timeout=30)
    assert stdout.strip() == "claimed", "the claim of a killed process was not released"


def test_two_sweeps_at_once_train_a_shared_run_once(tmp_path):
    """Two sweeps started together on one --out share the base learning rate 0.05: it is trained once,
    and both sweeps table it."""
    data = make_dataset(tmp_path / "data", n_train=1200)
    common = ["--optimizer", "sgd", "--seeds", "1", *TINY_SWEEP, "--data-dir", data, "--out", tmp_path / "out"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    sweeps = [subprocess.Popen([sys.executable, ROOT / "sweep.py", "lr", "0.05", other, *common,
                                "--sweep-name", f"with_{other}"], cwd=ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE) for other in ("0.1", "0.2")]
    outputs = [proc.communicate(timeout=300) for proc in sweeps]
    for proc, (stdout, stderr) in zip(sweeps, outputs):
        assert proc.returncode == 0, stderr + stdout
    lrs = sorted(runs.read_config(d)["lr"] for d in runs.find_runs(tmp_path / "out"))
    assert lrs == [0.05, 0.1, 0.2], "the shared run was trained twice (or a run is missing)"
    for other in ("0.1", "0.2"):
        table = (tmp_path / "out" / f"with_{other}" / f"with_{other}.md").read_text()
        assert "| 0.05 | 1/1 |" in table and f"| {other} | 1/1 |" in table
