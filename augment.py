"""Data augmentation of training batches: random affine transforms, elastic distortion, flips.

Everything works on the flattened, normalised batch tensor (N, 784) where it lies (CPU or CUDA), for
the whole batch at once: one 2x3 affine matrix per image (rotation, scale, shear, shift), plus an
optional per-pixel elastic displacement field, turned into one sampling grid and applied with a
single bilinear `grid_sample`. The elastic distortion is the one of Simard, Steinkraus & Platt (2003),
"Best practices for convolutional neural networks applied to visual document analysis" (ICDAR):
uniform random displacements in [-1, 1] per pixel, smoothed by a Gaussian of std sigma, scaled by
alpha. All randomness comes from the generator passed in, so a seed reproduces the batch exactly.

The trainer applies this to training batches only; evaluation always sees the untouched images.
"""
import torch
import torch.nn.functional as F

from errors import UserError

KEYS = ("shift", "rotate", "scale", "shear", "elastic_alpha", "elastic_sigma", "hflip")
SIDE = 28  # images are SIDE x SIDE pixels
PIXEL = 2 / SIDE  # one pixel in grid_sample's normalised coordinates (align_corners=False)
TRUNCATE = 4.0  # the Gaussian kernel reaches this many sigmas, as scipy's gaussian_filter does


def _check(config):
    """Raise UserError for settings that would produce nonsense rather than an augmentation."""
    for key in KEYS[:-1]:
        if config[key] < 0:
            raise UserError(f"{key} {config[key]}: must be >= 0")
    if config["scale"] >= 1:
        raise UserError(f"scale {config['scale']}: must be below 1 (zoom factors 1 +- scale)")
    if config["elastic_alpha"] > 0 and config["elastic_sigma"] <= 0:
        raise UserError(f"elastic_sigma {config['elastic_sigma']}: must be > 0 when elastic_alpha "
                        f"is on (typical for MNIST: alpha 34-38, sigma 4-6)")


def active(config):
    """Whether any augmentation in config (a dict with at least the KEYS) is switched on.

    elastic_sigma alone does nothing (it only shapes the elastic field), so it does not count.
    Raises UserError for an invalid setting, so a caller that asks once before training fails early.
    """
    _check(config)
    return any(config[key] for key in KEYS if key != "elastic_sigma")


def augment(x, config, background, generator):
    """Return a randomly augmented copy of a batch x (N, 784) of normalised 28x28 images.

    background is the normalised value of a blank pixel; pixels brought in from outside the image
    take it. generator (on x's device) is the only source of randomness. With every key off, returns
    x itself. The result has x's shape, dtype and device and is contiguous.
    """
    if not active(config):  # also checks the settings
        return x
    n = x.shape[0]
    images = x.reshape(n, 1, SIDE, SIDE)
    if config["hflip"]:
        flip = torch.rand(n, generator=generator, device=x.device) < 0.5
        images = torch.where(flip.view(n, 1, 1, 1), images.flip(-1), images)
    if not any(config[key] for key in ("shift", "rotate", "scale", "shear", "elastic_alpha")):
        return images.reshape(n, SIDE * SIDE).contiguous()
    theta = affine_matrix(_uniform(n, config["rotate"], generator, x),
                          1 + _uniform(n, config["scale"], generator, x),
                          _uniform(n, config["shear"], generator, x),
                          _uniform(n, config["shift"], generator, x),
                          _uniform(n, config["shift"], generator, x))
    grid = F.affine_grid(theta, (n, 1, SIDE, SIDE), align_corners=False)
    if config["elastic_alpha"] > 0:
        field = elastic_field(n, config["elastic_alpha"], config["elastic_sigma"], generator, x)
        grid = grid + field * PIXEL
    return sample(images, grid, background).reshape(n, SIDE * SIDE)


def _uniform(n, half_width, generator, like):
    """n values uniform in [-half_width, half_width] (zeros, drawing nothing, when it is 0)."""
    if not half_width:
        return torch.zeros(n, dtype=like.dtype, device=like.device)
    u = torch.rand(n, generator=generator, dtype=like.dtype, device=like.device)
    return (2 * u - 1) * half_width


def affine_matrix(angle, scale, shear, dx, dy):
    """The (N, 2, 3) matrices for affine_grid that move each image's content as asked.

    Each argument is a tensor (N,): angle and shear in degrees, scale a zoom factor, dx and dy in
    pixels. The content is sheared horizontally (x += tan(shear) * y), zoomed about the centre,
    rotated counter-clockwise as seen on screen by angle, then moved dx pixels right and dy down.
    affine_grid maps output positions to the input positions they sample, so the matrix is the
    inverse of that forward map: input = A^-1 (output - shift).
    """
    a, t = torch.deg2rad(angle), torch.tan(torch.deg2rad(shear))
    cos, sin = torch.cos(a), torch.sin(a)
    # Forward A = scale * R @ H with R = [[cos, sin], [-sin, cos]] (y points down, so this turns
    # counter-clockwise on screen) and H = [[1, t], [0, 1]]; its inverse is H^-1 R^-1 / scale.
    inv = torch.stack([torch.stack([cos - t * sin, -sin - t * cos], -1),
                       torch.stack([sin, cos], -1)], -2) / scale.view(-1, 1, 1)
    shift = torch.stack([dx, dy], -1).unsqueeze(-1) * PIXEL
    return torch.cat([inv, -inv @ shift], -1)


def gaussian_kernel(sigma, dtype=torch.float32, device="cpu"):
    """The 1-D Gaussian of std sigma (pixels), truncated at TRUNCATE sigmas, summing to 1."""
    radius = max(1, int(TRUNCATE * sigma + 0.5))
    offsets = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def elastic_field(n, alpha, sigma, generator, like):
    """Per-image displacement fields (N, 28, 28, 2) in pixels, (dx, dy) last, after Simard et al.

    Uniform noise in [-1, 1] per pixel and axis, smoothed by a separable Gaussian, times alpha.
    """
    noise = torch.rand(1, n * 2, SIDE, SIDE, generator=generator, dtype=like.dtype,
                       device=like.device) * 2 - 1
    kernel = gaussian_kernel(sigma, like.dtype, like.device)
    r = kernel.numel() // 2
    # Each field is its own channel of one depthwise convolution (groups = fields): on the CPU,
    # oneDNN runs that about 5x faster than the same kernels applied to a batch of 1-channel images.
    rows = kernel.view(1, 1, 1, -1).expand(n * 2, 1, 1, -1)
    cols = kernel.view(1, 1, -1, 1).expand(n * 2, 1, -1, 1)
    # Zero padding: the noise is taken as 0 outside the image, as in the usual implementation of
    # Simard et al. (scipy's gaussian_filter with mode="constant"). It works for any sigma (reflect
    # padding needs the radius below 28 pixels); it only damps the field near the border, where
    # MNIST digits (centred in the middle 20x20) have no ink anyway.
    smooth = F.conv2d(noise, rows, padding=(0, r), groups=n * 2)
    smooth = F.conv2d(smooth, cols, padding=(r, 0), groups=n * 2)
    return (smooth.view(n, 2, SIDE, SIDE) * alpha).permute(0, 2, 3, 1)


def sample(images, grid, background):
    """Bilinear sampling of images (N, 1, 28, 28) at grid, with background outside the image.

    grid_sample pads with zeros, which in normalised units is mid-grey; sampling x - background and
    adding background back makes pixels from outside the image blank instead.
    """
    out = F.grid_sample(images - background, grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.add_(background)
