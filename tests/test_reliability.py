"""Reliability (issues 5 and 22): interrupts and resume, atomic writes, truncated logs, divergence, bad
data, bad flags, bad run folders and unsafe checkpoints; two writers of one run, and a full disk.

Every case drives a real script as a subprocess, as a user would, and checks the exit code, the
message and that no traceback is printed. The rejected starts are run two at a time in one fixture:
each is mostly torch's import time, and the file has to stay fast on a shared two-core machine.
"""
import errno
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import claims
import errors
import files
import runs
import settings
from conftest import ROOT, TINY, TINY_SWEEP, idx_file, make_dataset, make_digits, run_script, without_timing
from errors import UserError

# A run long enough to be interrupted after its first epoch; dropout and momentum make the result
# depend on the restored random state and optimizer state, not only on the weights. One thread: the
# machine is shared, and the reference and the resumed run must sum in the same order.
LONG_EPOCHS = 15
LONG = ["--no-verify", "--val-split", "200", "--hidden", "32", "--epochs", str(LONG_EPOCHS),
        "--batch-size", "50", "--dropout", "0.2", "--optimizer", "momentum", "--seed", "3",
        "--threads", "1", "--quiet", "--device", "cpu"]


def snapshot(folder):
    """{relative path: bytes} of every file under folder, to prove that nothing was overwritten."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*"))
            if p.is_file()}


def copy_run(run_dir, dest, status=None):
    """Copy a run folder; optionally set its summary status (e.g. back to interrupted)."""
    shutil.copytree(run_dir, dest)
    if status:
        summary = json.loads((dest / "summary.json").read_text())
        (dest / "summary.json").write_text(json.dumps({**summary, "status": status}))
    return dest


class Payload:
    """Unpickling this object opens (creates) the marker file: what a hostile checkpoint could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


# ---------------------------------------------------------------------------- shared runs

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two finished tiny runs of different architectures (hidden 32 and hidden 16), trained at once."""
    base = tmp_path_factory.mktemp("trained")
    data = make_dataset(base / "data")
    jobs = [("train.py", *TINY, "--data-dir", data, "--out", base, "--name", name, "--hidden", hidden)
            for name, hidden in (("h32", "32"), ("h16", "16"))]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda job: run_script(*job), jobs))
    for result in results:
        assert result.returncode == 0, result.stderr
    return {"base": base, "data": data, "run": base / "runs" / "h32", "other": base / "runs" / "h16"}


# ---------------------------------------------------------------------------- rejected starts

CASES = {}


def case(func):
    """Register a rejected-start case: func(folder, trained) returns its command and expectations."""
    CASES[func.__name__] = func
    return func


def data_case(folder, script, change, expect, **make):
    """A synthetic data set in folder, damaged by change(data_dir); the script reads it."""
    data = make_dataset(folder / "data", **make)
    change(data)
    flags = [*TINY, "--out", folder / "out"] if script == "train.py" else ["--no-verify"]
    return {"args": [script, "--data-dir", data, *flags], "expect": expect}


def _cut(path, keep):
    path.write_bytes(path.read_bytes()[:keep])


def _write_csv(data, rows):
    for p in data.iterdir():
        p.unlink()
    images, labels = make_digits(20, 5)
    lines = [",".join(map(str, [int(y), *x.flatten().tolist()])) for x, y in zip(images, labels)]
    for number, line in rows.items():  # 1-based line numbers, after a header line
        lines[number - 2] = line(lines[number - 2])
    for split in ("train", "test"):
        (data / f"mnist_{split}.csv").write_text("label," + ",".join(f"p{i}" for i in range(784))
                                                  + "\n" + "\n".join(lines) + "\n")


@case
def missing_file(folder, trained):
    return data_case(folder, "dataloader.py",
                     lambda d: (d / "train-labels-idx1-ubyte.gz").unlink(),
                     ["train-labels-idx1-ubyte[.gz]: missing", "copy it back"])


@case
def truncated_idx(folder, trained):
    return data_case(folder, "dataloader.py",
                     lambda d: _cut(d / "train-images-idx3-ubyte", 5000),
                     ["train-images-idx3-ubyte: wrong size, 5000 bytes", "get a fresh copy"],
                     compress=False)


@case
def truncated_gzip(folder, trained):
    return data_case(folder, "train.py",
                     lambda d: _cut(d / "train-images-idx3-ubyte.gz", 300),
                     ["train-images-idx3-ubyte.gz: damaged gzip file", "get a fresh copy"])


@case
def corrupted_gzip(folder, trained):
    def corrupt(data):
        path = data / "train-images-idx3-ubyte.gz"
        raw = bytearray(path.read_bytes())
        raw[100:400] = bytes(b ^ 0x55 for b in raw[100:400])
        path.write_bytes(bytes(raw))
    return data_case(folder, "dataloader.py", corrupt,
                     ["train-images-idx3-ubyte.gz: damaged gzip file", "get a fresh copy"])


@case
def not_gzip(folder, trained):
    return data_case(folder, "dataloader.py",
                     lambda d: (d / "t10k-labels-idx1-ubyte.gz").write_bytes(b"<html>404</html>"),
                     ["t10k-labels-idx1-ubyte.gz: named .gz but is not gzip data", "fresh copy"])


@case
def wrong_magic(folder, trained):
    def remagic(data):
        path = data / "train-labels-idx1-ubyte.gz"
        raw = gzip.decompress(path.read_bytes())
        path.write_bytes(gzip.compress(b"\x00\x00\x09\x01" + raw[4:]))
    return data_case(folder, "dataloader.py", remagic,
                     ["train-labels-idx1-ubyte.gz: wrong magic number 0x00000901",
                      "not an MNIST-format IDX file"])


@case
def checksum_mismatch(folder, trained):
    data = make_dataset(folder / "data")
    return {"args": ["dataloader.py", "--data-dir", data],
            "expect": ["train-images-idx3-ubyte: checksum mismatch", "--no-verify"]}


@case
def count_mismatch(folder, trained):
    def fewer_labels(data):
        idx_file(data / "train-labels-idx1-ubyte.gz", make_digits(599, 1)[1])
    return data_case(folder, "dataloader.py", fewer_labels,
                     ["train-images-idx3-ubyte.gz: 600 images but 599 labels"])


@case
def csv_wrong_field_count(folder, trained):
    return data_case(folder, "dataloader.py",
                     lambda d: _write_csv(d, {4: lambda line: line.rsplit(",", 1)[0]}),
                     ["mnist_train.csv, line 4: 784 fields, expected 785"])


@case
def csv_value_out_of_range(folder, trained):
    return data_case(folder, "dataloader.py",
                     lambda d: _write_csv(d, {3: lambda line: line + "0"}),  # last pixel x10
                     ["mnist_train.csv, line 3: a value outside 0-255"])


def flag_case(folder, trained, flags, expect):
    """train.py on good data with bad flags: rejected, and no run folder is started."""
    out = folder / "out"
    return {"args": ["train.py", *TINY, "--data-dir", trained["data"], "--out", out, *flags],
            "expect": expect, "no_runs_in": out}


@case
def cuda_without_gpu(folder, trained):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    return flag_case(folder, trained, ["--device", "cuda"],
                     ["--device cuda: no CUDA device is available", "--device cpu"])


@case
def batch_larger_than_training_set(folder, trained):
    return flag_case(folder, trained, ["--batch-size", "501"],
                     ["--batch-size 501 is larger than the training set (500 images",
                      "use at most 500"])


@case
def out_unwritable(folder, trained):
    blocker = folder / "a-file"
    blocker.write_text("not a folder")
    return {"args": ["train.py", *TINY, "--data-dir", trained["data"], "--out", blocker],
            "expect": [f"--out {blocker}: cannot write there", "choose a writable folder"]}


@case
def evaluate_not_a_run(folder, trained):
    (folder / "empty").mkdir()
    return {"args": ["test.py", folder / "empty"],
            "expect": [f"{folder / 'empty'}: not a run folder (no config.json)"],
            "unchanged": folder / "empty"}


@case
def evaluate_old_format(folder, trained):
    run = copy_run(trained["run"], folder / "run")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "format_version": 0}))
    return {"args": ["test.py", run], "expect": [f"{run}: written in run format 0", f"reads format {runs.FORMAT_VERSION}"],
            "unchanged": run}


def _other_architecture(folder, trained, command, expect):
    """A run folder whose model.pt was copied in from a run with another --hidden."""
    run = copy_run(trained["run"], folder / "run", status="interrupted")
    shutil.copy(trained["other"] / "model.pt", run / "model.pt")
    return {"args": [*command, run], "unchanged": run, "expect": [f"{run / 'model.pt'}: ", expect]}


@case
def resume_other_architecture(folder, trained):
    return _other_architecture(folder, trained, ["train.py", "--resume"],
                               "does not match the run's config.json (another architecture?): "
                               "size mismatch for 0.weight")


@case
def evaluate_other_architecture(folder, trained):
    return _other_architecture(folder, trained, ["test.py"], "the checkpoint belongs to another run")


@case
def sweep_resumes_other_architecture(folder, trained):
    out = folder / "out"
    run = copy_run(trained["run"], out / "runs" / "h32", status="interrupted")
    shutil.copy(trained["other"] / "model.pt", run / "model.pt")
    # Same settings as the run, so the sweep finds it unfinished and resumes it.
    sweep_flags = [f for f in TINY_SWEEP if f not in ("--hidden", "32")]  # the sweep sets it: refused as a flag
    return {"args": ["sweep.py", "hidden", "32", "--seeds", "1", *sweep_flags, "--data-dir", trained["data"],
                     "--out", out],
            "code": 1, "unchanged": run, "stream": "stdout",
            "expect": ["failed (exit 2)", "model.pt: does not match the run's config.json"]}


@case
def resume_finished_run(folder, trained):
    run = copy_run(trained["run"], folder / "run")
    return {"args": ["train.py", "--resume", run], "unchanged": run,
            "expect": [f"{run}: already completed; nothing to resume"]}


@case
def evaluate_pickled_payload(folder, trained):
    run = copy_run(trained["run"], folder / "run")
    marker = folder / "marker"
    torch.save({"model": Payload(marker), "epoch": 1}, run / "model.pt")
    return {"args": ["test.py", run / "model.pt"], "unchanged": run, "marker": marker,
            "expect": [f"{run / 'model.pt'}: not a checkpoint this code can load: it holds Python "
                       f"objects", "could run code"]}


@pytest.mark.parametrize("flags, expect", [
    (["--optimizer", "adamm"], ["argument --optimizer: invalid choice: 'adamm'", "'sgd'", "'adamw'"]),
    (["--learning-rate", "3"], ["unrecognized arguments: --learning-rate"]),
    (["--batch-size", "0"], ["argument --batch-size: must be positive"]),
    (["--lr", "-0.1"], ["argument --lr: must be positive"]),
    (["--epochs", "0"], ["argument --epochs: must be positive"]),
    (["--hidden", "256,x"], ["--hidden '256,x': expected positive layer widths", "--hidden 256,128"]),
])
def test_a_bad_flag_is_rejected_by_the_parser_with_a_clear_message(flags, expect, capsys):
    """train.py's parser (settings.parse_config), as its command runs it: exit 2, an `error:` line with the
    expected text, no traceback; it stops before any data is read or folder made."""
    with pytest.raises(SystemExit) as exited:
        errors.run_cli(lambda: settings.parse_config([*TINY, *flags]))
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "error: " in err and "Traceback" not in err, err
    for text in expect:
        assert text in err, err


@pytest.fixture(scope="module")
def rejected(trained, tmp_path_factory):
    """Set up every case, then run them two at a time; {name: (case dict, CompletedProcess)}."""
    prepared = {}
    for name, setup in CASES.items():
        try:
            prepared[name] = setup(tmp_path_factory.mktemp(name), trained)
        except pytest.skip.Exception:
            continue
        if "unchanged" in prepared[name]:
            prepared[name]["before"] = snapshot(prepared[name]["unchanged"])
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = pool.map(lambda c: run_script(*c["args"], timeout=120), prepared.values())
        return dict(zip(prepared, zip(prepared.values(), results)))


@pytest.mark.parametrize("name", CASES)
@pytest.mark.slow
def test_rejected_with_a_clear_message(name, rejected):
    """Exit code 2, an `error:` line with the expected text, no traceback, nothing written."""
    if name not in rejected:
        pytest.skip("not applicable on this machine")
    spec, result = rejected[name]
    assert result.returncode == spec.get("code", 2), result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    message = getattr(result, spec.get("stream", "stderr"))
    assert "error: " in message
    for text in spec["expect"]:
        assert text in message, message
    if "no_runs_in" in spec:
        assert not list((spec["no_runs_in"] / "runs").glob("*")), "work started before the flag check"
    if "unchanged" in spec:
        assert snapshot(spec["unchanged"]) == spec["before"], "the run folder was modified"
    if "marker" in spec:
        assert not spec["marker"].exists(), "a pickled object in a results folder was executed"


def test_payload_would_run_without_weights_only(tmp_path):
    """The hostile checkpoint used above really executes code when loaded unsafely."""
    marker = tmp_path / "marker"
    torch.save({"model": Payload(marker)}, tmp_path / "model.pt")
    torch.load(tmp_path / "model.pt", weights_only=False)
    assert marker.exists()
    with pytest.raises(UserError, match="not a checkpoint this code can load"):
        runs.load_checkpoint(tmp_path / "model.pt")


# ---------------------------------------------------------------------------- interrupt and resume

@pytest.fixture(scope="module")
def long_data(tmp_path_factory):
    """1200 training images: enough steps per epoch to interrupt the run after the first one."""
    return make_dataset(tmp_path_factory.mktemp("long") / "data", n_train=1200, n_test=200)


@pytest.fixture(scope="module")
def uninterrupted(long_data, tmp_path_factory):
    """The LONG run trained in one go: what every interrupted and resumed run must reproduce."""
    out = tmp_path_factory.mktemp("uninterrupted")
    result = run_script("train.py", *LONG, "--data-dir", long_data, "--out", out, "--name", "run")
    assert result.returncode == 0, result.stderr
    return runs.read_run(out / "runs" / "run")


def interrupt_after_an_epoch(long_data, out, signum=signal.SIGINT):
    """Start the LONG run <out>/runs/run and send it signum once it has finished an epoch; returns the
    ended process and its stderr."""
    run_dir = out / "runs" / "run"
    proc = subprocess.Popen([sys.executable, ROOT / "train.py", *LONG, "--data-dir", long_data,
                             "--out", out, "--name", "run"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not files.read_jsonl(run_dir / "metrics.jsonl"):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before an epoch"
        time.sleep(0.01)
    proc.send_signal(signum)
    return proc, proc.communicate(timeout=120)[1]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.slow
def test_interrupt_then_resume_matches_uninterrupted(signum, long_data, uninterrupted, tmp_path):
    """A signal after the first epoch leaves a consistent folder; --resume then ends with exactly
    the metrics and step losses of the uninterrupted run. The SIGTERM case also adds a power cut's
    truncated last line to metrics.jsonl before resuming."""
    run_dir = tmp_path / "runs" / "run"
    proc, stderr = interrupt_after_an_epoch(long_data, tmp_path, signum)

    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert f"continue with: python train.py --resume {run_dir}" in stderr
    run = runs.read_run(run_dir)
    done = len(run.metrics)
    assert run.status == "interrupted"
    assert 1 <= done < LONG_EPOCHS, "the signal did not land mid-run"
    assert run.summary["epochs_completed"] == done == runs.load_checkpoint(run_dir / "model.pt")["epoch"]
    assert [m["epoch"] for m in run.metrics] == list(range(1, done + 1))
    assert run.summary["resume"] == f"python train.py --resume {run_dir}"
    assert without_timing(run.metrics) == without_timing(uninterrupted.metrics[:done])

    if signum == signal.SIGTERM:
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write('{"epoch": %d, "train_loss": 0.12' % (done + 1))
    resumed = run_script("train.py", "--resume", run_dir, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    if signum == signal.SIGTERM:
        assert "metrics.jsonl: last line" in resumed.stderr and "truncated; ignored" in resumed.stderr
    run = runs.read_run(run_dir)
    assert run.status == "completed"
    assert without_timing(run.metrics) == without_timing(uninterrupted.metrics)
    assert run.steps == uninterrupted.steps
    assert {k: v for k, v in run.summary.items() if k != "train_seconds"} == \
        {k: v for k, v in uninterrupted.summary.items() if k != "train_seconds"}


@pytest.mark.slow
def test_sweep_killed_midway_finishes_only_what_is_missing(trained, tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) after the first run of a
    three-run sweep; the same command then reuses what finished and trains only the rest."""
    argv = [ROOT / "sweep.py", "lr", "0.05", "0.1", "0.2", "--optimizer", "sgd", "--seeds", "1",
            *TINY_SWEEP, "--data-dir", trained["data"], "--out", tmp_path]
    proc = subprocess.Popen([sys.executable, *map(str, argv)], cwd=ROOT, text=True,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finished = lambda: [d for d in runs.find_runs(tmp_path) if (d / "summary.json").exists()
                        and files.read_json(d / "summary.json")["status"] == "completed"]
    deadline = time.monotonic() + 120
    while not finished():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "run the same command again to resume" in stderr
    done = finished()
    assert 1 <= len(done) < 3, "the sweep was not stopped midway"
    kept = {d: snapshot(d) for d in done}

    again = run_script("sweep.py", *argv[1:])
    assert again.returncode == 0, again.stderr
    assert f"3 runs: {len(done)} reused, {3 - len(done)} to train" in again.stdout
    assert len(runs.find_runs(tmp_path)) == 3, "an interrupted run was started anew, not resumed"
    assert len(finished()) == 3
    assert {d: snapshot(d) for d in done} == kept, "a finished run was trained again"


# ---------------------------------------------------------------------------- logs and writes

@pytest.mark.slow
def test_truncated_last_line_is_tolerated_with_a_warning(trained, tmp_path):
    """A power cut mid-append: readers skip the partial last line of metrics.jsonl and steps.csv
    with a warning; a damaged line before the last one is an error naming the line."""
    run = copy_run(trained["run"], tmp_path / "run")
    complete = runs.read_run(run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "train_lo')
    with open(run / "steps.csv", "a") as f:
        f.write("30,")
    with pytest.warns(UserWarning, match="truncated; ignored") as caught:
        damaged = runs.read_run(run)
    assert {str(w.message).split(":")[0] for w in caught} == {str(run / "metrics.jsonl"),
                                                             str(run / "steps.csv")}
    assert damaged.metrics == complete.metrics and damaged.steps == complete.steps

    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(["{broken", *lines[1:]]) + "\n")
    with pytest.raises(UserError, match=r"metrics.jsonl, line 1: not valid JSON"):
        runs.read_run(run)


def test_writes_are_atomic(tmp_path, monkeypatch):
    """config, summary and checkpoint writes go through write-then-rename: a crash before the rename
    leaves the previous file whole and no temporary file behind."""
    files.write_json(tmp_path / "summary.json", {"status": "running"})
    runs.save_checkpoint(tmp_path / "model.pt", {"epoch": 1})
    before = snapshot(tmp_path)

    def crash(src, dst):
        raise OSError("power cut")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        files.write_json(tmp_path / "summary.json", {"status": "completed"})
    with pytest.raises(OSError, match="power cut"):
        runs.save_checkpoint(tmp_path / "model.pt", {"epoch": 2, "model": torch.zeros(10_000)})
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_train_writes_config_summary_and_checkpoint_atomically(trained, tmp_path, monkeypatch):
    """train.py writes config.json, summary.json and model.pt through files.write_atomic."""
    import settings
    import train
    written = []
    real = files.write_atomic
    monkeypatch.setattr(files, "write_atomic", lambda path, write: (written.append(Path(path).name),
                                                                   real(path, write)))
    args = settings.build_parser().parse_args([*TINY, "--data-dir", str(trained["data"]),
                                               "--out", str(tmp_path), "--epochs", "1"])
    train.train(settings.make_config(args))  # conftest's keep_signal_handlers gives pytest its Ctrl-C back
    assert {"config.json", "summary.json", "model.pt"} <= set(written)


# ---------------------------------------------------------------------------- divergence

@pytest.mark.slow
def test_divergence_is_recorded_and_the_process_exits_normally(trained, tmp_path):
    """sgd at lr 1e6 overflows: the run stops with status diverged, where it happened, exit 0."""
    result = run_script("train.py", *TINY, "--data-dir", trained["data"], "--out", tmp_path,
                        "--name", "run", "--optimizer", "sgd", "--lr", "1e6")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    run = runs.read_run(tmp_path / "runs" / "run")
    summary = run.summary
    assert summary["status"] == "diverged"
    assert summary["diverged_loss"] in ("nan", "inf", "-inf")
    assert summary["diverged_epoch"] == 1 and 1 <= summary["diverged_step"] <= 10
    assert summary["epochs_completed"] == len(run.metrics) == 0
    again = run_script("train.py", "--resume", tmp_path / "runs" / "run")
    assert again.returncode == 2 and "already diverged; nothing to resume" in again.stderr


# ---------------------------------------------------------------------------- two writers, a full disk

def same_as_uninterrupted(run_dir, uninterrupted):
    """The run in run_dir completed with exactly the uninterrupted run's epochs and step losses."""
    run = runs.read_run(run_dir)
    assert run.status == "completed"
    assert [m["epoch"] for m in run.metrics] == list(range(1, LONG_EPOCHS + 1)), "an epoch is missing or twice"
    assert without_timing(run.metrics) == without_timing(uninterrupted.metrics)
    assert run.steps == uninterrupted.steps


@pytest.fixture(scope="module")
def interrupted(long_data, tmp_path_factory):
    """The LONG run stopped by Ctrl-C after an epoch or more: copy it, then resume the copy."""
    out = tmp_path_factory.mktemp("interrupted")
    proc, stderr = interrupt_after_an_epoch(long_data, out)
    assert proc.returncode == 130, stderr
    return out / "runs" / "run"


@pytest.mark.slow
def test_two_resumes_at_once_write_each_epoch_once(interrupted, uninterrupted, tmp_path):
    """`train.py --resume RUN` in two terminals at once: one resumes the run, the other stops at once
    with one line naming the process that writes it; every epoch is in the log once."""
    run_dir = copy_run(interrupted, tmp_path / "runs" / "run")
    procs = [subprocess.Popen([sys.executable, ROOT / "train.py", "--resume", run_dir], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    results = [(proc, *proc.communicate(timeout=300)) for proc in procs]
    assert sorted(proc.returncode for proc, _, _ in results) == [0, 2], [err for _, _, err in results]
    (winner, _, _), (_, _, refusal) = sorted(results, key=lambda r: r[0].returncode)
    assert "Traceback" not in refusal and len(refusal.strip().splitlines()) == 1, refusal
    # Once the winner holds the folder the loser is refused; had the winner already finished, there is
    # nothing left to resume.
    held = (f"error: {run_dir.resolve()}: process {winner.pid} on " in refusal and " since " in refusal
            and "is writing this run; wait for it to end, or stop it first" in refusal)
    assert held or "already completed; nothing to resume" in refusal, refusal
    same_as_uninterrupted(run_dir, uninterrupted)


HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
import claims
with claims.hold({run!r}):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.mark.slow
def test_once_waits_for_the_process_writing_its_run_then_finishes_it(interrupted, long_data, uninterrupted,
                                                                      tmp_path):
    """While a `--resume` holds an unfinished run, `train.py --once` with its settings (a sweep's run)
    waits for it, and readers read the run meanwhile; once the holder is gone (here SIGKILLed, which
    also ends its lock) --once resumes the run to the end."""
    run_dir = copy_run(interrupted, tmp_path / "runs" / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=str(ROOT), run=str(run_dir))],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    once = subprocess.Popen([sys.executable, ROOT / "train.py", *LONG, "--data-dir", long_data, "--out", tmp_path,
                             "--once"], cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    waiting = once.stdout.readline()
    assert waiting.startswith(f"waiting: process {holder.pid} on ") and f"is writing {run_dir.resolve()}" in waiting
    reader = run_script("test.py", run_dir)
    assert reader.returncode == 0 and "accuracy" in reader.stdout, reader.stderr
    assert once.poll() is None, "--once did not wait"
    holder.kill()
    holder.wait()
    _, stderr = once.communicate(timeout=300)
    assert once.returncode == 0, stderr
    same_as_uninterrupted(run_dir, uninterrupted)


def test_a_held_run_folder_is_held_once_per_process(tmp_path):
    """A process may hold a folder it holds already (a --once resuming the run it waited for); the
    claims folder is never taken for a run; a lock file left by an older version is taken over."""
    run_dir = tmp_path / "runs" / "run"
    run_dir.mkdir(parents=True)
    (tmp_path / "runs" / ".claims").mkdir()
    (tmp_path / "runs" / ".claims" / "k3y.lock").write_text("process 1 on old since 00:00:00\n")
    said = []
    with claims.claim(tmp_path, "k3y", say=lambda *a, **k: said.append(a)), claims.hold(run_dir, wait=True, say=said.append):
        with claims.hold(run_dir):
            pass
    assert not said, "a claim waited for itself or for a lock file nobody holds"
    assert runs.find_runs(tmp_path) == [] and list(runs.index(tmp_path)) == []


class FullDisk:
    """A file on a disk that is full: a write stores half its bytes, then fails with ENOSPC."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        self.file.write(data[:len(data) // 2])
        self.file.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def train_in_process(monkeypatch, capsys, *argv):
    """`python train.py ARGV` in this process: (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["train.py", *map(str, argv)])
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    import train
    try:
        errors.run_cli(train.main)
        code = 0
    except SystemExit as e:
        code = e.code
    finally:  # train installs its own handlers; give pytest its Ctrl-C back
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("failing", ["metrics.jsonl", "steps.csv", "model.pt", "summary.json"])
@pytest.mark.slow
def test_a_full_disk_ends_the_run_at_its_last_saved_epoch(failing, long_data, uninterrupted, tmp_path,
                                                          monkeypatch, capsys):
    """The disk fills once the first checkpoint is on it, so the next write to `failing` fails (half
    written, then ENOSPC; injected where files.py and runs.py open files). The run ends with one `error:` line
    naming the file, exit code 1, and its folder at the last saved epoch: logs cut back, no temporary
    file, summary.json `failed` with the resume command (where it can be written). Resumed with room
    again, it ends exactly as a run never stopped."""
    run_dir = tmp_path / "runs" / "run"

    def full_disk_open(path, mode="r", *args, **kwargs):
        file = open(path, mode, *args, **kwargs)
        full = mode[0] in "wa" and failing in Path(path).name and (run_dir / "model.pt").exists()
        return FullDisk(file) if full else file
    for module in (files, runs):  # where the run's files are opened (runs: model.pt)
        monkeypatch.setattr(module, "open", full_disk_open, raising=False)
    code, stderr = train_in_process(monkeypatch, capsys, *LONG, "--data-dir", long_data, "--out", tmp_path,
                                    "--name", "run")
    assert code == 1 and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith(f"error: {run_dir / failing}: No space left on device (free some space there); "
                             f"the run stopped after epoch 1 ("), stderr
    assert stderr.strip().endswith(f"continue it with: python train.py --resume {run_dir}")
    run = runs.read_run(run_dir)
    assert [m["epoch"] for m in run.metrics] == [1] == [runs.load_checkpoint(run_dir / "model.pt")["epoch"]]
    assert {epoch for _, epoch, _ in run.steps} == {1}
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    if failing == "summary.json":  # the summary too is out of room: the message says it may lag
        assert "summary.json could not be updated either and may still say running" in stderr
    else:
        assert run.status == "failed" and run.summary["epochs_completed"] == 1
        assert run.summary["resume"] == f"python train.py --resume {run_dir}"
        assert run.summary["error"].startswith(f"{run_dir / failing}: No space left on device")

    for module in (files, runs):
        monkeypatch.setattr(module, "open", open, raising=False)
    code, stderr = train_in_process(monkeypatch, capsys, "--resume", run_dir, "--quiet")
    assert code == 0, stderr
    same_as_uninterrupted(run_dir, uninterrupted)


FULL_DISK = """
set -u
mount -t tmpfs -o size={size} tmpfs {mnt}
{python} train.py {args} --out {mnt} --name run 2> {tmp}/failed.err
echo $? > {tmp}/failed.code
cp -r {mnt}/runs/run {tmp}/failed
mount -o remount,size=64m {mnt}
{python} train.py --resume {mnt}/runs/run --quiet 2> {tmp}/resumed.err
echo $? > {tmp}/resumed.code
cp -r {mnt}/runs/run {tmp}/resumed
"""


@pytest.mark.slow
def test_a_full_filesystem_then_resume(long_data, uninterrupted, tmp_path):
    """A real full disk, as a user meets it: --out on a tmpfs with room for one checkpoint and a half
    (mounted in a user namespace), then enlarged; train.py stops with one line and --resume finishes the
    run exactly as a run never stopped."""
    if not shutil.which("unshare") or subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "mount", "-t", "tmpfs", "tmpfs", str(tmp_path)],
            capture_output=True).returncode:
        pytest.skip("cannot mount a small filesystem here (needs unshare and user namespaces)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    size = (uninterrupted.dir / "model.pt").stat().st_size * 3 // 2 + 64 * 1024
    script = FULL_DISK.format(size=size, mnt=mnt, tmp=tmp_path, python=sys.executable,
                              args=" ".join(map(str, [*LONG, "--data-dir", long_data])))
    subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], cwd=ROOT, timeout=600)
    failed_err = (tmp_path / "failed.err").read_text()
    assert (tmp_path / "failed.code").read_text().strip() == "1", failed_err
    assert failed_err.startswith(f"error: {mnt / 'runs' / 'run' / 'model.pt'}: No space left on device")
    assert len(failed_err.strip().splitlines()) == 1, failed_err
    failed = runs.read_run(tmp_path / "failed")
    assert failed.status == "failed"
    assert len(failed.metrics) == failed.summary["epochs_completed"] >= 1
    assert (tmp_path / "resumed.code").read_text().strip() == "0", (tmp_path / "resumed.err").read_text()
    same_as_uninterrupted(tmp_path / "resumed", uninterrupted)


def test_runs_starting_together_all_find_the_results_folder_writable(tmp_path):
    """Each run checks that <out>/runs is writable as it starts, and a sweep's --jobs start several at
    once: the probe must be each process's own, or one removes another's and that run fails with 'cannot
    write there (No such file or directory)' (seen in CI with --jobs 2)."""
    import threading
    failures = []

    def check():
        for _ in range(300):
            try:
                runs.check_out(tmp_path)
            except UserError as e:
                failures.append(str(e))

    threads = [threading.Thread(target=check) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert list((tmp_path / "runs").iterdir()) == []  # no probe left behind
