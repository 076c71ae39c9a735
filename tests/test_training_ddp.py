"""``NeuralCollapseCallback`` under Lightning's DDP (2 CPU processes, gloo) measures what one process
measures, and the analysis shards every split into disjoint per-rank parts that cover it once.

Both runs see identical data at every optimizer step: float64 data and model, full-batch gradient descent
with an even train set and no shuffling, so each rank's loss is the mean over half of the batch and DDP's
gradient average equals the one-process full-batch gradient (up to float64 rounding). The test split
(91 samples) is odd: ``DistributedSampler`` would pad it to 92 by repeating a sample; the callback's
shards must not, or every test metric would count that sample twice.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset

from ncdepth.data.shuffle import ResumableShuffle
from ncdepth.models import MLP
from ncdepth.training import AnalysisConfig, NCModule, NeuralCollapseCallback, OptimizerConfig
from ncdepth.training.callback import _shard

NUM_CLASSES = 3
DIM = 8
N_TRAIN, N_TEST = 150, 91
ANALYSIS_BATCH = 16  # several batches per shard, the last one partial
EPOCHS = 2


class Blobs(pl.LightningDataModule):
    """Three float64 Gaussian blobs, 10% of the train labels flipped (so ``train_clean`` is measured
    too); full-batch, unshuffled training; ``analysis_dataloader`` as ``NCDataModule``'s."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        centres = 2.0 * torch.randn(NUM_CLASSES, DIM, generator=generator, dtype=torch.float64)

        def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            y = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
            return centres[y] + torch.randn(n, DIM, generator=generator, dtype=torch.float64), y

        self.x_train, self.clean_train_labels = sample(N_TRAIN)
        self.x_test, self.y_test = sample(N_TEST)
        self.noise_mask = torch.rand(N_TRAIN, generator=generator) < 0.1
        shift = torch.randint(1, NUM_CLASSES, (N_TRAIN,), generator=generator)
        flipped = (self.clean_train_labels + shift) % NUM_CLASSES
        self.train_labels = torch.where(self.noise_mask, flipped, self.clean_train_labels)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x_train, self.train_labels), batch_size=N_TRAIN)

    def analysis_dataloader(self, split: str) -> DataLoader:
        if split == "train":
            data = TensorDataset(self.x_train, self.train_labels, self.clean_train_labels)
        else:
            data = TensorDataset(self.x_test, self.y_test, self.y_test)
        return DataLoader(data, batch_size=ANALYSIS_BATCH)


class RecordingCallback(NeuralCollapseCallback):
    """Also saves every analysis of every rank to ``record_dir/rank{r}_epoch{e}.pt`` (the DDP
    launchers return nothing of the callbacks of their worker processes)."""

    def __init__(self, record_dir: Path, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.record_dir = record_dir

    def analyse(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        super().analyse(trainer, pl_module, epoch)
        record = {"results": self.last_results, "accuracy": self.last_accuracy}
        torch.save(record, self.record_dir / f"rank{trainer.global_rank}_epoch{epoch}.pt")


def initial_model() -> MLP:
    torch.manual_seed(0)
    return MLP(input_shape=(DIM,), num_classes=NUM_CLASSES, depth=3, width=16).double()


def fit(model: MLP, run_dir: Path, **trainer_options: object) -> None:
    """Train ``model`` on ``Blobs`` for ``EPOCHS`` epochs, analysing every epoch into ``run_dir``."""
    run_dir.mkdir()
    callback = RecordingCallback(run_dir, settings=AnalysisConfig(every_n_epochs=1), run_dir=run_dir)
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[callback],
        **trainer_options,
    )
    module = NCModule(model, optimizer=OptimizerConfig(lr=0.1, momentum=0.9, weight_decay=5e-4))
    trainer.fit(module, datamodule=Blobs())


def assert_same(got: dict, expected: dict, where: str) -> None:
    """Equal nested ``{split: {layer: {metric: value}}}`` up to float64 rounding (1e-10 relative)."""
    assert list(got) == list(expected), where
    for key, value in expected.items():
        if isinstance(value, dict):
            assert_same(got[key], value, f"{where}/{key}")
        else:
            assert got[key] == pytest.approx(value, rel=1e-10, abs=1e-13, nan_ok=True), f"{where}/{key}"


@pytest.mark.parametrize("num_samples", [91, 92, 3])
@pytest.mark.parametrize("world_size", [2, 3])
def test_shards_are_disjoint_and_cover_the_split_once(num_samples: int, world_size: int) -> None:
    loader = DataLoader(TensorDataset(torch.arange(num_samples)), batch_size=ANALYSIS_BATCH)
    seen = []
    for rank in range(world_size):
        shard = _shard(loader, SimpleNamespace(world_size=world_size, global_rank=rank))
        assert shard.batch_size == ANALYSIS_BATCH
        seen.extend(int(i) for (batch,) in shard for i in batch)
    assert sorted(seen) == list(range(num_samples))  # no sample twice, none missing, no padding
    assert _shard(loader, SimpleNamespace(world_size=1, global_rank=0)) is loader


def test_a_split_smaller_than_the_world_fails_on_every_rank() -> None:
    loader = DataLoader(TensorDataset(torch.arange(2)), batch_size=ANALYSIS_BATCH)
    for rank in range(3):
        with pytest.raises(ValueError, match="2 samples cannot be shared by 3 processes"):
            _shard(loader, SimpleNamespace(world_size=3, global_rank=rank))


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="ddp_fork needs os.fork")
@pytest.mark.parametrize(
    "strategy",
    [
        "ddp_fork",  # the workers are forked: no re-import, about a second of start-up
        pytest.param("ddp_spawn", marks=pytest.mark.slow),  # fresh interpreters, as `ddp` launches
    ],
)
def test_ddp_callback_equals_one_process(tmp_path: Path, strategy: str) -> None:
    model = initial_model()
    fit(copy.deepcopy(model), tmp_path / "single", devices=1)
    fit(copy.deepcopy(model), tmp_path / "ddp", devices=2, strategy=strategy)

    for epoch in range(EPOCHS + 1):
        expected = torch.load(tmp_path / "single" / f"rank0_epoch{epoch}.pt")
        assert set(expected["results"]) == {"train", "train_clean", "test"}
        for rank in range(2):
            got = torch.load(tmp_path / "ddp" / f"rank{rank}_epoch{epoch}.pt")
            assert_same(got, expected, f"rank {rank}, epoch {epoch}")
            # Counted over the 91 test samples, not over 92 with one sample padded in twice.
            for layer in got["results"]["test"].values():
                correct = layer["ncc_acc"] * N_TEST
                assert correct == pytest.approx(round(correct), abs=1e-9)

    single = pd.read_csv(tmp_path / "single" / "metrics.csv")
    ddp = pd.read_csv(tmp_path / "ddp" / "metrics.csv")  # written by rank zero only
    keys = ["epoch", "split", "layer", "metric"]
    assert ddp[keys].equals(single[keys])
    assert ddp["value"].to_numpy() == pytest.approx(single["value"].to_numpy(), rel=1e-10, abs=1e-13)


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("dataset_size", [10, 11])
def test_resumable_shuffle_shares_each_epoch_as_distributed_sampler_does_and_resumes_mid_epoch(
    world_size: int, dataset_size: int
) -> None:
    """Every process draws the same order and takes ``order[rank::world]`` of it padded to a
    multiple of the world (``DistributedSampler``'s shares); a state saved after ``k`` samples of
    each share resumes every process with the rest of its share, then the next epochs agree."""
    samplers = [
        ResumableShuffle(torch.Generator().manual_seed(3)).shard(dataset_size, world_size, rank)
        for rank in range(world_size)
    ]
    epoch = [list(sampler) for sampler in samplers]
    order = torch.randperm(dataset_size, generator=torch.Generator().manual_seed(3)).tolist()
    padded = (order * 2)[: len(samplers[0]) * world_size]
    assert epoch == [padded[rank::world_size] for rank in range(world_size)]
    assert sorted(set(sum(epoch, []))) == list(range(dataset_size))
    states = [sampler.state_dict(consumed=2) for sampler in samplers]
    following = [list(sampler) for sampler in samplers]
    for rank, state in enumerate(states):
        resumed = ResumableShuffle(torch.Generator().manual_seed(99)).shard(dataset_size, world_size, rank)
        resumed.load_state_dict(state)
        assert list(resumed) == epoch[rank][2:]
        assert list(resumed) == following[rank]
