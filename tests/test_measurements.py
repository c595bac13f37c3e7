"""The settings and opt-in measurements that the batch-size and activation studies stand on: --train-size's
nested, class-balanced subsets."""
import pytest
import torch

import dataloader
import settings
from conftest import TINY
from errors import UserError


def skewed_labels():
    """1,000 labels of 10 classes in a shuffled order, class c held by 40 + 12 c images."""
    y = torch.cat([torch.full((40 + 12 * c,), c) for c in range(10)])
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(5))]


def test_training_subsets_are_nested_class_balanced_and_fixed():
    y = skewed_labels()
    previous = set()
    for size in (10, 11, 37, 100, 250, 399, 400):  # 400: ten times the rarest class's 40
        picked = dataloader.balanced_subset(y, size)
        assert len(picked) == size and len(set(picked.tolist())) == size
        assert previous <= set(picked.tolist())  # each subset holds every smaller one
        counts = torch.bincount(y[picked], minlength=10)
        assert counts.max() - counts.min() <= 1
        assert torch.equal(picked, dataloader.balanced_subset(y, size))  # the same images every call
        previous = set(picked.tolist())
    # Past ten times the rarest class, a class that has run out is all in and the others fill up evenly.
    available, beyond = torch.bincount(y), torch.bincount(y[dataloader.balanced_subset(y, 700)], minlength=10)
    short = beyond < available
    assert beyond[~short].tolist() == [40, 52, 64, 76]  # 700 - 232 = 6 x 78 images for the others
    assert beyond[short].tolist() == [78] * 6
    assert torch.equal(dataloader.balanced_subset(y, len(y)), torch.arange(len(y)))  # the whole split, in order


def tiny_config(tiny_data, *extra):
    return settings.parse_config([*TINY, "--data-dir", str(tiny_data), *extra])


def test_a_training_subset_leaves_validation_test_and_normalisation_as_they_are(tiny_data):
    _, whole = dataloader.for_run(tiny_config(tiny_data), "cpu")
    _, part = dataloader.for_run(tiny_config(tiny_data, "--train-size", "50"), "cpu")
    _, all_of_it = dataloader.for_run(tiny_config(tiny_data, "--train-size", "500"), "cpu")
    for split in ("val", "test"):
        assert all(torch.equal(a, b) for a, b in zip(whole[split], part[split]))
    assert (whole["mean"], whole["std"]) == (part["mean"], part["std"])
    x, y = part["train"]
    assert len(y) == 50 and torch.bincount(y, minlength=10).tolist() == [5] * 10
    picked = dataloader.balanced_subset(whole["train"][1], 50)
    assert torch.equal(x, whole["train"][0][picked]) and torch.equal(y, whole["train"][1][picked])
    assert all(torch.equal(a, b) for a, b in zip(whole["train"], all_of_it["train"]))


def test_train_size_enters_the_run_key_only_when_given():
    plain = settings.parse_config([])
    assert settings.run_key(plain) == "c5297117"  # the default run's key before --train-size existed
    assert settings.run_key(settings.parse_config(["--train-size", "6875"])) != settings.run_key(plain)
    assert "--train-size" not in settings.to_argv(plain)


@pytest.mark.parametrize("size", ["9", "501"])
def test_a_training_subset_larger_than_the_split_or_smaller_than_the_classes_is_refused(tiny_data, size):
    with pytest.raises(UserError, match=rf"--train-size {size}: must be between 10 \(one image per class\) "
                                        r"and 500, the training images left after --val-split 100"):
        dataloader.for_run(tiny_config(tiny_data, "--train-size", size), "cpu")


def test_the_batch_size_is_checked_against_the_subset(tiny_data):
    with pytest.raises(UserError, match="larger than the training set .40 images after --val-split 100 and "
                                        "--train-size 40.; use at most 40"):
        dataloader.for_run(tiny_config(tiny_data, "--train-size", "40"), "cpu")  # TINY's batch is 50
