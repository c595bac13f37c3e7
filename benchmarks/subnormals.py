"""A run's epochs with subnormal floats flushed to zero and kept, side by side in one process.

    python benchmarks/subnormals.py          # a struggling run: 784-256-64-10, batch 16, lr 0.05 constant
    python benchmarks/subnormals.py --batch-size 128 --schedule cosine --epochs 2    # a healthy one

Any train.py flag sets the run (the defaults above are the run that collapses in the fixed-lr batch-size
contrast). The same run trains twice from the same seed, epoch by epoch in turn, on one thread (the
switch is per thread, so one thread lets the process move it between the two sides): one side as every
script trains, with subnormals flushed (settings.flush_subnormals), the other with them kept, as before.
Per epoch it prints each side's milliseconds per step, its epoch time over its own first epoch (a
struggling network that fills with subnormals slows down as it goes; a ratio of a run's own epochs
cancels the host's speed), each side's validation accuracy, and how many weights and momentum values of
the kept side are subnormal at the epoch's end. The two sides' accuracies agree where the run never
meets a subnormal, and the last line says whether their weights ended bit-identical.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import errors  # noqa: E402

if __name__ == "__main__":
    errors.handle_interrupts()  # before torch loads: Ctrl-C while importing ends with one line too

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import dataloader  # noqa: E402
import settings  # noqa: E402
import train  # noqa: E402
from errors import run_cli  # noqa: E402

STRUGGLING = ["--hidden", "256,64", "--batch-size", "16", "--lr", "0.05", "--schedule", "constant",
              "--epochs", "3"]


def subnormal_count(trainer):
    """Nonzero values below float32's smallest normal number in the weights and the optimizer's state;
    read while subnormals are kept (with them flushed, the comparison itself would read them as zero)."""
    tensors = list(trainer.model.parameters()) + [
        t for state in trainer.optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
    tiny = torch.finfo(torch.float32).tiny
    return sum(int(((t != 0) & (t.abs() < tiny)).sum()) for t in tensors if t.is_floating_point())


def epoch(trainer, tensors, index, flushed):
    """One epoch of one side, the switch set for it; returns (seconds, steps, validation accuracy)."""
    settings.flush_subnormals(flushed)
    x, y = tensors["train"]
    with tqdm(disable=True) as progress:
        result, seconds = train.timed_epoch(trainer, x, y, index)
    _, val_acc = train.evaluate(train.evaluated_model(trainer), trainer.eval_loss_fn, *tensors["val"])
    return seconds, len(result.losses), val_acc


def main():
    config = settings.parse_config(STRUGGLING + ["--quiet", "--device", "cpu"] + sys.argv[1:])
    torch.set_num_threads(1)
    _, tensors = dataloader.for_run(config, "cpu")
    sides = {"flushed": train.build_trainer(config, tensors, "cpu"),
             "kept": train.build_trainer(config, tensors, "cpu")}
    print(f"{config['hidden']} {config['activation']}, batch {config['batch_size']}, {config['optimizer']} "
          f"lr {config['lr']:g} {config['schedule']}, 1 thread; each side's epoch over its own first epoch\n")
    print("| epoch | flushed ms/step | kept ms/step | flushed / its epoch 1 | kept / its epoch 1 | "
          "flushed val acc | kept val acc | subnormal values, kept side |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    first = {}
    for index in range(config["epochs"]):
        row = {}
        for name, flushed in (("flushed", True), ("kept", False)):
            seconds, steps, val_acc = epoch(sides[name], tensors, index, flushed)
            first.setdefault(name, seconds)
            row[name] = (1000 * seconds / steps, seconds / first[name], val_acc)
        count = subnormal_count(sides["kept"])  # the switch is still off after the kept side's epoch
        settings.flush_subnormals(True)
        (fm, fr, fa), (km, kr, ka) = row["flushed"], row["kept"]
        print(f"| {index + 1} | {fm:.2f} | {km:.2f} | {fr:.2f} | {kr:.2f} | {fa:.2%} | {ka:.2%} | {count} |")
    # Bit patterns, not values: with subnormals flushed a comparison reads them as zero.
    same = all(torch.equal(a.view(torch.int32), b.view(torch.int32))
               for a, b in zip(sides["flushed"].model.parameters(), sides["kept"].model.parameters()))
    print(f"\nweights at the end: {'bit-identical' if same else 'different'} on the two sides")


if __name__ == "__main__":
    run_cli(main)
