"""A flag acts or is refused: every train.py setting that a sweep or a study (batch scaling, quality) accepts
changes the runs it plans, or stops it at once with one `error:` line naming the flag and why."""
import pytest

import activate_function
import batch_quality
import batch_scaling
import batch_size
import dataloader
import errors
import loss_function
import optimizer
import settings
import sweep
import train
from conftest import make_dataset

SPECIAL = {"hidden": ["64"], "crop": ["20"], "adversarial": ["fgsm", "--adv-eps", "0.1"]}
INTEGERS = (settings.INT, settings.POSITIVE_INT, settings.NON_NEGATIVE_INT)
OFFERED = [s for s in settings.SETTINGS if s.scope in sweep.SWEPT_SCOPES]  # what a sweep's parser offers


def other_value(s, planned):
    """Flags that give setting s a valid value other than its default and the value it has in the
    planned configs."""
    if s.switch:
        return [s.flag]
    if s.dest in SPECIAL:
        return [s.flag, *SPECIAL[s.dest]]
    if s.kwargs.get("choices"):
        return [s.flag, next(c for c in s.kwargs["choices"] if c not in (s.default, planned[0][s.dest]))]
    if s.kwargs.get("type") in INTEGERS:
        return [s.flag, str((s.default or 0) + 1)]
    return [s.flag, "0.5" if "type" in s.kwargs else "elsewhere"]


def sweep_planner(script):
    """The configs of the first round of a one-setting sweep script, from its command line."""
    def planned(argv):
        s, _ = sweep.parse_cli(argv, script.SETTING, script.VALUES, None, script.DEFAULTS)
        return [j.config for j in sweep.plan(s.base, [(p, s.factors) for p in s.points], s.tune_seeds or s.seeds)]
    return planned


def generic_sweep(argv):
    s, _ = sweep.parse_cli(["lr", "0.01", "0.1", *argv])
    return [j.config for j in sweep.plan(s.base, [(p, s.factors) for p in s.points], s.seeds)]


def study(argv):
    return [j.config for j in batch_scaling.first_round(*batch_scaling.parse(argv), n=60000)]


def quality_study(argv):
    args, base = batch_quality.parse(argv)
    s = batch_quality.plan(args, base, n=55000)
    return [j.config for j in sweep.plan(s.base, [(p, s.factors) for p in s.points], s.tune_seeds)]


SWEEPS = (batch_size, activate_function, loss_function, optimizer)
PLANNERS = {  # a script's planner, and the settings it refuses: those it sets itself
    **{f"{m.__name__}.py": (sweep_planner(m), {m.SETTING}) for m in SWEEPS},
    "loss_function.py": (sweep_planner(loss_function), {"loss", "label_smoothing"}),  # smoothing needs ce
    "sweep.py lr": (generic_sweep, {"lr"}), "batch_scaling.py": (study, set(batch_scaling.OWNED)),
    "batch_quality.py": (quality_study, set(batch_quality.OWNED))}


@pytest.mark.parametrize("script", PLANNERS)
def test_every_setting_a_script_offers_changes_its_runs_or_is_refused(script):
    planned, owned = PLANNERS[script]
    default, ignored, refused = planned([]), [], set()
    for s in OFFERED:
        flags = other_value(s, default)
        try:
            configs = planned(flags)
        except errors.UserError as e:
            assert str(e).startswith(flags[0]) and str(e)[len(flags[0])] in " :" and "\n" not in str(e), str(e)
            refused.add(s.dest)
            continue
        if configs == default:
            ignored.append(s.flag)
    assert not ignored, f"{script} accepts and ignores {ignored}"
    assert refused == owned


@pytest.mark.parametrize("flags, message", [
    (["--tune-lr", "1", "--widen", "2"], "--widen 2: only a learning-rate search"),
    (["--tune-lr", "1", "--tune-seeds", "3"], "--tune-seeds 3: only a learning-rate search"),
    (["--lr-scaling", "sqrt"], "--lr-scaling sqrt: only a sweep of the batch size"),
])
def test_a_sweep_option_the_sweep_would_ignore_is_refused(flags, message):
    with pytest.raises(errors.UserError, match=message):
        generic_sweep(flags)


@pytest.mark.parametrize("flags", [["--schedule", "cosine"], ["--epochs", "3"], ["--patience", "2"]])
def test_the_study_refuses_a_setting_it_overrides_with_one_line_and_exit_2(flags, capsys):
    with pytest.raises(SystemExit) as exited:
        errors.run_cli(lambda: batch_scaling.parse(flags))
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.startswith(f"error: {' '.join(flags)}: ") and err.count("\n") == 1
    assert batch_scaling.parse(["--schedule", "constant"])[1]["schedule"] == "constant"  # what it does anyway


class Reads(dict):
    """A config that records which settings are read."""
    read = set()

    def __getitem__(self, key):
        Reads.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        Reads.read.add(key)
        return super().get(key, default)


# A run reads --adv-weight only with --adversarial, --init-mean and --init-std only with --init normal.
CONDITIONAL = ["--adversarial", "fgsm", "--adv-eps", "0.1", "--init", "normal"]


def test_a_study_run_reads_every_setting_the_study_accepts_and_none_it_refuses(tmp_path):
    data = make_dataset(tmp_path / "data")
    Reads.read = set()
    for extra in ([], CONDITIONAL):
        _, base = batch_scaling.parse(["--data-dir", str(data), "--no-verify", "--val-split", "100", "--hidden", "8", "--batch-sizes", "50",
                                       "--device", "cpu", *extra])
        config = Reads(batch_scaling.first_round(_, base, n=500)[0].config, device="cpu")
        batch_scaling.to_target(config, dataloader.for_run(config, "cpu")[1], 0.99, 12)
    system = {"device", "threads", "out", "compile"}  # where and how it runs: read by the study's runner
    assert {s.dest for s in OFFERED} - set(batch_scaling.OWNED) - system <= Reads.read
    assert not Reads.read & set(batch_scaling.OWNED) - {"batch_size", "schedule", "warmup"}  # set by the study
    assert train.lr_at(config, 3.7) == config["lr"]
