"""``NCDataModule``'s ``S1 ∪ S̃2`` option (the generalization bound's second training set)."""

from __future__ import annotations

import pytest
import torch

from ncdepth.data import NCDataModule

GAUSSIAN = {"num_classes": 4, "dim": 6, "samples_per_class": 50, "test_samples_per_class": 20}


def built(**kwargs) -> NCDataModule:
    dm = NCDataModule("gaussian", dataset_options=GAUSSIAN, samples_per_class=20, **kwargs)
    dm.setup("fit")
    return dm


def rows(inputs: torch.Tensor) -> list[bytes]:
    return [row.numpy().tobytes() for row in inputs]


def test_s1_is_the_prefix_of_s1_union_s2_and_only_s2_is_noised() -> None:
    s1 = built(seed=3)
    union = built(seed=3, extra_samples_per_class=10, extra_label_noise=0.5)
    n1 = len(s1.train_labels)
    assert n1 == 4 * 20 and len(union.train_labels) == n1 + 4 * 10
    assert torch.equal(union.train_inputs[:n1], s1.train_inputs)
    assert torch.equal(union.train_labels[:n1], s1.train_labels)
    assert not union.noise_mask[:n1].any()
    extra_rows = rows(union.train_inputs[n1:])
    assert len(set(extra_rows)) == 40 and not set(extra_rows) & set(rows(s1.train_inputs))
    extra_clean = union.clean_train_labels[n1:]
    assert torch.bincount(extra_clean, minlength=4).tolist() == [10] * 4
    changed = union.train_labels[n1:] != extra_clean
    assert changed.sum().item() == 20 and torch.equal(changed, union.noise_mask[n1:])
    report = union.data_report()
    assert (report["n_extra"], report["extra_label_noise_actual"]) == (40, 0.5)
    assert s1.data_report()["n_extra"] == 0 and s1.data_report()["extra_label_noise_actual"] is None


def test_s2_follows_the_seed_and_its_draw_does_not_depend_on_p() -> None:
    clean = built(seed=1, extra_samples_per_class=10, extra_label_noise=0.0)
    noisy = built(seed=1, extra_samples_per_class=10, extra_label_noise=0.75)
    other = built(seed=2, extra_samples_per_class=10, extra_label_noise=0.0)
    assert torch.equal(clean.train_inputs, noisy.train_inputs)
    assert torch.equal(clean.train_labels, noisy.clean_train_labels)
    assert not torch.equal(clean.train_inputs, other.train_inputs)
    # the S1 reference run ignores the S2 size
    assert torch.equal(built(seed=1, extra_samples_per_class=10).train_inputs, built(seed=1).train_inputs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"extra_label_noise": 0.2}, "data.extra_label_noise needs data.extra_samples_per_class"),
        ({"extra_samples_per_class": 0, "extra_label_noise": 0.2}, "data.extra_samples_per_class"),
        ({"extra_samples_per_class": 5, "extra_label_noise": 1.5}, r"data.extra_label_noise .*\[0.0, 1.0\]"),
        ({"extra_samples_per_class": 31, "extra_label_noise": 0.1}, "more than the train samples left"),
    ],
)
def test_bad_s2_options_fail_naming_the_key(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        built(**kwargs)
