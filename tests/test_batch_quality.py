"""The final-quality-against-batch-size study (batch_quality.py) and the measurements it stands on: the
distance of the weights from their initial values, on a known weight change; the sharpness measured once
at the end, against the per-epoch one of the last epoch; the epochs of each budget; the variants it
plans; its combined table from made-up run summaries; and, slow, a tiny study end to end on MNIST."""
import math

import pytest
import torch

import dataloader
import diagnostics
import runs
import settings
import train
from conftest import TINY
from model import MLP


def tiny_config(data, out, *extra):
    return settings.parse_config([*TINY, "--data-dir", str(data), "--out", str(out), *extra])


# ---------------------------------------------------------------------------- the measurements

def test_distance_is_the_norm_of_a_known_weight_change():
    torch.manual_seed(0)
    start = MLP(hidden=[6], inputs=5)
    moved = MLP(hidden=[6], inputs=5)
    moved.load_state_dict(start.state_dict())
    with torch.no_grad():
        moved[0].bias += 3.0         # 6 entries moved by 3
        moved[-1].weight[0, :4] -= 2.0  # 4 entries moved by 2
    assert diagnostics.distance(moved, start) == pytest.approx(math.sqrt(6 * 9 + 4 * 4))
    assert diagnostics.distance(start, start) == 0.0


def test_distance_is_taken_from_the_weights_the_seed_built(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path, "--distance")
    _, tensors = dataloader.for_run(config, "cpu")
    trainer = train.build_trainer(config, tensors, "cpu")
    assert diagnostics.measure(trainer, tensors, 0, 1)["distance"] == 0.0  # untrained: at its start
    with torch.no_grad():
        trainer.model[0].bias += 0.5  # TINY: one hidden layer of 32 units
    assert diagnostics.measure(trainer, tensors, 0, 1)["distance"] == pytest.approx(0.5 * math.sqrt(32))


def test_end_sharpness_is_measured_once_and_equals_the_last_epochs(tiny_data, tmp_path):
    every, every_summary = train.train(tiny_config(tiny_data, tmp_path, "--sharpness", "--end-sharpness"))
    end, end_summary = train.train(tiny_config(tiny_data, tmp_path, "--end-sharpness", "--distance"))
    plain, _ = train.train(tiny_config(tiny_data, tmp_path))
    assert every_summary["end_sharpness"] == every_summary["final_sharpness"] > 0
    assert end_summary["end_sharpness"] == every_summary["end_sharpness"]  # the same end point, measured alike
    assert end_summary["end_sharpness_iterations"] == every_summary["final_sharpness_iterations"]
    rows = [runs.read_jsonl(d / "metrics.jsonl") for d in (every, end, plain)]
    assert not any("sharpness" in r for r in rows[1])  # measured at the end only
    assert 0 < rows[1][0]["distance"] < rows[1][1]["distance"] == end_summary["final_distance"]
    keys = ["train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"]
    assert [[r[k] for k in keys] for r in rows[0]] == [[r[k] for k in keys] for r in rows[1]] == \
        [[r[k] for k in keys] for r in rows[2]]  # measuring changes nothing the run computes


def test_the_new_measurements_enter_the_run_key_only_when_asked_for():
    plain = settings.run_key(settings.parse_config([]))
    assert plain == "c5297117"  # the default run's key before they existed
    keys = {settings.run_key(settings.parse_config([flag])) for flag in ("--end-sharpness", "--distance")}
    assert len(keys) == 2 and plain not in keys
