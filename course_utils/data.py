"""Tiny data sets that cost nothing to make and have a known answer.

``MarkovChain``: token sequences from a fixed random transition matrix. The best any model can do
is the chain's entropy rate, so a training curve has a floor the learner can see.

Used by chapters 1, 4 and 5.
"""
from __future__ import annotations

from pathlib import Path

import torch

CORPUS_PATH = Path(__file__).resolve().parent / "data_files" / "corpus.txt"


def load_corpus() -> str:
    """The course's small English text (about 2.7 KB, written for the course, shipped in the package)."""
    return CORPUS_PATH.read_text(encoding="utf-8")


class MarkovChain:
    """A first-order Markov chain over ``vocab_size`` tokens with peaked random transitions.

    ``concentration`` < 1 makes each row of the transition matrix favour a few next tokens.
    """

    def __init__(self, vocab_size: int = 32, concentration: float = 0.3, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        alpha = torch.full((vocab_size,), concentration)
        gamma = torch._standard_gamma(alpha.expand(vocab_size, vocab_size).contiguous(), generator=g)
        self.transitions = gamma / gamma.sum(dim=1, keepdim=True)  # (V, V), rows sum to 1
        self.vocab_size = vocab_size

    def stationary(self) -> torch.Tensor:
        """The stationary distribution pi with pi P = pi, by power iteration."""
        pi = torch.full((self.vocab_size,), 1.0 / self.vocab_size, dtype=torch.float64)
        P = self.transitions.double()
        for _ in range(1000):
            pi = pi @ P
        return pi

    def entropy_rate(self) -> float:
        """Nats per token: the lowest cross-entropy a next-token predictor can reach."""
        P = self.transitions.double()
        row_entropy = -(P * torch.log(P.clamp_min(1e-300))).sum(dim=1)
        return float(self.stationary() @ row_entropy)

    def sample(self, batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
        """(batch, length + 1) token ids; inputs are ``[:, :-1]``, next-token targets ``[:, 1:]``."""
        tokens = torch.empty(batch, length + 1, dtype=torch.long)
        tokens[:, 0] = torch.randint(self.vocab_size, (batch,), generator=generator)
        for t in range(length):
            tokens[:, t + 1] = torch.multinomial(self.transitions[tokens[:, t]], 1, generator=generator)[:, 0]
        return tokens
