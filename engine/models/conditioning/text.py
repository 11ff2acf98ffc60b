"""A tokenizer for the built-in text encoder: a word vocabulary plus hashed fallbacks.

Words from the training captions get their own id. Every word, known or not, also maps to
hashed character trigrams (fastText style), and an unknown word to one of `oov_buckets`
hashed ids, so "violins", "upright" or a typo still land near the words they resemble.
Hashes are blake2b, so ids are the same in every process and on every machine.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable

PAD, UNK_BASE = 0, 1
_WORD = re.compile(r"[a-z]+|[0-9]+")


def words(text: str) -> list[str]:
    """Lower-case words and numbers; numbers are kept whole ("120"), punctuation dropped."""
    return _WORD.findall(text.lower())


def _bucket(s: str, n: int) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") % n


def build_vocab(texts: Iterable[str], min_count: int = 1, max_size: int = 4000) -> list[str]:
    """Words of `texts`, most frequent first (ties alphabetical), at most `max_size`."""
    counts = Counter(w for t in texts for w in words(t))
    ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return ranked[:max_size]


class Tokenizer:
    """Text -> (word ids, trigram ids per word). Id 0 is padding throughout."""

    def __init__(
        self, vocab: list[str], oov_buckets: int = 64, ngram_buckets: int = 2048, max_words: int = 32
    ) -> None:
        self.vocab = list(vocab)
        self.oov_buckets, self.ngram_buckets, self.max_words = oov_buckets, ngram_buckets, max_words
        self._index = {w: i for i, w in enumerate(self.vocab)}
        self.num_word_ids = 1 + oov_buckets + len(self.vocab)
        self.max_ngrams = 8

    def word_id(self, w: str) -> int:
        i = self._index.get(w)
        if i is not None:
            return 1 + self.oov_buckets + i
        return UNK_BASE + _bucket("w:" + w, self.oov_buckets)

    def ngram_ids(self, w: str) -> list[int]:
        padded = f"<{w}>"
        grams = [padded[i : i + 3] for i in range(max(1, len(padded) - 2))]
        ids = sorted({1 + _bucket("g:" + g, self.ngram_buckets - 1) for g in grams})
        return ids[: self.max_ngrams]

    def encode(self, texts: list[str]):
        """-> (ids (N, L) int64, ngrams (N, L, G) int64); L >= 1 (an empty text is one pad)."""
        import torch

        toks = [words(t)[: self.max_words] for t in texts]
        length = max(1, max((len(t) for t in toks), default=1))
        ids = torch.zeros(len(texts), length, dtype=torch.long)
        grams = torch.zeros(len(texts), length, self.max_ngrams, dtype=torch.long)
        for n, tok in enumerate(toks):
            for i, w in enumerate(tok):
                ids[n, i] = self.word_id(w)
                g = self.ngram_ids(w)
                grams[n, i, : len(g)] = torch.tensor(g, dtype=torch.long)
        return ids, grams
