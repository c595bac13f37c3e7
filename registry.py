"""The one registry of training choices: activations, losses and optimizers by name.

train.py's --help, the sweep scripts and the README all read their choices from here, so adding an
entry to one of these tables is all it takes to make a new choice available everywhere.
"""
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class Activation(NamedTuple):
    module: type       # the nn.Module class, built once per hidden layer
    gain: str          # its name for torch.nn.init.calculate_gain (xavier and kaiming init)
    description: str


class Loss(NamedTuple):
    fn: Callable       # fn(logits, labels) -> mean loss over the batch
    description: str


class Optimizer(NamedTuple):
    cls: type          # the torch.optim class
    lr: float          # defaults, used where --lr, --momentum or --weight-decay are not given
    momentum: float
    weight_decay: float
    description: str
    momentum_arg: str = None   # how --momentum reaches cls: "momentum", "beta1", or None (unused)
    options: dict = {}         # further constructor arguments
    fused: bool = True         # torch has a fused kernel for it (see make_optimizer)


ACTIVATIONS = {
    "relu": Activation(nn.ReLU, "relu", "max(0, x)"),
    "sigmoid": Activation(nn.Sigmoid, "sigmoid", "1 / (1 + exp(-x))"),
    "tanh": Activation(nn.Tanh, "tanh", "hyperbolic tangent"),
    "gelu": Activation(nn.GELU, "relu", "x * Phi(x), Phi the normal CDF"),
    "leaky_relu": Activation(nn.LeakyReLU, "leaky_relu", "max(0.01 x, x)"),
    "elu": Activation(nn.ELU, "relu", "x if x > 0 else exp(x) - 1"),
    "silu": Activation(nn.SiLU, "relu", "x * sigmoid(x), also called swish"),
    "selu": Activation(nn.SELU, "selu", "scaled ELU, self-normalising"),
    "softplus": Activation(nn.Softplus, "relu", "log(1 + exp(x))"),
    "mish": Activation(nn.Mish, "relu", "x * tanh(softplus(x))"),
    "identity": Activation(nn.Identity, "linear", "no non-linearity: the MLP is a linear model"),
}


def _one_hot(logits, y):
    return F.one_hot(y, logits.shape[1]).to(logits.dtype)


def _mse(logits, y):
    return (logits - _one_hot(logits, y)).pow(2).sum(1).mean()


def _mse_softmax(logits, y):
    return (logits.softmax(1) - _one_hot(logits, y)).pow(2).sum(1).mean()


def _l1(logits, y):
    return (logits - _one_hot(logits, y)).abs().sum(1).mean()


def _bce(logits, y):
    # Deliberately the tutorials' two steps, sigmoid then BCELoss (whose log is clamped at -100),
    # rather than the fused, numerically stable bce_logits: comparing the two is the point.
    return F.binary_cross_entropy(torch.sigmoid(logits), _one_hot(logits, y), reduction="sum") / len(y)


def _bce_logits(logits, y):
    return F.binary_cross_entropy_with_logits(logits, _one_hot(logits, y), reduction="sum") / len(y)


def _hinge(logits, y):
    correct = logits.gather(1, y[:, None])
    margins = (1 - correct + logits).clamp(min=0).scatter(1, y[:, None], 0)
    return margins.sum(1).mean()


# Every loss takes the raw logits; the prediction is always their argmax, so no loss can apply a
# squashing function twice.
LOSSES = {
    "ce": Loss(F.cross_entropy, "softmax cross-entropy: -log softmax(logits)[label]"),
    "mse": Loss(_mse, "squared Euclidean distance between the logits and the one-hot label"),
    "mse_softmax": Loss(_mse_softmax, "squared Euclidean distance between softmax(logits) and the one-hot label"),
    "bce": Loss(_bce, "sigmoid(logits), then binary cross-entropy against the one-hot label, as "
                      "tutorials write it (BCELoss clamps log at -100, so saturated outputs stop learning)"),
    "bce_logits": Loss(_bce_logits, "binary cross-entropy on sigmoid(logits) against the one-hot "
                                    "label, fused and numerically stable (BCEWithLogitsLoss)"),
    "hinge": Loss(_hinge, "multi-class hinge (Weston-Watkins): sum over wrong classes j of "
                          "max(0, 1 - logit[label] + logit[j])"),
    # A control for MSE's gradient, which shrinks with the error: L1's is +-1 per output however small.
    "l1": Loss(_l1, "absolute (L1) distance between the logits and the one-hot label"),
}
LOSS_NOTE = ("Losses are summed over the 10 outputs and averaged over samples, so they are per-sample "
             "quantities like cross-entropy.")

OPTIMIZERS = {
    "sgd": Optimizer(torch.optim.SGD, 0.1, 0.0, 0.0, "plain stochastic gradient descent"),
    "momentum": Optimizer(torch.optim.SGD, 0.05, 0.9, 0.0, "SGD with heavy-ball momentum", "momentum"),
    "nesterov": Optimizer(torch.optim.SGD, 0.05, 0.9, 0.0, "SGD with Nesterov momentum", "momentum",
                          {"nesterov": True}),
    "adam": Optimizer(torch.optim.Adam, 1e-3, 0.9, 0.0, "Adam (--momentum is beta1)", "beta1"),
    "adamw": Optimizer(torch.optim.AdamW, 1e-3, 0.9, 0.01,
                       "Adam with decoupled weight decay (--momentum is beta1)", "beta1"),
    "rmsprop": Optimizer(torch.optim.RMSprop, 1e-3, 0.0, 0.0, "RMSprop", "momentum", fused=False),
    "adagrad": Optimizer(torch.optim.Adagrad, 1e-2, 0.0, 0.0, "Adagrad (--momentum unused)"),
}


def make_optimizer(name, params, lr, momentum, weight_decay):
    """Build the named optimizer over a list of parameter tensors.

    Where the installed torch has one (fused_works), the fused update (one kernel per tensor instead
    of several) is used on the CPU and CUDA (MPS keeps the loop: its fused kernels never ran here): it
    makes the step of SGD with momentum about 1.5x and Adam's about 2.8x faster on the CPU here. It
    rounds some updates differently from torch's loop in the last bit, so a run's final accuracy
    differs from the loop's by a few hundredths of a point, well within the spread over seeds.
    """
    entry = OPTIMIZERS[name]
    kwargs = {"lr": lr, "weight_decay": weight_decay, **entry.options}
    if entry.momentum_arg == "momentum":
        kwargs["momentum"] = momentum
    elif entry.momentum_arg == "beta1":
        kwargs["betas"] = (momentum, 0.999)
    if entry.fused and params[0].device.type in ("cpu", "cuda") and fused_works(entry.cls, kwargs, params[0]):
        kwargs["fused"] = True
    return entry.cls(params, **kwargs)


_FUSED = {}  # (optimizer class, device type) -> whether fused=True works there; found once per process


def fused_works(cls, kwargs, param):
    """Whether cls takes fused=True for parameters like param, tried once per process by one step on
    a scratch tensor (no random draw, nothing of the run's touched), and silently False where refused.

    Older torch refuses it: fused CPU kernels came in 2.4, fused Adagrad on CUDA in 2.12 (see
    requirements.txt). The refusal is a TypeError (no `fused` argument) or a RuntimeError (a device or
    kernel it lacks), raised by the constructor or, from 2.5 on, at the first step.
    """
    key = (cls, param.device.type)
    if key not in _FUSED:
        scratch = torch.zeros(1, dtype=param.dtype, device=param.device, requires_grad=True)
        scratch.grad = torch.zeros_like(scratch)
        try:
            cls([scratch], **kwargs, fused=True).step()
            _FUSED[key] = True
        except (TypeError, RuntimeError):  # NotImplementedError, a missing kernel, is a RuntimeError
            _FUSED[key] = False
    return _FUSED[key]


def describe(table):
    """Return 'name: description' lines for a registry table, for --help and the README."""
    return "; ".join(f"{name}: {entry.description}" for name, entry in table.items())
