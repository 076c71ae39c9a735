"""One ``ncdepth-lm`` job: train a small causal language model on the topic help of Python and measure
neural collapse at token level in every block while it trains (``ncdepth/conf/lm.yaml`` documents
every key).

The corpus is :func:`ncdepth.data.topic_text.topic_corpus` (word-level tokens, the vocabulary of every
distinct token as the classes), cut by :func:`~ncdepth.data.topic_text.token_windows`; the first
``train_windows`` train windows are trained on (``null``: all). The model is a
:class:`~ncdepth.models.causal_lm.CausalLM`, trained by :class:`~ncdepth.training.next_token.NextTokenModule`
with the real Lightning ``Trainer`` on the CPU. :class:`~ncdepth.training.NeuralCollapseCallback`
measures every block's output and ``ln_f`` at initialisation, every ``every_n_epochs`` epochs and after
the last, every position a sample labelled by its next token, with ``empty_classes="drop"`` and
``min_class_count`` (docs/metrics.md: the metrics are over the tokens that occur at least that often as
next token in the split; the test split's NCC accuracy uses the train split's means, over the tokens
both have). The run directory gets the callback's ``metrics.csv``, ``summary.json`` (with the corpus
and the final train loss) and ``figures/``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from ncdepth.data.topic_text import token_windows, topic_corpus
from ncdepth.models.causal_lm import CausalLM
from ncdepth.rundir import SUMMARY_FILE, read_json, write_json
from ncdepth.training.callback import NeuralCollapseCallback
from ncdepth.training.config import AnalysisConfig
from ncdepth.training.next_token import NextTokenModule, next_tokens, tied_head, token_features
from ncdepth.validation import check_int, check_number

log = logging.getLogger(__name__)

ANALYSIS_BATCH = 32
"""Windows per forward pass of the analysis."""


@dataclass(frozen=True)
class LMJob:
    """The validated keys of ``lm.yaml`` (every key required, none unknown: ``from_node``)."""

    context: int
    test_every: int
    train_windows: int | None
    width: int
    depth: int
    heads: int
    lr: float
    weight_decay: float
    batch_size: int
    epochs: int
    every_n_epochs: int
    min_class_count: int
    seed: int
    threads: int

    def __post_init__(self) -> None:
        for key in ("context", "width", "depth", "heads", "batch_size", "epochs", "every_n_epochs"):
            check_int(key, getattr(self, key), minimum=1)
        check_int("test_every", self.test_every, minimum=2)
        if self.train_windows is not None:
            check_int("train_windows", self.train_windows, minimum=1)
        check_number("lr", self.lr, minimum=0.0, inclusive=False)
        check_number("weight_decay", self.weight_decay, minimum=0.0, inclusive=True)
        check_int("min_class_count", self.min_class_count, minimum=1)
        check_int("seed", self.seed, minimum=0)
        check_int("threads", self.threads, minimum=1)
        if self.width % self.heads:
            raise ValueError(f"width must be a multiple of heads ({self.heads}), got {self.width}")


def run_job(job: LMJob, run_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Train and measure ``job`` (module docstring) into ``run_dir``; returns ``summary.json``'s content."""
    torch.set_num_threads(job.threads)
    corpus = topic_corpus()
    train, test = token_windows(corpus.ids, job.context, job.test_every)
    train = train[: job.train_windows]
    pl.seed_everything(job.seed, workers=True, verbose=False)
    model = CausalLM(corpus.num_classes, job.width, job.depth, job.heads, job.context)
    module = NextTokenModule(model, lr=job.lr, weight_decay=job.weight_decay)
    shuffled = torch.Generator().manual_seed(job.seed)
    callback = NeuralCollapseCallback(
        AnalysisConfig(
            every_n_epochs=job.every_n_epochs,
            measures=(),
            empty_classes="drop",
            min_class_count=job.min_class_count,
        ),
        features=token_features,
        num_classes=corpus.num_classes,
        classifier_layer=model.classifier_layer,
        classifier_weight=tied_head,
        train_dataloader=DataLoader(TensorDataset(train), batch_size=ANALYSIS_BATCH),
        test_dataloader=DataLoader(TensorDataset(test), batch_size=ANALYSIS_BATCH),
        unpack_batch=next_tokens,
        quiet=True,
        run_dir=run_dir,
        config=config,
    )
    trainer = pl.Trainer(
        max_epochs=job.epochs,
        accelerator="cpu",
        devices=1,
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
        default_root_dir=str(run_dir),
    )
    loader = DataLoader(TensorDataset(train), batch_size=job.batch_size, shuffle=True, generator=shuffled)
    trainer.fit(module, loader)
    summary = read_json(run_dir / SUMMARY_FILE)
    summary["corpus"] = {
        "source": "pydoc_data.topics",
        "digest": corpus.digest,
        "tokens": corpus.ids.numel(),
        "vocabulary": corpus.num_classes,
        "train_next_tokens": train[:, 1:].numel(),
        "test_next_tokens": test[:, 1:].numel(),
    }
    summary["train_loss"] = float(trainer.callback_metrics["train/loss"])
    summary["job"] = asdict(job)
    write_json(run_dir / SUMMARY_FILE, summary)
    return summary
