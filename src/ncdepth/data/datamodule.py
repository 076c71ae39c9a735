"""``NCDataModule``: one LightningDataModule for every dataset, with label noise and class imbalance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ncdepth.data.imbalance import IMBALANCE_KINDS, imbalanced_counts, select_per_class
from ncdepth.data.noise import apply_label_noise
from ncdepth.data.registry import DATASETS
from ncdepth.data.shuffle import ResumableShuffle
from ncdepth.data.splits import DatasetSplits
from ncdepth.data.tensor_dataset import LabelledTensorDataset
from ncdepth.data.transforms import augmentation
from ncdepth.data.validation import require_choice, require_float, require_int

ANALYSIS_SPLITS = ("train", "test")
_SUBSAMPLE_STREAM, _NOISE_STREAM, _EXTRA_STREAM, _EXTRA_NOISE_STREAM = 0, 1, 2, 3


def _generator(seed: int, stream: int) -> torch.Generator:
    """An independent torch generator per (run seed, purpose) pair, via numpy's SeedSequence."""
    state = np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class NCDataModule(pl.LightningDataModule):
    """Train/test data for neural-collapse runs; every config value is checked here, at start-up.

    Train-set pipeline, in order, all seeded by ``seed``: keep ``samples_per_class`` random samples
    of each class; then keep ``class_counts[c]`` (explicit) or the ``imbalance`` counts of class
    ``c`` (``n_max`` = the smallest class count at that point, ``imbalance_ratio = n_max / n_min``);
    then relabel ``round(label_noise * n_train)`` samples to a different class (see
    ``apply_label_noise``). The test split is never subsampled, imbalanced or noised.

    The comparative generalization bound (:mod:`ncdepth.theory.bound`) trains on a set ``S1`` and
    on ``S1 ∪ S̃2``: with ``extra_label_noise = p`` (not null), ``extra_samples_per_class`` more
    samples of each class, drawn from the train samples *not* kept above (so ``S2`` is disjoint
    from ``S1``), are appended after ``S1`` with a fraction ``p`` of *their* labels changed
    (``S1``'s labels are untouched by ``p``). ``S1`` never depends on ``S2``: for one seed, the
    run with ``extra_label_noise: null`` (which ignores ``extra_samples_per_class``) trains on
    exactly the ``S1`` of every ``S1 ∪ S̃2`` run.

    ``train_dataloader`` shuffles with a seeded generator and augments (random crop, plus flips
    where the dataset allows) when ``augment``; ``val_dataloader``/``test_dataloader`` serve the
    test split; ``analysis_dataloader(split)`` serves a split in fixed order without augmentation
    as ``(x, y_trained, y_clean)`` (train) or ``(x, y, y)`` (test).
    """

    def __init__(
        self,
        dataset: str = "mnist5k",
        *,
        data_dir: str | Path = "data",
        download: bool = False,
        batch_size: int = 128,
        analysis_batch_size: int = 1000,
        num_workers: int = 0,
        seed: int = 0,
        label_noise: float = 0.0,
        imbalance: str | None = None,
        imbalance_ratio: float = 1.0,
        class_counts: Sequence[int] | None = None,
        samples_per_class: int | None = None,
        extra_samples_per_class: int | None = None,
        extra_label_noise: float | None = None,
        augment: bool = False,
        dataset_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.spec = DATASETS[require_choice("data.dataset", dataset, list(DATASETS))]
        self.dataset_options = self.spec.resolve_options(dataset_options)
        self.num_classes, self.input_shape = self.spec.shape(self.dataset_options)
        self.data_dir = Path(data_dir)
        self.download = require_choice("data.download", download, [True, False])
        self.batch_size = require_int("data.batch_size", batch_size, minimum=1)
        self.analysis_batch_size = require_int("data.analysis_batch_size", analysis_batch_size, minimum=1)
        self.num_workers = require_int("data.num_workers", num_workers, minimum=0)
        self.seed = require_int("data.seed", seed, minimum=0)
        self.label_noise = require_float("data.label_noise", label_noise, low=0.0, high=1.0)
        self.imbalance = require_choice("data.imbalance", imbalance, IMBALANCE_KINDS)
        self.imbalance_ratio = require_float("data.imbalance_ratio", imbalance_ratio, low=1.0)
        self.class_counts = self._check_class_counts(class_counts)
        if samples_per_class is not None:
            require_int("data.samples_per_class", samples_per_class, minimum=1)
        self.samples_per_class = samples_per_class
        if extra_samples_per_class is not None:
            require_int("data.extra_samples_per_class", extra_samples_per_class, minimum=1)
        if extra_label_noise is not None:
            require_float("data.extra_label_noise", extra_label_noise, low=0.0, high=1.0)
            if extra_samples_per_class is None:
                raise ValueError(
                    "data.extra_label_noise needs data.extra_samples_per_class (the size of S2 per "
                    "class), an integer >= 1; got null"
                )
        self.extra_samples_per_class = extra_samples_per_class
        self.extra_label_noise = extra_label_noise
        self.augment = require_choice("data.augment", augment, [True, False])
        if augment and self.spec.crop_padding is None:
            image_sets = [name for name, spec in DATASETS.items() if spec.crop_padding is not None]
            raise ValueError(
                f"data.augment=true needs an image dataset, one of {image_sets}; got data.dataset={dataset!r}"
            )
        self.save_hyperparameters()
        self._splits: DatasetSplits | None = None
        self._shuffle = ResumableShuffle(torch.Generator().manual_seed(self.seed))

    def _check_class_counts(self, class_counts: Sequence[int] | None) -> list[int] | None:
        if class_counts is None:
            return None
        if self.imbalance is not None:
            raise ValueError(
                "data.class_counts and data.imbalance are exclusive: set data.imbalance "
                f"to null when giving class_counts (got imbalance={self.imbalance!r})"
            )
        counts = list(class_counts)
        if len(counts) != self.num_classes:
            raise ValueError(
                f"data.class_counts must list {self.num_classes} counts (one per class), got {len(counts)}"
            )
        for count in counts:
            require_int("data.class_counts[*]", count, minimum=1)
        return counts

    def prepare_data(self) -> None:
        """Download torchvision datasets when ``download`` (Lightning calls this once per node)."""
        if self.spec.prepare is not None:
            self.spec.prepare(self.data_dir, self.download)

    def setup(self, stage: str | None = None) -> None:
        """Load the data and build the train set (subsample, imbalance, noise); idempotent."""
        if self._splits is not None:
            return
        splits = self.spec.load(self.data_dir, self.download, self.dataset_options)
        keep = select_per_class(
            splits.train_labels,
            self._train_counts(splits.train_labels),
            _generator(self.seed, _SUBSAMPLE_STREAM),
        )
        self.train_inputs = splits.train_inputs[keep]
        self.clean_train_labels = splits.train_labels[keep]
        self.train_labels, self.noise_mask = apply_label_noise(
            self.clean_train_labels,
            self.label_noise,
            self.num_classes,
            _generator(self.seed, _NOISE_STREAM),
        )
        self.n_extra = 0
        if self.extra_label_noise is not None:
            self._append_noisy_extra(splits, keep)
        self._splits = splits

    def _append_noisy_extra(self, splits: DatasetSplits, kept: Tensor) -> None:
        """Append ``S̃2`` (class docstring): ``extra_samples_per_class`` samples of each class
        from the train samples outside ``kept``, a fraction ``extra_label_noise`` relabelled."""
        assert self.extra_samples_per_class is not None and self.extra_label_noise is not None
        outside = torch.ones(len(splits.train_labels), dtype=torch.bool)
        outside[kept] = False
        pool = torch.nonzero(outside).flatten()
        try:
            extra = pool[
                select_per_class(
                    splits.train_labels[pool],
                    [self.extra_samples_per_class] * self.num_classes,
                    _generator(self.seed, _EXTRA_STREAM),
                )
            ]
        except ValueError as error:
            raise ValueError(
                f"data.extra_samples_per_class={self.extra_samples_per_class} is more than the train "
                f"samples left outside S1: {error}"
            ) from None
        clean = splits.train_labels[extra]
        noisy, mask = apply_label_noise(
            clean, self.extra_label_noise, self.num_classes, _generator(self.seed, _EXTRA_NOISE_STREAM)
        )
        self.train_inputs = torch.cat([self.train_inputs, splits.train_inputs[extra]])
        self.clean_train_labels = torch.cat([self.clean_train_labels, clean])
        self.train_labels = torch.cat([self.train_labels, noisy])
        self.noise_mask = torch.cat([self.noise_mask, mask])
        self.n_extra = len(extra)

    def _train_counts(self, labels: Tensor) -> list[int]:
        """Per-class train counts after ``samples_per_class`` and imbalance (see the class doc)."""
        available = torch.bincount(labels, minlength=self.num_classes).tolist()
        if self.class_counts is not None:
            return self.class_counts
        if self.samples_per_class is not None:
            available = [self.samples_per_class] * self.num_classes
        if self.imbalance is None:
            return available
        return imbalanced_counts(self.imbalance, min(available), self.imbalance_ratio, self.num_classes)

    def _loaded(self) -> DatasetSplits:
        if self._splits is None:
            raise RuntimeError("NCDataModule.setup() must run before the data loaders are asked for")
        return self._splits

    def _loader(self, dataset: LabelledTensorDataset, batch_size: int, **kwargs: Any) -> DataLoader:
        """Batches in pinned memory when the trainer runs on a CUDA device, so that the copies to it
        (``non_blocking``) do not make the host wait."""
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self._on_cuda(),
            **kwargs,
        )

    def _on_cuda(self) -> bool:
        trainer = getattr(self, "trainer", None)
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) ``(x, y)`` batches of the train set, ``y`` the possibly noisy label;
        under data-parallel training, this process's share of them (:class:`ResumableShuffle`):
        ``batch_size`` is per process."""
        splits = self._loaded()
        transform = splits.transform
        if self.augment:
            assert self.spec.crop_padding is not None  # checked in __init__
            augment = augmentation(self.input_shape[-1], self.spec.crop_padding, self.spec.flip)
            transform = augment if transform is None else torch.nn.Sequential(transform, augment)
        dataset = LabelledTensorDataset(self.train_inputs, (self.train_labels,), transform)
        world = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        return self._loader(dataset, self.batch_size, sampler=self._shuffle.shard(len(dataset), *world))

    def state_dict(self) -> dict[str, Any]:
        """The shuffling position (:class:`ResumableShuffle`), saved in checkpoints so that a run
        resumed at any batch boundary draws the same batches as an uninterrupted one: the samples
        of this process's share of the current epoch already trained on are those of the batches
        Lightning processed (the same count on every process)."""
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current if self.trainer else None
        consumed = 0 if progress is None else progress.processed * self.batch_size
        return {"shuffle": self._shuffle.state_dict(consumed)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (Lightning calls it before building the train loader). A
        checkpoint written before the shuffling position was saved continues from its generator."""
        older = {"generator": state_dict.get("shuffle_generator"), "skip": 0}
        self._shuffle.load_state_dict(state_dict.get("shuffle", older))

    def val_dataloader(self) -> DataLoader:
        """``(x, y)`` batches of the test split, fixed order, no augmentation."""
        splits = self._loaded()
        dataset = LabelledTensorDataset(splits.test_inputs, (splits.test_labels,), splits.transform)
        return self._loader(dataset, self.batch_size)

    def test_dataloader(self) -> DataLoader:
        """The same test split as ``val_dataloader``."""
        return self.val_dataloader()

    def analysis_dataloader(self, split: str) -> DataLoader:
        """Fixed-order, unaugmented batches of ``analysis_batch_size`` for the NC analysis.

        ``split="train"`` yields ``(x, y_trained, y_clean)``; ``split="test"`` yields ``(x, y, y)``.
        """
        require_choice("split", split, ANALYSIS_SPLITS)
        splits = self._loaded()
        if split == "train":
            targets = (self.train_labels, self.clean_train_labels)
            dataset = LabelledTensorDataset(self.train_inputs, targets, splits.transform)
        else:
            targets = (splits.test_labels, splits.test_labels)
            dataset = LabelledTensorDataset(splits.test_inputs, targets, splits.transform)
        return self._loader(dataset, self.analysis_batch_size, shuffle=False)

    def data_report(self) -> dict[str, Any]:
        """What was built: sizes, per-class counts, requested and actual label noise.

        ``n_train`` counts ``S1`` and the appended ``S̃2`` (``n_extra`` samples, the last ones);
        ``extra_label_noise_actual`` is the fraction of ``S̃2`` labels changed (``None`` without it).

        ``label_noise_actual`` is the fraction of train labels that differ from the clean ones,
        ``round(p * n_train) / n_train``; ``noisy_label_can_equal_clean`` is False because a
        relabelled sample always moves to another class.
        """
        splits = self._loaded()
        n_train = len(self.train_labels)
        return {
            "dataset": self.spec.name,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "n_train": n_train,
            "n_test": len(splits.test_labels),
            "train_class_counts": torch.bincount(
                self.clean_train_labels, minlength=self.num_classes
            ).tolist(),
            "test_class_counts": torch.bincount(splits.test_labels, minlength=self.num_classes).tolist(),
            "imbalance": self.imbalance,
            "imbalance_ratio": self.imbalance_ratio,
            "label_noise_requested": self.label_noise,
            "label_noise_actual": (self.train_labels != self.clean_train_labels).sum().item() / n_train,
            "n_extra": self.n_extra,
            "extra_label_noise_requested": self.extra_label_noise,
            "extra_label_noise_actual": (
                self.noise_mask[n_train - self.n_extra :].double().mean().item() if self.n_extra else None
            ),
            "noisy_label_can_equal_clean": False,
        }
