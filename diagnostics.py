"""Opt-in measurements of a network during training, logged in each epoch's row of metrics.jsonl.

    python train.py --diagnostics     # per-layer gradient norms (also at initialisation), dead units
    python train.py --noise-scale     # the gradient noise scale B_simple of McCandlish et al. (2018)

Each is measured after the epoch, outside the timed training, on a copy of the network and with the
random state set aside, so a run with them computes exactly what the same run without them computes.
"""
import copy

import torch
from torch import nn

from model import MLP, model_kwargs

GRAD_SAMPLES = 2048           # training images the per-layer gradient norms are taken over
NOISE_SMALL, NOISE_GROUPS, NOISE_REPEATS = 32, 64, 4  # B_small, B_big = NOISE_SMALL * NOISE_GROUPS


def measure(trainer, tensors, epoch, seed):
    """The measurements the run's config asks for, as keys of the epoch's row (none: {}); seed is the
    epoch's own (train.epoch_seed), from which the measurements draw a stream apart."""
    config, row = trainer.config, {}
    if not (config.get("diagnostics") or config.get("noise_scale")):
        return row
    x, y = tensors["train"]
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        generator = torch.Generator(device=x.device).manual_seed(seed + 17)
        if config.get("diagnostics"):
            pick = torch.randperm(len(y), generator=generator, device=x.device)[:GRAD_SAMPLES]
            if epoch == 0:
                row["init_grad_norms"] = layer_grad_norms(initial_model(trainer), trainer.loss_fn, x[pick], y[pick])
            row["grad_norms"] = layer_grad_norms(trainer.model, trainer.loss_fn, x[pick], y[pick])
            row["dead_units"] = dead_units(trainer.model, tensors["val"][0] if tensors["val"] else x[:5000])
        if config.get("noise_scale"):
            row.update(noise_scale(trainer.model, trainer.loss_fn, x, y, generator))
    return row


def initial_model(trainer):
    """The network as it was before its first step: built again from the run's seed."""
    torch.manual_seed(trainer.config["seed"])
    return MLP(**model_kwargs(trainer.config)).to(next(trainer.model.parameters()).device)


def _gradients(model, loss_fn, x, y):
    """The gradient of the mean training loss over (x, y) for each parameter, in training mode, on a copy
    (batch norm's running statistics of the model itself stay as they are)."""
    twin = copy.deepcopy(model).train()
    params = list(twin.parameters())
    return torch.autograd.grad(loss_fn(twin(x), y), params), params


def layer_grad_norms(model, loss_fn, x, y):
    """The L2 norm of the loss gradient with respect to each linear layer's weights, input layer first."""
    grads, params = _gradients(model, loss_fn, x, y)
    return [g.norm().item() for g, p in zip(grads, params) if p.dim() == 2]  # the MLP's only matrices


@torch.inference_mode()
def dead_units(model, x):
    """Per hidden layer, the fraction of units whose activation is exactly 0 on every input in x (ReLU's
    dead units; a smooth activation has none)."""
    model.eval()
    outputs = []
    hooks = [m.register_forward_hook(lambda module, inputs, out: outputs.append(out))
             for m in model if _is_activation(m)]
    try:
        alive = None
        for start in range(0, len(x), 8192):
            outputs.clear()
            model(x[start:start + 8192])
            batch = [(out != 0).any(0) for out in outputs]
            alive = batch if alive is None else [a | b for a, b in zip(alive, batch)]
    finally:
        for h in hooks:
            h.remove()
    return [1 - a.float().mean().item() for a in alive or []]


def _is_activation(module):
    return not isinstance(module, (nn.Linear, nn.Dropout, nn.BatchNorm1d, nn.LayerNorm))


def noise_scale(model, loss_fn, x, y, generator):
    """McCandlish et al.'s simple noise scale B_simple = tr(Sigma) / |G|^2 at the current weights, from
    gradient norms at two batch sizes: NOISE_GROUPS disjoint random batches of NOISE_SMALL training
    images, and their union. Both estimates are averaged over NOISE_REPEATS draws before dividing, as
    McCandlish et al. average them over steps: the ratio of two noisy averages is biased less than the
    average of noisy ratios."""
    estimates, groups = [], min(NOISE_GROUPS, len(y) // NOISE_SMALL)  # a small data set gives fewer groups
    for _ in range(NOISE_REPEATS):
        pick = torch.randperm(len(y), generator=generator, device=x.device)[:NOISE_SMALL * groups]
        grads = [torch.cat([g.flatten() for g in _gradients(model, loss_fn, x[part], y[part])[0]])
                 for part in pick.split(NOISE_SMALL)]
        estimates.append(noise_from(torch.stack(grads), NOISE_SMALL))
    grad_sq = sum(e[0] for e in estimates) / len(estimates)
    trace = sum(e[1] for e in estimates) / len(estimates)
    return {"noise_grad_sq": grad_sq, "noise_trace": trace, "noise_scale": trace / grad_sq if grad_sq > 0 else None}


def noise_from(grads, small):
    """Unbiased estimates (|G|^2, tr(Sigma)) from the mean gradients of disjoint batches of `small`
    samples (rows of grads) and of their union: E|G_B|^2 = |G|^2 + tr(Sigma) / B at batch size B, taken
    at B_small = small and B_big = small * len(grads) (McCandlish et al. 2018, appendix A.1)."""
    big = small * len(grads)
    small_sq = grads.pow(2).sum(1).mean().item()
    big_sq = grads.mean(0).pow(2).sum().item()
    grad_sq = (big * big_sq - small * small_sq) / (big - small)
    trace = (small_sq - big_sq) / (1 / small - 1 / big)
    return grad_sq, trace
