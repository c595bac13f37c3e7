"""Adversarial training: a penalty added to the loss that makes the network's output hard to change
with small perturbations of the input. Still a plain MLP trained on the labelled images alone.

- fgsm: the loss at the fast-gradient-sign adversarial example x + eps * sign(grad_x loss)
  (Goodfellow, Shlens and Szegedy 2014, arXiv:1412.6572); eps bounds each pixel's change.
- vat: virtual adversarial training (Miyato et al. 2015, arXiv:1507.00677): the KL divergence between
  the prediction at x and at x + r, where r of L2 norm eps is the direction, found by one power
  iteration, that changes the prediction most. It needs no label, only the network's own prediction.

eps is given in pixel units (pixels in [0, 1]); the inputs are normalised, so it is divided by the
normalisation std before use.
"""
import contextlib

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("none", "fgsm", "vat")
VAT_XI = 1e-2  # size of the probe step of the power iteration, in normalised input units


def penalty(kind, model, x, logits, loss, y, loss_fn, eps):
    """The adversarial term for a batch: x the inputs (with requires_grad set for fgsm), logits and
    loss the clean forward pass, eps in normalised input units."""
    if kind == "fgsm":
        (grad,) = torch.autograd.grad(loss, x, retain_graph=True)
        return loss_fn(model(x.detach() + eps * grad.sign()), y)
    if kind == "vat":
        return _vat(model, x, logits.detach(), eps)
    raise ValueError(f"unknown adversarial training {kind!r}")


def _vat(model, x, clean_logits, eps):
    clean = F.log_softmax(clean_logits, 1)
    with _frozen_batch_stats(model):
        probe = VAT_XI * _unit(torch.randn_like(x)).requires_grad_(True)
        divergence = _kl(clean, model(x.detach() + probe))
        (grad,) = torch.autograd.grad(divergence, probe)
        return _kl(clean, model(x.detach() + eps * _unit(grad)))


def _unit(v):
    """Each row scaled to L2 norm 1."""
    return v / v.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *[1] * (v.dim() - 1))


def _kl(log_p, logits_q):
    """KL(p || q) averaged over the batch, p given as log-probabilities."""
    return F.kl_div(F.log_softmax(logits_q, 1), log_p, log_target=True, reduction="batchmean")


@contextlib.contextmanager
def _frozen_batch_stats(model):
    """Batch norm still normalises by the batch, but perturbed copies of the inputs do not move its
    running averages (as in Miyato et al.'s code)."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
