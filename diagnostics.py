"""Opt-in measurements of a network during training, logged in each epoch's row of metrics.jsonl.

    python train.py --diagnostics     # per-layer gradient norms (also at initialisation), dead units
    python train.py --noise-scale     # the gradient noise scale B_simple of McCandlish et al. (2018)
    python train.py --sharpness       # the largest eigenvalue of the training loss' Hessian (also at initialisation)
    python train.py --activation-stats  # per layer: the fraction of zero activations, the mean (also at initialisation)
    python train.py --distance        # the distance of the weights from their initial values
    python train.py --end-sharpness   # the sharpness once, where the run ended (summary.json's end_sharpness)

Each is measured after the epoch, outside the timed training, on a copy of the network and with the
random state set aside, so a run with them computes exactly what the same run without them computes.
"""
import copy

import torch
from torch import nn

from model import MLP, model_kwargs

GRAD_SAMPLES = 2048           # training images the per-layer gradient norms are taken over
NOISE_SMALL, NOISE_GROUPS, NOISE_REPEATS = 32, 64, 4  # B_small, B_big = NOISE_SMALL * NOISE_GROUPS
# --sharpness: over the first SHARPNESS_SAMPLES training images (the training tensor is in a fixed shuffled
# order, so a fixed random sample), power iteration until the estimate moves by less than SHARPNESS_TOL
# of itself, or SHARPNESS_ITERATIONS steps.
SHARPNESS_SAMPLES, SHARPNESS_ITERATIONS, SHARPNESS_TOL = 2048, 100, 1e-4
MEASUREMENTS = ("diagnostics", "noise_scale", "sharpness", "activation_stats", "distance")  # what measure() answers
# Measured once, after the last epoch (measure_end): --sharpness after each of hundreds of epochs of an
# early-stopped run would cost more than its training.
END_MEASUREMENTS = ("end_sharpness",)


def measure(trainer, tensors, epoch, seed):
    """The measurements the run's config asks for, as keys of the epoch's row (none: {}); seed is the
    epoch's own (train.epoch_seed), from which the measurements draw a stream apart."""
    config, row = trainer.config, {}
    if not any(config.get(name) for name in MEASUREMENTS):
        return row
    x, y = tensors["train"]
    probe = tensors["val"][0] if tensors["val"] else x[:5000]  # the images activations are looked at on
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        generator = torch.Generator(device=x.device).manual_seed(seed + 17)
        if config.get("diagnostics"):
            pick = torch.randperm(len(y), generator=generator, device=x.device)[:GRAD_SAMPLES]
            if epoch == 0:
                row["init_grad_norms"] = layer_grad_norms(initial_model(trainer), trainer.loss_fn, x[pick], y[pick])
            row["grad_norms"] = layer_grad_norms(trainer.model, trainer.loss_fn, x[pick], y[pick])
            row["dead_units"] = dead_units(trainer.model, probe)
        if config.get("noise_scale"):
            row.update(noise_scale(trainer.model, trainer.loss_fn, x, y, generator))
        if config.get("sharpness"):
            sample = x[:SHARPNESS_SAMPLES], y[:SHARPNESS_SAMPLES]
            if epoch == 0:
                row["init_sharpness"], row["init_sharpness_iterations"] = sharpness(
                    initial_model(trainer), trainer.loss_fn, *sample)
            row["sharpness"], row["sharpness_iterations"] = sharpness(trainer.model, trainer.loss_fn, *sample)
        if config.get("distance"):
            row["distance"] = distance(trainer.model, initial_model(trainer))
        if config.get("activation_stats"):
            if epoch == 0:
                row.update({f"init_{k}": v for k, v in activation_stats(initial_model(trainer), probe).items()})
            row.update(activation_stats(trainer.model, probe))
    return row


def measure_end(trainer, tensors):
    """The measurements the run's config asks for once, where the run ended (its last epoch, an early
    stop's included), as summary.json keys: end_sharpness and end_sharpness_iterations, the figures
    --sharpness would log in that epoch's row; {} where none is asked for."""
    if not trainer.config.get("end_sharpness"):
        return {}
    x, y = tensors["train"]
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        value, steps = sharpness(trainer.model, trainer.loss_fn, x[:SHARPNESS_SAMPLES], y[:SHARPNESS_SAMPLES])
    return {"end_sharpness": value, "end_sharpness_iterations": steps}


@torch.no_grad()
def distance(model, start):
    """The Euclidean distance ||theta - theta_0|| between two networks of one architecture over all their
    parameters (weights and biases; batch norm's running statistics are buffers, not parameters): how
    far training moved the weights from their initial values."""
    return torch.cat([(p.double() - q.double()).reshape(-1)
                      for p, q in zip(model.parameters(), start.parameters())]).norm().item()


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
    alive = None
    for outputs in hidden_outputs(model, x):
        batch = [(out != 0).any(0) for out in outputs]
        alive = batch if alive is None else [a | b for a, b in zip(alive, batch)]
    return [1 - a.float().mean().item() for a in alive or []]


@torch.inference_mode()
def activation_stats(model, x):
    """Per hidden layer, over every unit and every input in x: the fraction of activations that are exactly
    0 (ReLU's sparsity, dead units included; Glorot et al. 2011 count about half at initialisation) and the
    mean activation (how far from centred on zero the layer's output is), as {"zero_fraction": [...],
    "mean_activation": [...]}, input side first."""
    totals = None  # per layer: the sums over inputs of each input's fraction of zeros and its mean
    for outputs in hidden_outputs(model, x):
        batch = [torch.stack([(out == 0).double().mean(1).sum(), out.double().mean(1).sum()]) for out in outputs]
        totals = batch if totals is None else [a + b for a, b in zip(totals, batch)]
    per_layer = [(t / len(x)).tolist() for t in totals or []]
    return {"zero_fraction": [z for z, _ in per_layer], "mean_activation": [m for _, m in per_layer]}


def hidden_outputs(model, x, chunk=8192):
    """The outputs of each hidden layer's activation on x in eval mode, a list (input side first) for each
    chunk of x in turn; the walk dead_units and activation_stats share."""
    model.eval()
    outputs = []
    hooks = [m.register_forward_hook(lambda module, inputs, out: outputs.append(out))
             for m in model if _is_activation(m)]
    try:
        for start in range(0, len(x), chunk):
            outputs.clear()
            model(x[start:start + chunk])
            yield list(outputs)
    finally:
        for h in hooks:
            h.remove()


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


def sharpness(model, loss_fn, x, y, iterations=SHARPNESS_ITERATIONS, tol=SHARPNESS_TOL):
    """The largest eigenvalue of the Hessian of loss_fn(model(x), y) with respect to all the model's
    parameters, and the power-iteration steps it took: (eigenvalue, steps). Measured on a copy in eval
    mode (no dropout; batch norm with its running statistics), from a fixed seeded start, so the same
    weights and data give the same figure. Power iteration finds the eigenvalue of largest magnitude;
    where that one is negative, a second run on H - lambda I finds the largest. Its estimate is a Rayleigh
    quotient, never above the largest eigenvalue: where the steps reach `iterations` it has not settled
    (two eigenvalues of about the same magnitude and opposite signs do that) and is a lower bound."""
    twin = copy.deepcopy(model).eval()
    params = [p for p in twin.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss_fn(twin(x), y), params, create_graph=True)
    # A gradient that does not depend on the weights (a hinge's bias gradient, a count of margins) has a
    # zero block of the Hessian: it has no graph to differentiate and is left out.
    live = [i for i, g in enumerate(grads) if g.requires_grad]
    if not live:
        return 0.0, 0
    sizes = [p.numel() for p in params]

    def hessian_times(v):  # the gradient of grads . v: a Hessian-vector product by double backward
        v = [part.view_as(p) for part, p in zip(v.split(sizes), params)]
        parts = torch.autograd.grad([grads[i] for i in live], params, [v[i] for i in live], retain_graph=True,
                                    allow_unused=True, materialize_grads=True)
        return torch.cat([part.reshape(-1) for part in parts])

    start = torch.randn(sum(sizes), generator=torch.Generator().manual_seed(0)).to(x.device, grads[0].dtype)
    value, steps = power_iteration(hessian_times, start, iterations, tol)
    if value < 0:
        value, more = power_iteration(lambda v: hessian_times(v) - value * v, start, iterations, tol, value)
        steps += more
    return value, steps


def power_iteration(matvec, start, iterations, tol, shift=0.0):
    """The eigenvalue of largest magnitude of a symmetric linear map (matvec(v): its product with v), by
    power iteration from `start`, plus shift: (that sum, steps). With matvec(v) = H v - c v and shift c the
    sum is an eigenvalue of H, and the stopping rule is relative to it (a shift of -20 turns an eigenvalue
    of 4 into 24, and 1e-4 of 24 is 6e-4 of 4): it stops when the sum moves by at most tol of itself
    between steps, or after `iterations` steps."""
    v, value = start / start.norm(), None
    for step in range(1, iterations + 1):
        w = matvec(v)
        new, norm = torch.dot(v, w).item() + shift, w.norm()
        if norm == 0:
            return shift, step
        if value is not None and abs(new - value) <= tol * abs(new):
            return new, step
        v, value = w / norm, new
    return value, iterations
