"""The data: find an MNIST-format data set, read and check it, keep it in memory as tensors.

Run `python dataloader.py` to see which data set is where, its checksums, sizes and class counts.

Everything is read once into uint8 tensors; training then works on one float tensor on the training
device and cuts batches from it by index (see `batches`), so no per-sample Python runs in the loop.
"""
import errors

if __name__ == "__main__":
    errors.handle_interrupts()  # before torch loads: Ctrl-C while importing ends with one line too

import argparse
import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import torch

from errors import UserError, run_cli

ROOT = Path(__file__).resolve().parent
FILES = {  # split -> (images file, labels file), without the optional .gz
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DATASETS = {
    "mnist": {
        "dir": ROOT / "mnist",
        "torchvision": "MNIST",
        "classes": [str(d) for d in range(10)],
        # MD5 of the uncompressed IDX content, as published with the data set (see mnist/README.md).
        "md5": {
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
    },
    "fashion-mnist": {
        "dir": Path("/usr/share/datasets/fashion-mnist"),  # Debian's dataset-fashion-mnist
        "torchvision": "FashionMNIST",
        "classes": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
        "md5": {},  # no canonical checksum of the uncompressed content is known to us
    },
}
NORMALIZATIONS = {
    "unit": "pixels scaled to [0, 1]",
    "center": "scaled to [0, 1], minus the training set's mean pixel",
    "standard": "scaled to [0, 1], minus the training set's mean, divided by its std",
}
SUBSET_SEED = 2  # of --train-size's order (0 draws the validation split, 1 the label noise)


# ---------------------------------------------------------------------------- reading files

def idx_bytes(images, labels):
    """Serialise uint8 images (N,28,28) and labels (N,) to IDX bytes, the form checksums refer to."""
    head_x = struct.pack(">I", 0x0803) + struct.pack(">3I", *images.shape)
    head_y = struct.pack(">I", 0x0801) + struct.pack(">I", labels.shape[0])
    return head_x + images.numpy().tobytes(), head_y + labels.numpy().tobytes()


def parse_idx(raw, name):
    """Parse IDX bytes into a uint8 tensor, checking the magic number and the size."""
    if len(raw) < 4:
        raise UserError(f"{name}: file is truncated ({len(raw)} bytes); get a fresh copy")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08 or ndim not in (1, 3):
        raise UserError(f"{name}: wrong magic number 0x{raw[:4].hex()} (expected 0x00000801 for "
                        f"labels or 0x00000803 for images); this is not an MNIST-format IDX file")
    if len(raw) < 4 + 4 * ndim:
        raise UserError(f"{name}: file is truncated inside its header; get a fresh copy")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    expected = 4 + 4 * ndim + int(torch.tensor(dims).prod())
    if len(raw) != expected:
        raise UserError(f"{name}: wrong size, {len(raw)} bytes where its header {dims} implies "
                        f"{expected}; the file is truncated or damaged, get a fresh copy")
    data = torch.frombuffer(bytearray(raw[4 + 4 * ndim:]), dtype=torch.uint8)
    return data.reshape(dims)


def read_idx(path):
    """Read an IDX file, gzip-compressed or not (told by its first bytes, not its name)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(f"{path}: damaged gzip file ({e}); get a fresh copy") from None
    elif path.suffix == ".gz":
        raise UserError(f"{path}: named .gz but is not gzip data; the download is damaged, get a "
                        f"fresh copy")
    return parse_idx(raw, path)


def read_csv(path):
    """Read the tutorials' CSV form (each row: label, then 784 pixel values) into images, labels."""
    rows = []
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read it as text ({e})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip() or (number == 1 and line[:1].isalpha()):  # blank line or header
            continue
        fields = line.split(",")
        if len(fields) != 785:
            raise UserError(f"{path}, line {number}: {len(fields)} fields, expected 785 "
                            f"(a label, then 28x28 pixel values)")
        try:
            values = [int(v) for v in fields]
        except ValueError:
            raise UserError(f"{path}, line {number}: a field is not an integer") from None
        if not all(0 <= v <= 255 for v in values):
            raise UserError(f"{path}, line {number}: a value outside 0-255")
        rows.append(values)
    if not rows:
        raise UserError(f"{path}: no data rows")
    table = torch.tensor(rows, dtype=torch.uint8)
    return table[:, 1:].reshape(-1, 28, 28).contiguous(), table[:, 0].contiguous()


# ---------------------------------------------------------------------------- finding files

def _find_idx(folder, stem):
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def locate(dataset, data_dir=None):
    """Return ("idx", {stem: path}) or ("csv", {split: path}) for the data set, or None if absent.

    Looks in data_dir (or the data set's default folder) for the four IDX files, then in a
    torchvision-style root (<dir>/<Name>/raw/), then for <dataset>_train.csv and <dataset>_test.csv.
    """
    spec = DATASETS[dataset]
    folder = Path(data_dir) if data_dir else spec["dir"]
    for where in (folder, folder / spec["torchvision"] / "raw"):
        found = {stem: _find_idx(where, stem) for pair in FILES.values() for stem in pair}
        if all(found.values()):
            return "idx", found
    csvs = {split: folder / f"{dataset}_{split}.csv" for split in FILES}
    if all(p.is_file() for p in csvs.values()):
        return "csv", csvs
    return None


def check_partial(dataset, data_dir=None):
    """Name the missing files when a folder holds only part of a data set: downloading over a
    partial copy would hide which file was lost."""
    folder = Path(data_dir) if data_dir else DATASETS[dataset]["dir"]
    stems = [stem for pair in FILES.values() for stem in pair]
    for where in (folder, folder / DATASETS[dataset]["torchvision"] / "raw"):
        missing = [f"{where / stem}[.gz]" for stem in stems if not _find_idx(where, stem)]
        if 0 < len(missing) < len(stems):
            raise UserError(f"{', '.join(missing)}: missing (the other {dataset} files are there); "
                            f"copy it back into {where}")
    csvs = [folder / f"{dataset}_{split}.csv" for split in FILES]
    if sum(p.is_file() for p in csvs) == 1:
        missing = next(p for p in csvs if not p.is_file())
        raise UserError(f"{missing}: missing (its partner {dataset} CSV file is there); copy it back")


def download(dataset, data_dir):
    """Try torchvision's download into data_dir; on failure raise an error naming the ways to get the data."""
    spec = DATASETS[dataset]
    folder = Path(data_dir) if data_dir else spec["dir"]
    wanted = ", ".join(f"{stem}[.gz]" for pair in FILES.values() for stem in pair)
    try:
        import torchvision
        getattr(torchvision.datasets, spec["torchvision"])(str(folder), download=True)
    except Exception as e:  # offline, a proxy, a full disk: all mean the same to the user
        hint = {"mnist": "restore the shipped copy with `git checkout mnist/`",
                "fashion-mnist": "install it with `apt-get install dataset-fashion-mnist`"}[dataset]
        raise UserError(
            f"{dataset} not found in {folder} and the download failed "
            f"({type(e).__name__}: {str(e).strip().splitlines()[0]}).\n"
            f"  Needed: {wanted}, or {dataset}_train.csv and {dataset}_test.csv.\n"
            f"  Fix: {hint}, or copy the four files into a folder and pass --data-dir FOLDER.") from None
    return locate(dataset, folder)


# ---------------------------------------------------------------------------- loading and checking

def check_pair(images, labels, name):
    """Check one split: image shape, equal counts, labels in 0-9."""
    if images.dim() != 3 or tuple(images.shape[1:]) != (28, 28):
        raise UserError(f"{name}: images have shape {tuple(images.shape)}, expected (N, 28, 28)")
    if labels.dim() != 1:
        raise UserError(f"{name}: labels have shape {tuple(labels.shape)}, expected (N,)")
    if images.shape[0] != labels.shape[0]:
        raise UserError(f"{name}: {images.shape[0]} images but {labels.shape[0]} labels; the files "
                        f"do not belong together")
    if labels.numel() and int(labels.max()) > 9:
        raise UserError(f"{name}: label {int(labels.max())} outside 0-9")


def load(dataset="mnist", data_dir=None, verify=True, allow_download=True):
    """Load a data set into uint8 tensors and check it.

    Returns a dict with train_x, train_y, test_x, test_y (uint8, images N x 28 x 28), classes,
    source (where it was read from) and md5 (of each file's uncompressed IDX content).
    With verify, a checksum that differs from the canonical one is an error.
    """
    if dataset not in DATASETS:
        raise UserError(f"unknown data set {dataset!r}; choose from {', '.join(DATASETS)}")
    found = locate(dataset, data_dir)
    if found is None:
        check_partial(dataset, data_dir)
    if found is None and allow_download:
        found = download(dataset, data_dir)
    if found is None:
        raise UserError(f"{dataset}: data files not found in {data_dir or DATASETS[dataset]['dir']}")
    kind, paths = found
    data = {"dataset": dataset, "classes": DATASETS[dataset]["classes"], "md5": {}, "source": {}}
    for split, (x_stem, y_stem) in FILES.items():
        if kind == "idx":
            x, y = read_idx(paths[x_stem]), read_idx(paths[y_stem])
            data["source"][split] = [str(paths[x_stem]), str(paths[y_stem])]
        else:
            x, y = read_csv(paths[split])
            data["source"][split] = [str(paths[split])]
        name = data["source"][split][0]
        check_pair(x, y, name)
        for stem, raw in zip((x_stem, y_stem), idx_bytes(x, y)):
            data["md5"][stem] = hashlib.md5(raw).hexdigest()
        data[f"{split}_x"], data[f"{split}_y"] = x, y
    if verify:
        verify_md5(data)
    return data


def verify_md5(data):
    """Compare each file's content MD5 with the canonical one, where one is known."""
    canonical = DATASETS[data["dataset"]]["md5"]
    for stem, got in data["md5"].items():
        if stem in canonical and got != canonical[stem]:
            raise UserError(
                f"{stem}: checksum mismatch (MD5 of the content {got}, canonical {canonical[stem]}); "
                f"the file is damaged or is not the original {data['dataset']}. Restore it (`git "
                f"checkout mnist/` for the shipped copy), or pass --no-verify if it is your own data "
                f"in MNIST format")


# ---------------------------------------------------------------------------- tensors for training

def prepare(data, val_split=0, normalize="standard", device="cpu", size=28):
    """Turn loaded data into float tensors on the device: cropped to the central size x size pixels,
    flattened, normalised, split.

    The validation set is the last `val_split` images of a fixed shuffle of the training set (the same
    for every run, so settings are compared on the same images). Normalisation statistics come from
    the remaining training images only. Returns {"train": (x, y), "val": (x, y) or None,
    "test": (x, y), "mean": m, "std": s}.
    """
    n = data["train_x"].shape[0]
    if not 0 <= val_split < n:
        raise UserError(f"--val-split {val_split}: must be between 0 and {n - 1}, the training set "
                        f"has {n} images")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    train_idx, val_idx = order[:n - val_split], order[n - val_split:]
    train_x = crop(data["train_x"][train_idx], size).reshape(len(train_idx), -1).float().div_(255)
    mean, std = normalization_stats(train_x, normalize)
    train_x.sub_(mean).div_(std)  # the rest of to_inputs, in place: one float copy of the set, not two

    def to_device(x, y):
        return to_inputs(crop(x, size), mean, std).to(device), y.long().to(device)

    return {
        "train": (train_x.to(device), data["train_y"][train_idx].long().to(device)),
        "val": to_device(data["train_x"][val_idx], data["train_y"][val_idx]) if val_split else None,
        "test": to_device(data["test_x"], data["test_y"]),
        "mean": mean, "std": std,
    }


def for_run(config, device):
    """The data set of a run's config, checked, and its prepared tensors on the device: (data, tensors)."""
    data = load(config["dataset"], config["data_dir"], verify=not config["no_verify"])
    tensors = prepare(data, config["val_split"], config["normalize"], device, config["crop"])
    where = f"--val-split {config['val_split']}"
    if config.get("train_size"):
        # Cut after prepare: the normalisation statistics stay those of the whole training part (the
        # --train-size help says why), and validation and test are the tensors every size sees.
        y, size, classes = tensors["train"][1], config["train_size"], len(data["classes"])
        if not classes <= size <= len(y):
            raise UserError(f"--train-size {size}: must be between {classes} (one image per class) and "
                            f"{len(y)}, the training images left after {where}")
        keep = balanced_subset(y.cpu(), size, classes).to(y.device)
        tensors["train"] = tuple(t[keep] for t in tensors["train"])
        where += f" and --train-size {size}"
    if config.get("label_noise"):
        tensors["train"] = (tensors["train"][0], noisy_labels(tensors["train"][1], config["label_noise"]))
    n = len(tensors["train"][1])
    if config["batch_size"] > n:
        raise UserError(f"--batch-size {config['batch_size']} is larger than the training set "
                        f"({n} images after {where}); use at most {n} for full-batch gradient descent")
    return data, tensors


def balanced_subset(y, size, classes=10):
    """The positions in y (labels 0 to classes - 1) of a class-balanced subset of `size` of them, ascending.

    The subset is the first `size` of one fixed order (a seed of its own): a seeded shuffle's first image
    of each class, then its second of each class, and so on. So a smaller subset is inside every larger
    one, and class counts differ by at most one until the rarest class runs out (beyond that, a class
    that has run out is all in and the others fill up evenly). The positions come back ascending: a
    subset of the whole split is the split in its own order, which trains exactly as no subset does.
    """
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(SUBSET_SEED))
    shuffled = y[order].long()
    rank = torch.empty_like(shuffled)  # how many images of its class come before it in the shuffle
    for c in shuffled.unique():
        of_c = shuffled == c
        rank[of_c] = torch.arange(int(of_c.sum()))
    return order[torch.argsort(rank * classes + shuffled)[:size]].sort().values


def noisy_labels(y, fraction):
    """The training labels with a fixed random `fraction` of them replaced by another class, the same
    images and wrong classes in every run (a seed of its own): outliers for the losses to fit."""
    g = torch.Generator().manual_seed(1)
    flip = torch.randperm(len(y), generator=g)[:round(fraction * len(y))].to(y.device)
    shift = torch.randint(1, 10, (len(flip),), generator=g).to(y.device)  # never the true class
    noisy = y.clone()
    noisy[flip] = (y[flip] + shift) % 10
    return noisy


def crop(images, size):
    """The central size x size pixels of (N, 28, 28) images (all of them for size 28)."""
    margin = (images.shape[1] - size) // 2
    return images[:, margin:margin + size, margin:margin + size]


def to_inputs(images, mean, std):
    """uint8 images (N, H, W) -> float inputs (N, H * W): scaled to [0, 1], then (x - mean) / std."""
    return images.reshape(images.shape[0], -1).float().div_(255).sub_(mean).div_(std)


def normalization_stats(train_x, normalize):
    """Return (mean, std) to apply to [0, 1] pixels for the chosen normalisation."""
    if normalize == "unit":
        return 0.0, 1.0
    if normalize == "center":
        return train_x.mean().item(), 1.0
    if normalize == "standard":
        return train_x.mean().item(), train_x.std().item()
    raise UserError(f"unknown --normalize {normalize!r}; choose from {', '.join(NORMALIZATIONS)}")


def batches(x, y, batch_size, generator):
    """Yield (x, y) batches of a fresh permutation drawn from generator; the last batch may be short.

    Each batch is gathered by index_select as it is needed: it is small enough to stay in cache for the
    forward pass, and it avoids shuffling a copy of the whole set into fresh memory every epoch, which
    cost a tenth of an epoch at batch size 256 on the CPU.
    """
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    for start in range(0, x.shape[0], batch_size):
        idx = perm[start:start + batch_size]
        yield x.index_select(0, idx), y.index_select(0, idx)


# ---------------------------------------------------------------------------- the command

def describe(data):
    """Return a printable report: where each split was read from, sizes, checksums, class counts."""
    canonical = DATASETS[data["dataset"]]["md5"]
    lines = [f"data set: {data['dataset']}"]
    for split in FILES:
        x, y = data[f"{split}_x"], data[f"{split}_y"]
        lines.append(f"\n{split}: {x.shape[0]} images of {x.shape[1]}x{x.shape[2]} pixels, "
                     f"pixel mean {x.float().mean() / 255:.4f}, std {x.float().std() / 255:.4f}")
        lines += [f"  from {p}" for p in data["source"][split]]
        for stem in FILES[split]:
            got = data["md5"][stem]
            state = ("canonical" if canonical.get(stem) == got else
                     "MISMATCH" if stem in canonical else "no canonical checksum known")
            lines.append(f"  md5 {stem}: {got} ({state})")
        counts = torch.bincount(y.long(), minlength=10).tolist()
        lines.append("  class counts: " + ", ".join(
            f"{name} {count}" for name, count in zip(data["classes"], counts)))
    return "\n".join(lines)


# The data flags, as argparse arguments: train.py's settings table, test.py and this script use them.
DATA_FLAGS = {
    "--dataset": dict(default="mnist", choices=list(DATASETS),
                      help="data set: mnist, shipped in mnist/; fashion-mnist, read from "
                           "/usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist)"),
    "--data-dir": dict(default=None, help="folder with the four IDX files (.gz or not), a torchvision "
                                          "root with <Name>/raw/, or <dataset>_train.csv and <dataset>_test.csv"),
    "--no-verify": dict(action="store_true", default=False,
                        help="do not require the canonical checksums (for your own MNIST-format data)"),
}


def add_data_args(parser):
    """Add the data flags to a parser."""
    for flag, kwargs in DATA_FLAGS.items():
        parser.add_argument(flag, **kwargs)


def main():
    parser = argparse.ArgumentParser(description="Check a data set and show what is there.")
    add_data_args(parser)
    args = parser.parse_args()
    data = load(args.dataset, args.data_dir, verify=False)
    print(describe(data))
    if not args.no_verify:
        verify_md5(data)


if __name__ == "__main__":
    run_cli(main)
