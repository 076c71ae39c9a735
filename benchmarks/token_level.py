"""Token-level collapse at GPT-2's size on CPU: the README's token example scaled up, timed once.

A GPT-2-shaped causal language model with random weights, built from ``torch.nn`` (vocabulary 50,257, ``d`` =
768, 12 heads, ``--depth`` pre-norm blocks, a tied LM head), reads ``--sequences`` sequences of ``--context``
+ 1 tokens drawn from a Zipf law over the vocabulary (a corpus uses a part of it); every position predicts
the next token. ``NeuralCollapse(50_257, empty_classes="drop")`` measures every block's output and the final
layer norm (the classifier layer, with the LM head's weight and logits for ``nc3``/``nc4``) in two passes,
as the README's example does.

Printed: the number of tokens measured (``num_classes_present``), the wall time of the model's forward passes
and of the metric (``update`` of both passes, ``next_phase()``, ``compute()``), and the peak resident memory
of the process (``VmHWM``) with the resident memory before the metric was created (model and corpus), and
the CPU time of each part (on a shared machine the wall time also counts the waits for a core). Not
part of ``make bench`` (one run takes minutes)::

    OMP_NUM_THREADS=1 python benchmarks/token_level.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from ncdepth.metrics import LayerTap, NeuralCollapse

GPT2_VOCABULARY, GPT2_WIDTH = 50_257, 768


class GPT(nn.Module):
    """Token and position embeddings, pre-norm causal transformer blocks, a final layer norm, a tied head."""

    def __init__(self, vocabulary: int, width: int, depth: int, context: int, heads: int = 12) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocabulary, width), nn.Embedding(context, width)
        self.h = nn.ModuleList(
            nn.TransformerEncoderLayer(
                width, heads, 4 * width, 0.0, "gelu", batch_first=True, norm_first=True
            )
            for _ in range(depth)
        )
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocabulary, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, ids: Tensor) -> Tensor:
        causal = nn.Transformer.generate_square_subsequent_mask(ids.shape[1])
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
        for block in self.h:
            x = block(x, src_mask=causal, is_causal=True)
        return self.lm_head(self.ln_f(x))


def resident_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vocabulary", type=int, default=GPT2_VOCABULARY)
    parser.add_argument("--width", type=int, default=GPT2_WIDTH)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--context", type=int, default=127, help="positions per sequence (next tokens)")
    parser.add_argument("--sequences", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16, help="sequences per forward pass")
    parser.add_argument("--min-class-count", type=int, default=1)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = GPT(args.vocabulary, args.width, args.depth, args.context).eval()
    zipf = 1.0 / torch.arange(1, args.vocabulary + 1, dtype=torch.float64)
    corpus = torch.multinomial(zipf, args.sequences * (args.context + 1), replacement=True)
    corpus = corpus.view(args.sequences, args.context + 1)
    layers = [f"h.{i}" for i in range(args.depth)] + ["ln_f"]
    before = resident_bytes("VmRSS")
    metric = NeuralCollapse(
        args.vocabulary,
        classifier_layer="ln_f",
        classifier_weight=lambda: model.lm_head.weight,
        empty_classes="drop",
        min_class_count=args.min_class_count,
    )
    seconds = {"forward": 0.0, "metric": 0.0}
    cpu = {"forward": 0.0, "metric": 0.0}

    def clock(kind: str, function, *arguments, **options):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = function(*arguments, **options)
        seconds[kind] += time.perf_counter() - start
        cpu[kind] += time.process_time() - start_cpu
        return result

    start = time.perf_counter()
    with torch.no_grad(), LayerTap(model, layers, tokens=True) as tap:
        for second in (False, True):
            for ids in corpus.split(args.batch):
                logits = clock("forward", model, ids[:, :-1])
                mask = torch.ones(ids.shape[0], ids.shape[1] - 1, dtype=torch.bool)
                features = clock("metric", tap.token_features, mask)
                outputs = clock("metric", logits.__getitem__, mask) if second else None
                clock("metric", metric.update, features, ids[:, 1:][mask], logits=outputs)
            if not second:
                clock("metric", metric.next_phase)
        results = clock("metric", metric.compute)
    total = time.perf_counter() - start
    tokens = args.sequences * args.context
    print(
        f"V = {args.vocabulary:,}, d = {args.width}, {args.depth} blocks, {tokens:,} next tokens, "
        f"{len(layers)} layers measured, threads = {torch.get_num_threads()}, torch {torch.__version__}"
    )
    print(
        f"tokens measured (num_classes_present): {int(results['ln_f']['num_classes_present']):,} "
        f"(min_class_count = {args.min_class_count})"
    )
    print(
        f"wall: {total:.1f} s in all = model forward {seconds['forward']:.1f} s (both passes) + metric "
        f"{seconds['metric']:.1f} s (token_features, update x 2, next_phase, compute)"
    )
    print(
        f"CPU time (all threads; the wall time of an idle machine at one thread): model forward "
        f"{cpu['forward']:.1f} s, metric {cpu['metric']:.1f} s"
    )
    print(
        f"peak resident memory {resident_bytes('VmHWM') / 2**30:.2f} GiB "
        f"(model and corpus before the metric: {before / 2**30:.2f} GiB)"
    )
    for layer in layers:
        r = results[layer]
        print(
            f"{layer:>5}: ncc_acc {r['ncc_acc']:.4f}  nc1 {r['nc1']:.4g}  nc1_rank_normalized "
            f"{r['nc1_rank_normalized']:.4g}  nc1_trace_ratio {r['nc1_trace_ratio']:.4g}  cdnv {r['cdnv']:.4g}"
            + (f"  nc3 {r['nc3']:.4g}  nc4 {r['nc4']:.4g}" if "nc4" in r else "")
        )


if __name__ == "__main__":
    main()
