"""Test a trained run: accuracy, per-class accuracy and confusion matrix on the test set.

    python test.py                               # the newest completed run under results/runs/
    python test.py results/runs/<run>            # a run folder (or its model.pt)
    python test.py --plots                       # also save confusion.png and errors.png in its folder
    python test.py --image my_digit.png          # predict the digit in your own image

The model is rebuilt from the settings saved with the run, and the test images are normalised with
the statistics saved with it, so the figures match what training logged.
"""
import errors

if __name__ == "__main__":
    errors.handle_interrupts()  # before torch loads: Ctrl-C while importing ends with one line too

import argparse
from pathlib import Path

import numpy
import torch

import dataloader
import runs
from errors import UserError, run_cli
from model import MLP, model_kwargs
from registry import LOSSES
from train import evaluate


def find_checkpoint(target, out):
    """Resolve the command line to (run folder or None, model.pt path); no target: the newest
    completed run under out."""
    if target is None:
        target = newest_completed(out)
    target = Path(target)
    if target.is_dir():
        runs.read_config(target)  # a folder that is not a run, or of another format, stops here
        return target, target / "model.pt"
    if not target.exists():
        raise UserError(f"{target}: no such run folder or checkpoint")
    return None, target


def newest_completed(out):
    """The run under <out>/runs that completed last, said aloud with how to pick another."""
    done = [p for p in runs.find_runs(out) if runs.read_status(p) == "completed" and (p / "model.pt").exists()]
    if not done:
        train_command = "python train.py" + ("" if str(out) == "results" else f" --out {out}")
        raise UserError(f"no completed run under {Path(out) / 'runs'} yet; train one with: {train_command}")
    newest = max(done, key=lambda p: (p / "summary.json").stat().st_mtime)
    print(f"testing the newest completed run (another: python test.py RUN_FOLDER, e.g. one of {Path(out) / 'runs'})")
    return newest


def load_model(ckpt_path):
    """Rebuild the MLP from a checkpoint; returns (model, checkpoint dict)."""
    ckpt = runs.load_checkpoint(ckpt_path)
    if not isinstance(ckpt, dict) or not {"model", "config", "norm_mean", "norm_std"} <= ckpt.keys():
        raise UserError(f"{ckpt_path}: not a checkpoint written by train.py (keys missing)")
    config = runs.check_format(ckpt["config"], ckpt_path)
    model = MLP(**model_kwargs(config))
    try:  # with --ema the run evaluated the moving average of its weights, so it is what is tested
        model.load_state_dict(ckpt.get("ema_model") or ckpt["model"])
    except RuntimeError as e:
        raise UserError(f"{ckpt_path}: weights do not fit the architecture in its config "
                        f"({str(e).splitlines()[0]})") from None
    return model.eval(), ckpt


def architecture(config):
    """'hidden [256, 128], relu', or 'softmax regression' for a model with no hidden layer."""
    if not config["hidden"]:
        return "softmax regression (no hidden layer)"
    return f"hidden {config['hidden']}, {config['activation']}"


def confusion_matrix(labels, predictions, classes=10):
    """counts[true, predicted]."""
    return torch.bincount(labels * classes + predictions, minlength=classes * classes).reshape(classes, classes)


def format_report(loss, accuracy, counts, class_names):
    """Text report: loss, accuracy, per-class accuracy, confusion matrix."""
    lines = [f"test loss {loss:.4f}, accuracy {accuracy:.2%} "
             f"({int(counts.diag().sum())}/{int(counts.sum())})", "", "per-class accuracy:"]
    for name, row, hit in zip(class_names, counts, counts.diag()):
        lines.append(f"  {name:>12}: {hit / max(int(row.sum()), 1):7.2%}  ({int(hit)}/{int(row.sum())})")
    lines += ["", "confusion matrix (rows: true class, columns: predicted):",
              "       " + "".join(f"{i:>6}" for i in range(len(class_names)))]
    lines += [f"  {i:>3}  " + "".join(f"{int(c):>6}" for c in row) for i, row in enumerate(counts)]
    return "\n".join(lines)


def save_plots(folder, images, labels, predictions, counts, class_names, title):
    """Save confusion.png and errors.png (a grid of misclassified test digits) into folder."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6))
    shown = ax.imshow(counts.log1p(), cmap="Blues")
    for (i, j), value in zip(torch.cartesian_prod(torch.arange(10), torch.arange(10)).tolist(),
                             counts.flatten().tolist()):
        ax.text(j, i, value, ha="center", va="center", fontsize=7,
                color="white" if counts[i, j] > counts.max() / 4 else "black")
    ax.set(xticks=range(10), yticks=range(10), xticklabels=class_names, yticklabels=class_names,
           xlabel="predicted class", ylabel="true class", title=f"Confusion matrix (test set)\n{title}")
    ax.tick_params(axis="x", labelrotation=45)
    fig.colorbar(shown, ax=ax, label="log(1 + count)")
    fig.tight_layout()
    fig.savefig(folder / "confusion.png", dpi=120)
    plt.close(fig)

    wrong = (predictions != labels).nonzero().flatten()[:40]
    fig, axes = plt.subplots(5, 8, figsize=(10, 7))
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong.tolist()):
        ax.imshow(images[i], cmap="gray_r")
        ax.set_title(f"true {class_names[labels[i]]}\npred {class_names[predictions[i]]}", fontsize=8)
    fig.suptitle(f"First {len(wrong)} misclassified test images\n{title}")
    fig.tight_layout()
    fig.savefig(folder / "errors.png", dpi=120)
    plt.close(fig)


def read_image(path):
    """A user's image as uint8 28x28 in MNIST's style: dark background, digit centred in 20x20."""
    from PIL import Image, UnidentifiedImageError
    try:
        pixels = torch.from_numpy(numpy.asarray(Image.open(path).convert("L"), dtype=numpy.float32))
    except (OSError, UnidentifiedImageError) as e:
        raise UserError(f"{path}: cannot read it as an image ({e})") from None
    if pixels.mean() > 127:  # light background, dark ink: MNIST is the other way round
        pixels = 255 - pixels
    ink = (pixels > pixels.max() * 0.2).nonzero()
    if len(ink):  # crop to the ink, then fit it into 20x20 keeping the aspect ratio, as MNIST did
        (top, left), (bottom, right) = ink.min(0).values, ink.max(0).values
        pixels = pixels[top:bottom + 1, left:right + 1]
    scale = 20 / max(pixels.shape)
    size = [max(1, round(s * scale)) for s in pixels.shape]
    small = torch.nn.functional.interpolate(pixels[None, None], size=size, mode="area")[0, 0]
    # Place it so that its centre of mass is the image centre, as MNIST did.
    rows, cols = torch.arange(size[0]).float(), torch.arange(size[1]).float()
    total = small.sum().clamp(min=1e-6)
    centre = ((small.sum(1) * rows).sum() / total, (small.sum(0) * cols).sum() / total)
    top, left = (min(max(round(13.5 - float(c)), 0), 28 - s) for c, s in zip(centre, size))
    canvas = torch.zeros(28, 28)
    canvas[top:top + size[0], left:left + size[1]] = small
    return canvas.clamp(0, 255).round().to(torch.uint8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", nargs="?", help="a run folder (results/runs/<run>) or a model.pt "
                                               "(default: the newest completed run under --out)")
    parser.add_argument("--latest", action="store_true", help="the newest completed run (the default)")
    parser.add_argument("--out", default="results", help="results root searched for the newest run")
    parser.add_argument("--data-dir", default=None, help="read the test set from here instead of "
                                                         "where the run was trained from")
    parser.add_argument("--plots", action="store_true",
                        help="save confusion.png and errors.png into the run folder")
    parser.add_argument("--image", action="append", default=[], metavar="PATH",
                        help="predict the digit in your own image (may be repeated)")
    args = parser.parse_args()

    run_dir, ckpt_path = find_checkpoint(None if args.latest else args.run, args.out)
    model, ckpt = load_model(ckpt_path)
    config = ckpt["config"]
    if run_dir and model_kwargs(runs.read_config(run_dir)) != model_kwargs(config):
        # A model.pt copied in from another run would otherwise be reported as this run's result.
        raise UserError(f"{ckpt_path}: its architecture {model_kwargs(config)} is not the one in "
                        f"{run_dir / 'config.json'}; the checkpoint belongs to another run, put "
                        f"back this run's model.pt or retrain it")
    mean, std = ckpt["norm_mean"], ckpt["norm_std"]
    print(f"run: {run_dir or ckpt_path} (epoch {ckpt['epoch']}, {architecture(config)}, loss "
          f"{config['loss']}, optimizer {config['optimizer']})")

    if args.image:
        predict(model, args.image, mean, std, config["crop"])
    else:
        report(model, config, args, run_dir or ckpt_path.parent, mean, std)


def predict(model, paths, mean, std, size):
    """Print the predicted digit of each image and the three most likely classes."""
    with torch.inference_mode():
        for path in paths:
            image = dataloader.crop(read_image(path)[None], size)
            probs = model(dataloader.to_inputs(image, mean, std)).softmax(1)[0]
            top = probs.topk(3)
            ranked = ", ".join(f"{i} ({p:.1%})" for p, i in zip(top.values.tolist(), top.indices.tolist()))
            print(f"{path}: predicted {int(top.indices[0])}   (softmax of the logits: {ranked})")


def report(model, config, args, folder, mean, std):
    """Test loss, accuracy, per-class accuracy and confusion matrix; with --plots, the figures."""
    data = dataloader.load(config["dataset"], args.data_dir or config["data_dir"], verify=not config["no_verify"])
    x, y = dataloader.to_inputs(dataloader.crop(data["test_x"], config["crop"]), mean, std), data["test_y"].long()
    loss, accuracy = evaluate(model, LOSSES[config["loss"]].fn, x, y)
    with torch.inference_mode():
        predictions = model(x).argmax(1)
    counts = confusion_matrix(y, predictions)
    print(format_report(loss, accuracy, counts, data["classes"]))
    if args.plots:
        title = (f"{config['dataset']}, {architecture(config)}, {config['loss']}, {config['optimizer']}: "
                 f"test accuracy {accuracy:.2%}")
        save_plots(folder, data["test_x"], y, predictions, counts, data["classes"], title)
        print(f"\nsaved {folder / 'confusion.png'} and {folder / 'errors.png'}")


if __name__ == "__main__":
    run_cli(main)
