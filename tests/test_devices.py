"""The GPU path, checked on the CPU (issue 21): the fused update dropped where torch refuses it, the device a
resumed run continues on, the random state of that device in the checkpoint, a moving average that never
waits on the device, and a GPU warm-up that changes nothing a run computes."""

import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import files
import registry
import runs
import settings
import train
from conftest import TINY, without_timing
from model import EMA, MLP



# ---------------------------------------------------------------------------- fused, where torch has it

class RefusedInConstructor(torch.optim.SGD):
    """SGD as torch <= 2.2 has it: no `fused` argument at all."""
    tries = 0

    def __init__(self, params, fused=None, **kwargs):
        if fused is not None:
            type(self).tries += 1
            raise TypeError("SGD.__init__() got an unexpected keyword argument 'fused'")
        super().__init__(params, **kwargs)


class RefusedAtFirstStep(torch.optim.SGD):
    """An optimizer as torch 2.5-2.11 has Adagrad on CUDA: fused=True accepted, refused at the first step."""
    tries = 0

    def __init__(self, params, fused=None, **kwargs):
        type(self).tries += bool(fused)
        self.refuses = bool(fused)
        super().__init__(params, **kwargs)

    def step(self, closure=None):
        if self.refuses:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported "
                               "devices: ['mps', 'cpu', 'privateuseone'] but torch.float32 and cuda")
        return super().step(closure)


@pytest.mark.parametrize("stand_in", [RefusedInConstructor, RefusedAtFirstStep])
def test_a_refused_fused_update_falls_back_to_the_loop_once_and_silently(stand_in, monkeypatch, capsys, recwarn):
    monkeypatch.setattr(registry, "_FUSED", {})
    monkeypatch.setitem(registry.OPTIMIZERS, "momentum", registry.OPTIMIZERS["momentum"]._replace(cls=stand_in))
    for _ in range(3):  # three runs in one process, as a sweep's timing pass builds them
        model = MLP(hidden=[8])
        optimizer = registry.make_optimizer("momentum", list(model.parameters()), 0.1, 0.9, 0.0)
        assert isinstance(optimizer, stand_in) and not optimizer.param_groups[0]["fused"]
        model(torch.randn(4, 784)).sum().backward()
        optimizer.step()  # the plain update works
    assert stand_in.tries == 1
    assert capsys.readouterr() == ("", "") and not recwarn.list


@pytest.mark.parametrize("name", ["momentum", "adam", "adagrad"])
def test_the_fused_update_is_kept_where_torch_has_it(name):
    model = MLP(hidden=[8])
    optimizer = registry.make_optimizer(name, list(model.parameters()), 0.01, 0.9, 0.0)
    assert optimizer.param_groups[0]["fused"] is True


# ---------------------------------------------------------------------------- the device of a resumed run

@pytest.mark.parametrize("saved, given, here, device, note", [
    ("cpu", None, ["cuda", "cpu"], "cpu", None),                   # trained on the CPU of a GPU machine
    ("cuda", None, ["cuda", "cpu"], "cuda", None),
    ("mps", None, ["mps", "cpu"], "mps", None),
    ("cpu", "cuda", ["cuda", "cpu"], "cuda", "resumes on cuda, as asked"),
    ("cuda", "cpu", ["cuda", "cpu"], "cpu", "resumes on cpu, as asked"),
    ("cuda", None, ["cpu"], "cpu", "as this machine has no CUDA device"),
    ("cuda", None, ["mps", "cpu"], "mps", "as this machine has no CUDA device"),
])
def test_a_resumed_run_keeps_its_device_unless_told(saved, given, here, device, note):
    chosen, said = settings.resume_device(saved, given, here)
    assert chosen == device
    if note is None:
        assert said is None
    else:
        assert note in said and "will not match those of an uninterrupted run" in said


def test_resume_config_uses_the_saved_device_and_says_once_when_it_changes(tmp_path, monkeypatch, capsys):
    config = settings.parse_config([*TINY, "--out", str(tmp_path)])
    files.write_json(tmp_path / "config.json", config)  # a run folder that has not finished an epoch
    assert settings.build_parser().parse_args([]).device is None  # "not given" is told from "auto"
    monkeypatch.setattr(settings, "devices_here", lambda: ["cuda", "cpu"])  # a GPU machine
    assert settings.resume_config(tmp_path)["device"] == "cpu" and capsys.readouterr().err == ""
    assert settings.resume_config(tmp_path, "auto")["device"] == "cuda"
    assert capsys.readouterr().err.count("will not match") == 1


# ---------------------------------------------------------------------------- the random state in a checkpoint

class FakeMPS:
    """Stands in for torch.mps's random-state functions on a machine without MPS."""

    def __init__(self):
        self.state, self.set_to = torch.arange(8, dtype=torch.uint8), None

    def get_rng_state(self):
        return self.state.clone()

    def set_rng_state(self, state):
        self.set_to = state


def test_the_checkpoint_holds_and_restores_the_random_state_of_the_device_in_use(tmp_path, monkeypatch):
    mps = FakeMPS()
    monkeypatch.setitem(runs.DEVICE_RNG, "mps", mps)
    model = MLP(hidden=[8])
    ckpt = runs.checkpoint(model, torch.optim.SGD(model.parameters(), lr=0.1), None, {"device": "mps"}, 1,
                           {"mean": 0.1, "std": 0.3})
    assert torch.equal(ckpt["mps_rng"], mps.state) and ckpt["cuda_rng"] is None
    runs.save_checkpoint(tmp_path / "model.pt", ckpt)
    loaded = runs.load_checkpoint(tmp_path / "model.pt")  # weights_only, as a resume reads it
    expected = torch.rand(3)  # what the CPU draws next from the saved state
    runs.set_rng_state(loaded, "cpu")
    assert mps.set_to is None and torch.equal(torch.rand(3), expected)
    runs.set_rng_state(loaded, "mps")
    assert torch.equal(mps.set_to, mps.state)


def test_random_draws_inside_rng_kept_leave_the_random_state_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with runs.rng_kept("cpu"):
        torch.rand(100)
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------------------- the moving average

def trained_pair(steps=5, restart_at=None):
    """The moving average of a batch-normed MLP's weights over `steps` fused-Adam steps, kept by torch's
    AveragedModel and by model.EMA; restart_at reloads both from a state_dict there, as a resume does."""
    torch.manual_seed(0)
    model = MLP(hidden=[16, 8], norm="batch", dropout=0.1)
    optimizer = torch.optim.Adam(model.parameters(), fused=True)
    theirs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    ours = EMA(model, 0.9)
    for step in range(steps):
        if step == restart_at:
            theirs.module.load_state_dict(theirs.module.state_dict())
            theirs.n_averaged.fill_(1)  # how train.py resumed an AveragedModel
            ours.load_state_dict(ours.state_dict())
        model(torch.randn(32, 784)).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        theirs.update_parameters(model)
        ours.update_parameters(model)
    return model, theirs, ours


@pytest.mark.parametrize("restart_at", [None, 3])
def test_the_moving_average_is_averaged_models_bit_for_bit(restart_at):
    _, theirs, ours = trained_pair(restart_at=restart_at)
    expected, got = theirs.module.state_dict(), ours.state_dict()
    assert list(got) == list(expected)  # model.pt's "ema_model" keeps its keys
    assert all(torch.equal(got[key], expected[key]) for key in expected)  # num_batches_tracked included


class Reads(TorchDispatchMode):
    """Every tensor operation run inside, with the tensors it reads."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        inputs = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        self.ops.append((str(func), inputs, [r for r in tree_flatten(result)[0] if isinstance(r, torch.Tensor)]))
        return result


def host_transfers(update, model, average):
    """The operations of update() that would move data between host and device on a GPU: reading a value
    back (_local_scalar_dense: bool(), .item()), or reading a tensor that is neither the two models' nor
    computed from them during the update, as a step counter kept on the host and copied over each time."""
    known = {t.untyped_storage().data_ptr() for m in (model, average) for t in [*m.parameters(), *m.buffers()]}
    found = []
    with Reads() as reads:
        update()
    for name, inputs, outputs in reads.ops:
        if "_local_scalar_dense" in name or any(t.untyped_storage().data_ptr() not in known for t in inputs):
            found.append(name)
        known |= {t.untyped_storage().data_ptr() for t in outputs}
    return found


def test_the_moving_average_update_reads_nothing_back_from_the_device():
    model, theirs, ours = trained_pair()
    assert host_transfers(lambda: ours.update_parameters(model), model, ours.module) == []
    # The check does catch AveragedModel's counter: compared in Python, and read from outside the models.
    caught = host_transfers(lambda: theirs.update_parameters(model), model, theirs.module)
    assert "aten._local_scalar_dense.default" in caught and "aten.eq.Scalar" in caught


# ---------------------------------------------------------------------------- the GPU warm-up

def test_the_warm_up_step_changes_nothing_the_run_computes(tiny_data, tmp_path, monkeypatch):
    """warm_up runs only on a GPU; run here on the CPU, its throwaway step must leave every figure and
    weight of a run with dropout, VAT, augmentation and a moving average as they are without it."""
    flags = [*TINY, "--data-dir", str(tiny_data), "--threads", "1", "--dropout", "0.2", "--ema", "0.9",
             "--adversarial", "vat", "--adv-eps", "2", "--shift", "2", "--optimizer", "adam"]
    plain, _ = train.train(settings.parse_config([*flags, "--out", str(tmp_path / "plain")]))
    built = []
    real_build = train.build_trainer
    monkeypatch.setattr(train, "build_trainer", lambda *a: built.append(a) or real_build(*a))
    monkeypatch.setattr(train, "WARM_UP", ("cpu",))
    warmed, _ = train.train(settings.parse_config([*flags, "--out", str(tmp_path / "warmed")]))
    assert len(built) == 2  # the run's trainer and the throwaway one
    rows = [without_timing(files.read_jsonl(d / "metrics.jsonl")) for d in (plain, warmed)]
    assert len(rows[0]) == 2 and rows[0] == rows[1]
    weights = [runs.load_checkpoint(d / "model.pt") for d in (plain, warmed)]
    for key in ("model", "ema_model"):
        assert all(torch.equal(weights[0][key][k], weights[1][key][k]) for k in weights[0][key])
