"""The one registry of training choices: activations, losses and optimizers by name.

train.py's --help, the sweep scripts and the README all read their choices from here, so adding an
entry here is all it takes to make a new choice available everywhere.
"""
import torch
import torch.nn.functional as F
from torch import nn

# name -> (module factory, gain name for torch.nn.init.calculate_gain, description)
ACTIVATIONS = {
    "relu": (nn.ReLU, "relu", "max(0, x)"),
    "sigmoid": (nn.Sigmoid, "sigmoid", "1 / (1 + exp(-x))"),
    "tanh": (nn.Tanh, "tanh", "hyperbolic tangent"),
    "gelu": (nn.GELU, "relu", "x * Phi(x), Phi the normal CDF"),
    "leaky_relu": (nn.LeakyReLU, "leaky_relu", "max(0.01 x, x)"),
    "elu": (nn.ELU, "relu", "x if x > 0 else exp(x) - 1"),
    "silu": (nn.SiLU, "relu", "x * sigmoid(x), also called swish"),
    "selu": (nn.SELU, "selu", "scaled ELU, self-normalising"),
    "softplus": (nn.Softplus, "relu", "log(1 + exp(x))"),
    "mish": (nn.Mish, "relu", "x * tanh(softplus(x))"),
    "identity": (nn.Identity, "linear", "no non-linearity: the MLP is a linear model"),
}


def _one_hot(logits, y):
    return F.one_hot(y, logits.shape[1]).to(logits.dtype)


def _mse(logits, y):
    return (logits - _one_hot(logits, y)).pow(2).sum(1).mean()


def _mse_softmax(logits, y):
    return (logits.softmax(1) - _one_hot(logits, y)).pow(2).sum(1).mean()


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


# name -> (loss(logits, labels) -> scalar, description). Every loss takes the raw logits; the
# prediction is always their argmax, so no loss can apply a squashing function twice.
LOSSES = {
    "ce": (F.cross_entropy, "softmax cross-entropy: -log softmax(logits)[label]"),
    "mse": (_mse, "squared Euclidean distance between the logits and the one-hot label"),
    "mse_softmax": (_mse_softmax, "squared Euclidean distance between softmax(logits) and the one-hot label"),
    "bce": (_bce, "sigmoid(logits), then binary cross-entropy against the one-hot label, as "
                  "tutorials write it (BCELoss clamps log at -100, so saturated outputs stop learning)"),
    "bce_logits": (_bce_logits, "binary cross-entropy on sigmoid(logits) against the one-hot "
                                "label, fused and numerically stable (BCEWithLogitsLoss)"),
    "hinge": (_hinge, "multi-class hinge (Weston-Watkins): sum over wrong classes j of "
                      "max(0, 1 - logit[label] + logit[j])"),
}
LOSS_NOTE = ("Losses are summed over the 10 outputs and averaged over samples, so they are per-sample "
             "quantities like cross-entropy.")


def _fused(params):
    """Whether torch's fused update (one kernel per tensor instead of several) exists on params' device.

    It makes the step of SGD with momentum about 1.5x and Adam's about 2.8x faster on the CPU here. It
    rounds some updates differently from torch's loop in the last bit, so a run's final accuracy differs
    from the loop's by a few hundredths of a point, well within the spread over seeds.
    """
    return params[0].device.type in ("cpu", "cuda")


def _sgd(params, lr, momentum, weight_decay):
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, fused=_fused(params))


def _momentum(params, lr, momentum, weight_decay):
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=_fused(params))


def _nesterov(params, lr, momentum, weight_decay):
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay,
                           fused=_fused(params))


def _adam(params, lr, momentum, weight_decay):
    return torch.optim.Adam(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay,
                            fused=_fused(params))


def _adamw(params, lr, momentum, weight_decay):
    return torch.optim.AdamW(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay,
                             fused=_fused(params))


def _rmsprop(params, lr, momentum, weight_decay):
    return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _adagrad(params, lr, momentum, weight_decay):
    return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay, fused=_fused(params))


# name -> (builder(params, lr, momentum, weight_decay), defaults, description), params a list of
# tensors. `momentum` is the momentum coefficient for SGD and RMSprop and beta1 for Adam(W); the
# defaults are used where the command line leaves --lr, --momentum or --weight-decay unset.
OPTIMIZERS = {
    "sgd": (_sgd, {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}, "plain stochastic gradient descent"),
    "momentum": (_momentum, {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.0}, "SGD with heavy-ball momentum"),
    "nesterov": (_nesterov, {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.0}, "SGD with Nesterov momentum"),
    "adam": (_adam, {"lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0}, "Adam (--momentum is beta1)"),
    "adamw": (_adamw, {"lr": 1e-3, "momentum": 0.9, "weight_decay": 0.01}, "Adam with decoupled weight decay (--momentum is beta1)"),
    "rmsprop": (_rmsprop, {"lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0}, "RMSprop"),
    "adagrad": (_adagrad, {"lr": 1e-2, "momentum": 0.0, "weight_decay": 0.0}, "Adagrad (--momentum unused)"),
}


def describe(table):
    """Return 'name: description' lines for a registry table, for --help and the README."""
    return "; ".join(f"{name}: {entry[-1]}" for name, entry in table.items())
