"""The GPU path, checked on the CPU (issue 21): the fused update dropped where torch refuses it."""
import pytest
import torch

import registry
from model import MLP


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
