"""augment.py: the geometry of each transform, the background fill, flips, the elastic field, seeds."""
import pytest
import torch
import torch.nn.functional as F

import augment
from errors import UserError

BG = (0 - 0.1307) / 0.3081  # a blank pixel in MNIST's standard normalisation
INK = (1 - 0.1307) / 0.3081  # a full-ink pixel
OFF = {"shift": 0, "rotate": 0, "scale": 0, "shear": 0, "elastic_alpha": 0, "elastic_sigma": 0,
       "hflip": False, "lr": 0.1}  # a key augment does not know is ignored
ON = {"shift": 2.0, "rotate": 10.0, "scale": 0.1, "shear": 10.0, "elastic_alpha": 34.0,
      "elastic_sigma": 4.0, "hflip": True}
ONE_KEY = {"shift": 2.0, "rotate": 10.0, "scale": 0.1, "shear": 10.0, "elastic_alpha": 34.0,
           "hflip": True}
ROWS, COLS = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")


def config(**on):
    changes = dict(on)
    if changes.get("elastic_alpha") and "elastic_sigma" not in changes:
        changes["elastic_sigma"] = 4.0
    return {**OFF, **changes}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def blob(n=1, row=13.5, col=13.5, width=2.0):
    """n flattened normalised images of a smooth Gaussian blob of ink centred at (row, col)."""
    ink = torch.exp(-((ROWS - row) ** 2 + (COLS - col) ** 2) / (2 * width ** 2))
    return (BG + (INK - BG) * ink).reshape(1, 784).repeat(n, 1)


def dot(row, col, n=1):
    """n flattened images, blank but for one full-ink pixel."""
    x = torch.full((n, 28, 28), BG)
    x[:, row, col] = INK
    return x.reshape(n, 784)


def centre_of_mass(x):
    """(row, col) of each image's ink, (N, 2), measured above the background."""
    w = (x - BG).reshape(-1, 28, 28)
    total = w.sum((1, 2))
    return torch.stack([(w * ROWS).sum((1, 2)) / total, (w * COLS).sum((1, 2)) / total], -1)


def warp(x, angle=0.0, scale=1.0, shear=0.0, dx=0.0, dy=0.0):
    """Apply one explicit affine transform to every image of x through augment's own helpers."""
    n = x.shape[0]
    args = [torch.full((n,), float(v)) for v in (angle, scale, shear, dx, dy)]
    grid = F.affine_grid(augment.affine_matrix(*args), (n, 1, 28, 28), align_corners=False)
    return augment.sample(x.reshape(n, 1, 28, 28), grid, BG).reshape(n, 784)


# ---------------------------------------------------------------------------- switching on and off

def test_all_off_returns_the_input_unchanged():
    x = torch.randn(16, 784)
    before = x.clone()
    out = augment.augment(x, OFF, BG, gen())
    assert torch.equal(out, before)
    assert augment.active(OFF) is False


@pytest.mark.parametrize("key", list(ONE_KEY))
def test_any_one_key_switches_augmentation_on(key):
    cfg = config(**{key: ONE_KEY[key]})
    assert augment.active(cfg) is True
    x = blob(8, row=12.0, col=15.0)
    assert not torch.equal(augment.augment(x, cfg, BG, gen()), x)


def test_sigma_alone_is_not_an_augmentation():
    assert augment.active(config(elastic_sigma=4.0)) is False


@pytest.mark.parametrize("bad", [{"shift": -1}, {"scale": 1.0},
                                 {"elastic_alpha": 34, "elastic_sigma": 0}])
def test_invalid_settings_are_user_errors(bad):
    with pytest.raises(UserError):
        augment.active({**OFF, **bad})
    with pytest.raises(UserError):
        augment.augment(blob(), {**OFF, **bad}, BG, gen())


def test_input_is_not_modified():
    x = blob(8)
    before = x.clone()
    augment.augment(x, ON, BG, gen())
    assert torch.equal(x, before)


@pytest.mark.parametrize("cfg", [config(**{k: v}) for k, v in ONE_KEY.items()] + [ON],
                         ids=[*ONE_KEY, "all"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_shape_dtype_device_and_layout(cfg, dtype):
    x = blob(5).to(dtype)
    out = augment.augment(x, cfg, BG, gen())
    assert out.shape == (5, 784) and out.dtype == dtype and out.device == x.device
    assert out.is_contiguous()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_it_runs_on_the_gpu_with_a_gpu_generator():
    x = blob(64, row=12.0, col=15.0).cuda()
    first = augment.augment(x, ON, BG, torch.Generator("cuda").manual_seed(5))
    assert first.device == x.device and first.shape == x.shape and first.is_contiguous()
    assert torch.equal(first, augment.augment(x, ON, BG, torch.Generator("cuda").manual_seed(5)))
    blank = torch.full((8, 784), BG, device="cuda")
    assert torch.allclose(augment.augment(blank, ON, BG, torch.Generator("cuda")), blank, atol=1e-5)


def test_the_same_seed_gives_identical_output_and_another_seed_does_not():
    x = blob(32, row=11.0, col=16.0)
    first = augment.augment(x, ON, BG, gen(7))
    assert torch.equal(first, augment.augment(x, ON, BG, gen(7)))
    assert not torch.allclose(first, augment.augment(x, ON, BG, gen(8)))


# ---------------------------------------------------------------------------- affine geometry

@pytest.mark.parametrize("dx, dy", [(3, 0), (0, 2), (-4, 1), (2, -5)])
def test_integer_shift_moves_content_exactly_right_and_down(dx, dy):
    out = warp(dot(10, 12), dx=dx, dy=dy)
    expected = dot(10 + dy, 12 + dx)
    assert torch.allclose(out, expected, atol=1e-5)


def test_shift_draws_stay_in_range_and_go_both_ways():
    k = 3.0
    moved = centre_of_mass(augment.augment(blob(256), config(shift=k), BG, gen())) - 13.5
    assert moved.abs().max() <= k + 1e-3
    for axis in (0, 1):  # dy and dx are both drawn, independently, in both directions
        assert moved[:, axis].min() < -k / 2 and moved[:, axis].max() > k / 2
    assert abs(torch.corrcoef(moved.T)[0, 1]) < 0.2


def test_rotation_by_90_degrees_turns_counter_clockwise_on_screen():
    # (row 13, col 20) lies 6.5 px right of the centre (13.5, 13.5); a quarter turn puts it above
    out = warp(dot(13, 20), angle=90)
    assert torch.allclose(out, dot(7, 13), atol=1e-4)


def test_small_rotation_keeps_a_centred_blob_centred():
    x = blob(1, width=3.0)
    assert torch.allclose(centre_of_mass(warp(x, angle=10)), torch.tensor([[13.5, 13.5]]), atol=0.02)
    com = centre_of_mass(augment.augment(blob(64, width=3.0), config(rotate=15), BG, gen()))
    assert (com - 13.5).abs().max() < 0.05


def test_rotation_turns_an_off_centre_blob_about_the_centre():
    # a blob 6 px right of the centre, turned 30 degrees counter-clockwise on screen
    com = centre_of_mass(warp(blob(1, col=19.5), angle=30))[0]
    expected = torch.tensor([13.5 - 6 * 0.5, 13.5 + 6 * 3 ** 0.5 / 2])
    assert torch.allclose(com, expected, atol=0.1)


def test_zoom_moves_content_away_from_the_centre():
    com = centre_of_mass(warp(blob(1, row=13.5, col=15.5, width=1.5), scale=2.0))[0]
    assert torch.allclose(com, torch.tensor([13.5, 17.5]), atol=0.05)
    com = centre_of_mass(warp(blob(1, row=13.5, col=17.5, width=1.5), scale=0.5))[0]
    assert torch.allclose(com, torch.tensor([13.5, 15.5]), atol=0.05)


def test_horizontal_shear_moves_lower_rows_right():
    com = centre_of_mass(warp(blob(1, row=17.5, col=13.5), shear=45))[0]
    assert torch.allclose(com, torch.tensor([17.5, 17.5]), atol=0.1)
    com = centre_of_mass(warp(blob(1, row=9.5, col=13.5), shear=45))[0]
    assert torch.allclose(com, torch.tensor([9.5, 9.5]), atol=0.1)


# ---------------------------------------------------------------------------- background fill

@pytest.mark.parametrize("cfg", [config(**{k: v}) for k, v in ONE_KEY.items()] +
                         [ON, config(shift=40.0, rotate=180.0, scale=0.9, shear=60.0)],
                         ids=[*ONE_KEY, "all", "extreme"])
def test_a_blank_image_stays_blank_under_every_transform(cfg):
    x = torch.full((32, 784), BG)
    assert torch.allclose(augment.augment(x, cfg, BG, gen()), x, atol=1e-5)


def test_a_shift_fills_the_vacated_border_with_background_not_zero():
    x = torch.full((1, 28, 28), INK).reshape(1, 784)
    out = warp(x, dx=3, dy=-2).reshape(28, 28)
    assert torch.allclose(out[:, :3], torch.tensor(BG), atol=1e-5)  # came in from the left
    assert torch.allclose(out[-2:, :], torch.tensor(BG), atol=1e-5)  # came in from the bottom
    assert torch.allclose(out[:-2, 3:], torch.tensor(INK), atol=1e-5)


# ---------------------------------------------------------------------------- flips

def test_hflip_mirrors_exactly_about_half_the_images():
    x = torch.randn(64, 784)
    out = augment.augment(x, config(hflip=True), BG, gen()).reshape(64, 28, 28)
    same = (out == x.reshape(64, 28, 28)).flatten(1).all(1)
    mirrored = (out == x.reshape(64, 28, 28).flip(-1)).flatten(1).all(1)
    assert (same ^ mirrored).all()
    assert 10 < int(mirrored.sum()) < 54


# ---------------------------------------------------------------------------- elastic distortion

@pytest.mark.parametrize("sigma", [0.5, 2.0, 4.0, 6.5])
def test_the_smoothing_kernel_is_a_normalised_truncated_gaussian(sigma):
    kernel = augment.gaussian_kernel(sigma, torch.float64)
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert torch.equal(kernel, kernel.flip(0)) and kernel.argmax() == kernel.numel() // 2
    radius = kernel.numel() // 2
    assert 3 * sigma <= radius <= 4 * sigma + 1
    step = torch.exp(torch.tensor(-0.5 / sigma ** 2, dtype=torch.float64))
    assert (kernel[radius + 1] / kernel[radius]).item() == pytest.approx(step.item())


def test_the_elastic_field_is_uniform_noise_smoothed_by_a_2d_gaussian_times_alpha():
    n, alpha, sigma = 6, 30.0, 3.0
    field = augment.elastic_field(n, alpha, sigma, gen(3), torch.zeros(1, dtype=torch.float64))
    # the same noise, smoothed the slow way: one 2-D convolution with the outer-product kernel
    noise = torch.rand(2 * n, 1, 28, 28, generator=gen(3), dtype=torch.float64) * 2 - 1
    k = augment.gaussian_kernel(sigma, torch.float64)
    direct = F.conv2d(noise, torch.outer(k, k)[None, None], padding=k.numel() // 2) * alpha
    assert torch.allclose(field, direct.view(n, 2, 28, 28).permute(0, 2, 3, 1), atol=1e-10)


def test_the_elastic_field_has_the_spread_the_smoothing_implies():
    # away from the border, each displacement is alpha * sum(k_i k_j u_ij), u uniform in [-1, 1]
    alpha, sigma = 10.0, 2.0
    field = augment.elastic_field(4000, alpha, sigma, gen(), torch.zeros(1))
    k = augment.gaussian_kernel(sigma)
    expected = alpha * (1 / 3) ** 0.5 * (k ** 2).sum()
    centre = field[:, 9:19, 9:19, :]
    assert centre.std().item() == pytest.approx(expected.item(), rel=0.03)
    assert abs(centre.mean().item()) < 0.02 * expected


def test_elastic_distortion_changes_a_digit_but_keeps_its_mass():
    # The local area change (the field's Jacobian) is +-15-20% at alpha 34, sigma 4 (the spread of
    # one image's mass over many images: 0.17 for this blob, 0.15 for real MNIST digits), so each
    # image is held to a loose bound and the batch's mean to a tight one: the field has mean zero.
    x = blob(256, width=4.0)
    out = augment.augment(x, config(elastic_alpha=34.0, elastic_sigma=4.0), BG, gen())
    assert ((out - x).abs().amax(1) > 0.1).all()
    mass = (out - BG).sum(1) / (x - BG).sum(1)
    assert ((mass > 0.5) & (mass < 1.8)).all()
    assert mass.mean().item() == pytest.approx(1.0, abs=0.05)
    assert (centre_of_mass(out) - 13.5).abs().max() < 3  # distorted, not thrown across the canvas


def test_elastic_distortion_is_seeded():
    x = blob(8, row=12.0, col=14.0)
    cfg = config(elastic_alpha=34.0, elastic_sigma=4.0)
    first = augment.augment(x, cfg, BG, gen(1))
    assert torch.equal(first, augment.augment(x, cfg, BG, gen(1)))
    assert not torch.allclose(first, augment.augment(x, cfg, BG, gen(2)))
