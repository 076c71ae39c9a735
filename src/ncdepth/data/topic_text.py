"""An English corpus that needs no download: the topic help that ships with Python (``pydoc_data.topics``).

The 79 topics (``help("FOR")`` and the like: the language reference's sections), concatenated in
sorted order of their names, are split into word-level tokens: runs of letters, digits and ``_``, and
every other non-space character alone (``\\w+|[^\\w\\s]``, case kept). About 114,000 tokens of 4,194
distinct strings; the vocabulary is every distinct token, numbered by falling frequency (ties in
string order), so class ``k`` is the ``k``-th most frequent token and every vocabulary entry occurs in
the corpus, most of them rarely (as in a language model's vocabulary).

:func:`token_windows` cuts the token stream into non-overlapping windows of ``context + 1`` tokens
(position ``t`` predicts token ``t + 1``); every ``test_every``-th window is held out as the test
split. The corpus is fixed by the Python installation: ``corpus_digest`` names it in a run's
summary, so two runs on different Pythons can be told apart.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

TOKEN = re.compile(r"\w+|[^\w\s]")
"""A word-level token: a run of word characters, or one other non-space character."""


@dataclass(frozen=True)
class TopicCorpus:
    """The token ids of the whole corpus (``(N,)``, int64) and the ``vocabulary`` (id -> string)."""

    ids: Tensor
    vocabulary: tuple[str, ...]
    digest: str

    @property
    def num_classes(self) -> int:
        return len(self.vocabulary)


@lru_cache(maxsize=1)
def topic_corpus() -> TopicCorpus:
    """The tokenised topic help of this Python (module docstring)."""
    from pydoc_data.topics import topics

    text = "\n".join(topics[name] for name in sorted(topics))
    tokens = TOKEN.findall(text)
    counts = Counter(tokens)
    vocabulary = tuple(sorted(counts, key=lambda token: (-counts[token], token)))
    index = {token: i for i, token in enumerate(vocabulary)}
    ids = torch.tensor([index[token] for token in tokens], dtype=torch.int64)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return TopicCorpus(ids, vocabulary, digest)


def token_windows(ids: Tensor, context: int, test_every: int) -> tuple[Tensor, Tensor]:
    """``(train, test)`` windows ``(n, context + 1)`` of ``ids``: consecutive non-overlapping windows
    (the last partial one dropped), window ``i`` in the test split when ``i % test_every == 0``."""
    if context < 1 or test_every < 2:
        raise ValueError(f"need context >= 1 and test_every >= 2, got {context} and {test_every}")
    count = ids.numel() // (context + 1)
    if count < test_every:
        raise ValueError(f"{ids.numel()} tokens give {count} windows of {context + 1}: fewer than test_every")
    windows = ids[: count * (context + 1)].view(count, context + 1)
    held_out = torch.arange(count) % test_every == 0
    return windows[~held_out], windows[held_out]
