"""The one multilayer perceptron every script trains: flat 784 pixels in, 10 logits out."""
import copy
import math

import torch
from torch import nn

from errors import UserError
from registry import ACTIVATIONS

NORMS = {"none": None, "batch": nn.BatchNorm1d, "layer": nn.LayerNorm}
INITS = ("default", "xavier", "kaiming", "normal")


def parse_hidden(text):
    """Parse --hidden, e.g. '256,128' -> [256, 128]; '' (or 'none') means no hidden layer."""
    text = str(text).strip()
    if text.lower() in ("", "none"):
        return []
    try:
        sizes = [int(part) for part in text.replace("x", ",").split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) <= 0:
        raise UserError(f"--hidden {text!r}: expected positive layer widths separated by commas, "
                        f"e.g. --hidden 256,128, or --hidden '' for no hidden layer")
    return sizes


class MLP(nn.Sequential):
    """Linear layers of the given hidden widths, each followed by [norm], activation, [dropout].

    With no hidden layer this is softmax regression. The output is raw logits: losses and the
    argmax prediction both start from them.
    """

    def __init__(self, hidden=(256, 128), activation="relu", norm="none", dropout=0.0,
                 init="default", init_mean=0.0, init_std=0.01, input_dropout=0.0, inputs=784, classes=10):
        # Dropout on the input pixels too, as Srivastava et al. (2014) did for their MNIST records.
        layers, width = [nn.Dropout(input_dropout)] if input_dropout > 0 else [], inputs
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if NORMS[norm] is not None:
                layers.append(NORMS[norm](size))
            layers.append(ACTIVATIONS[activation].module())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, classes))
        super().__init__(*layers)
        if init != "default":
            self._initialise(init, ACTIVATIONS[activation].gain, init_mean, init_std)

    def _initialise(self, init, gain_name, mean, std):
        linears = [m for m in self if isinstance(m, nn.Linear)]
        for i, layer in enumerate(linears):
            # The last layer feeds no activation, so its gain is that of a linear map.
            gain = nn.init.calculate_gain("linear" if i == len(linears) - 1 else gain_name)
            if init == "xavier":
                nn.init.xavier_normal_(layer.weight, gain=gain)
            elif init == "kaiming":
                nn.init.normal_(layer.weight, 0.0, gain / math.sqrt(layer.in_features))
            elif init == "normal":
                nn.init.normal_(layer.weight, mean, std)
            nn.init.zeros_(layer.bias)


@torch.no_grad()
def apply_max_norm(model, limit):
    """Rescale each unit's incoming weight vector to L2 norm at most `limit` (the max-norm
    constraint of Srivastava et al. 2014), after an optimizer step."""
    for layer in model:
        if isinstance(layer, nn.Linear):
            layer.weight.renorm_(2, 0, limit)


class EMA:
    """The exponential moving average of a model's weights and buffers (--ema), kept on its device.

    The numbers of torch's AveragedModel with get_ema_multi_avg_fn(decay) and use_buffers=True: the
    first update copies, each later one moves the average 1 - decay of the way to the model. That class
    keeps its update count on the CPU and copies it to the GPU at every update, a host-device
    synchronisation per step; here a Python flag does the count's one job, so no update waits on the
    device. state_dict is the averaged model's, as model.pt has always held it.
    """

    def __init__(self, model, decay):
        self.module, self.decay, self.started = copy.deepcopy(model), decay, False

    @torch.no_grad()
    def update_parameters(self, model):
        """Average the model's current weights and buffers in (copy them, the first time)."""
        average, current = [*self.module.parameters(), *self.module.buffers()], [*model.parameters(), *model.buffers()]
        if not self.started:
            torch._foreach_copy_(average, current)
            self.started = True
            return
        floats = [(a, c) for a, c in zip(average, current) if a.is_floating_point()]
        torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1 - self.decay)
        for a, c in zip(average, current):
            if not a.is_floating_point():  # batch norm's step count, rounded down as AveragedModel does
                a.copy_(a * self.decay + c * (1 - self.decay))

    def state_dict(self):
        """The averaged model's weights and buffers."""
        return self.module.state_dict()

    def load_state_dict(self, state):
        """Load saved averaged weights: the next update averages into them instead of copying over them."""
        self.module.load_state_dict(state)
        self.started = True


def model_kwargs(config):
    """The MLP's arguments from a run config (as saved in config.json)."""
    return {"inputs": config["crop"] ** 2, **{key: config[key] for key in (
        "hidden", "activation", "norm", "dropout", "init", "init_mean", "init_std", "input_dropout")}}
