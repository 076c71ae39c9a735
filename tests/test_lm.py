"""``ncdepth-lm``: the topic-help corpus and its windows, the causal language model, and a tiny job whose
token-level measurements of the initial network equal the functional metrics on the same token states;
its report's table and figure; every ``lm_experiment`` composes and validates."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ncdepth.cli import CONFIG_DIR
from ncdepth.cli.report import main as report_main
from ncdepth.data.topic_text import TOKEN, token_windows, topic_corpus
from ncdepth.metrics import LayerTap, neural_collapse
from ncdepth.models.causal_lm import CausalLM
from ncdepth.report.style import fits_page, image_size_inches
from ncdepth.rundir import METRICS_FILE, SUMMARY_FILE, read_json
from ncdepth.training.lm_job import LMJob, run_job
from ncdepth.validation import from_node

NCDEPTH_LM = Path(sys.executable).parent / "ncdepth-lm"
TINY = {"train_windows": 12, "epochs": 1, "width": 16, "heads": 2, "every_n_epochs": 1}


def lm_config(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="lm", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


# -- the corpus ------------------------------------------------------------------------------------


def test_the_corpus_is_every_token_of_the_topic_help_numbered_by_frequency() -> None:
    from pydoc_data.topics import topics

    corpus = topic_corpus()
    text = "\n".join(topics[name] for name in sorted(topics))
    tokens = TOKEN.findall(text)
    assert [corpus.vocabulary[i] for i in corpus.ids[:50].tolist()] == tokens[:50]
    assert corpus.ids.numel() == len(tokens) > 100_000 and corpus.num_classes == len(set(tokens)) > 4_000
    counts = torch.bincount(corpus.ids, minlength=corpus.num_classes)
    assert (counts >= 1).all() and (counts[:-1] >= counts[1:]).all()  # most frequent first, none absent
    assert re.fullmatch(r"[0-9a-f]{16}", corpus.digest)


def test_windows_are_consecutive_and_every_tenth_is_held_out() -> None:
    ids = torch.arange(1, 100)  # 99 tokens: 11 windows of 9
    train, test = token_windows(ids, context=8, test_every=5)
    assert test[:, 0].tolist() == [1, 46, 91] and train.shape == (8, 9) and test.shape == (3, 9)
    assert torch.equal(torch.cat([train, test]).flatten().sort().values, ids)
    with pytest.raises(ValueError, match="fewer than test_every"):
        token_windows(ids[:20], context=8, test_every=5)


# -- the model -------------------------------------------------------------------------------------


def test_the_language_model_is_causal_with_a_tied_head() -> None:
    torch.manual_seed(0)
    model = CausalLM(vocabulary=50, width=16, depth=3, heads=4, context=12).eval()
    ids = torch.randint(0, 50, (2, 12))
    changed = ids.clone()
    changed[:, 7] = (ids[:, 7] + 1) % 50
    with torch.no_grad():
        logits, after = model(ids), model(changed)
    assert logits.shape == (2, 12, 50)
    assert torch.equal(logits[:, :7], after[:, :7]) and not torch.allclose(logits[:, 7:], after[:, 7:])
    assert model.classifier.weight is model.token_embedding.weight
    assert model.layer_names == ["blocks.0", "blocks.1", "blocks.2", "ln_f"]
    with pytest.raises(ValueError, match="exceed the context of 12"):
        model(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match="model.width must be a multiple of model.heads"):
        CausalLM(vocabulary=50, width=10, depth=1, heads=4, context=12)


# -- a job -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[LMJob, Path]:
    config = {**lm_config(), **TINY}
    job = from_node(LMJob, "", config)
    run_dir = tmp_path_factory.mktemp("lm_run")
    run_job(job, run_dir, config)
    return job, run_dir


def test_the_callback_measures_the_initial_network_as_the_functional_metrics_do(
    tiny_run: tuple[LMJob, Path],
) -> None:
    """Epoch 0 of ``metrics.csv`` (two streaming passes over the train windows, token by token, only
    the tokens that are a next token at least twice) against :func:`neural_collapse` on all token
    states of the same initial network at once."""
    job, run_dir = tiny_run
    corpus = topic_corpus()
    train, _ = token_windows(corpus.ids, job.context, job.test_every)
    train = train[: job.train_windows]
    pl.seed_everything(job.seed, workers=True, verbose=False)
    model = CausalLM(corpus.num_classes, job.width, job.depth, job.heads, job.context).eval()
    with torch.no_grad(), LayerTap(model, model.layer_names, tokens=True) as tap:
        logits = model(train[:, :-1]).flatten(0, 1)
        states = tap.features
    labels = train[:, 1:].flatten()
    repeated = sum(count >= job.min_class_count for count in Counter(labels.tolist()).values())

    metrics = pd.read_csv(run_dir / METRICS_FILE)
    initial = metrics[(metrics["epoch"] == 0) & (metrics["split"] == "train")]
    assert sorted(initial["layer"].unique()) == sorted(model.layer_names)
    for layer in model.layer_names:
        expected = neural_collapse(
            states[layer].double(),
            labels,
            corpus.num_classes,
            weight=model.classifier.weight.double() if layer == "ln_f" else None,
            logits=logits if layer == "ln_f" else None,
            empty_classes="drop",
            min_class_count=job.min_class_count,
        )
        got = initial[initial["layer"] == layer].set_index("metric")["value"]
        assert got["num_classes_present"] == expected["num_classes_present"] == repeated
        for name in (
            "nc1",
            "cdnv",
            "nc2_equinorm",
            "nc2_equiangle",
            "ncc_acc",
            *(("nc3", "nc4") if layer == "ln_f" else ()),
        ):
            assert math.isclose(got[name], expected[name], rel_tol=1e-5, abs_tol=1e-9), (layer, name)


def test_the_summary_names_the_corpus_and_the_run_is_measured_each_epoch(
    tiny_run: tuple[LMJob, Path],
) -> None:
    job, run_dir = tiny_run
    summary = read_json(run_dir / SUMMARY_FILE)
    corpus = summary["corpus"]
    assert corpus["source"] == "pydoc_data.topics" and corpus["digest"] == topic_corpus().digest
    assert corpus["train_next_tokens"] == job.train_windows * job.context
    assert summary["job"]["width"] == job.width and summary["train_loss"] > 0
    epochs = pd.read_csv(run_dir / METRICS_FILE)["epoch"].unique().tolist()
    assert epochs == [0, 1] and set(summary["final_metrics"]) == {"train", "test"}


def test_a_sweep_is_reported_with_the_token_table_and_a_page_sized_figure(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    overrides = [f"{key}={value}" for key, value in TINY.items() if key != "width"]
    result = subprocess.run(
        [str(NCDEPTH_LM), *overrides, "width=8,16", f"hydra.sweep.dir={sweep}", "-m"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert report_main([str(sweep)]) == 0
    report = sweep / "report"
    table = pd.read_csv(report / "token_collapse.csv")
    assert sorted(table["width"].unique()) == [8, 16] and set(table["epoch"]) == {0, 1}
    assert table.groupby(["run", "epoch"])["layer"].apply(list).map(len).eq(3).all()
    assert table.loc[table["layer"] == "ln_f", "nc4"].notna().all()
    assert table.loc[table["layer"] != "ln_f", "nc4"].isna().all()
    assert fits_page(*image_size_inches(report / "figures" / "token_collapse.png"))
    runs = pd.read_csv(report / "runs.csv")
    assert runs["status"].eq("finished").all() and runs["app"].eq("lm").all()


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIG_DIR / "lm_experiment").glob("*.yaml")))
def test_every_lm_experiment_composes_and_validates(experiment: str) -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="lm", overrides=[f"+lm_experiment={experiment}"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert params["width"] == "32,64,128"
    for width in params["width"].split(","):
        config = {key: cfg[key] for key in cfg if key != "hydra"}
        job = from_node(LMJob, "", {**OmegaConf.to_container(OmegaConf.create(config)), "width": int(width)})
        assert job.width == int(width)
