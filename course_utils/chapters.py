"""The course's chapters, in one table: every name a chapter goes by is derived from its row here.

Chapter 3 is the notebook ``notebooks/03_normalization.ipynb``, the solutions module ``solutions.ch03_normalization``,
the exercise ids ``3.1``, ``3.2``, ... and the heading ``# 3. Normalization (정규화 기법)``. Its topics are the rows
of the README's map "Where each concept lives" (concept, concept modules, production kernels, test files), which
``python -m course_utils sync-stubs`` rewrites from this table and the exercise registry.

Pure data: nothing here imports torch, Triton or the harness.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

EXERCISE_ID = re.compile(r"(\d+)\.(\d+)")  # "3.2": chapter 3, its exercise 2


@dataclass(frozen=True)
class Topic:
    """One row of the README's concept map: what a chapter teaches and where it lives.

    ``modules`` are concept modules of ``course_utils``, ``kernels`` modules of ``course_utils.kernels``, ``tests``
    file stems under ``tests/``. The topic's exercises are the chapter's from number ``first_exercise`` up to the
    next topic's first (the last topic takes the rest, so an exercise added at the end of a chapter joins it)."""
    concept: str
    modules: tuple[str, ...]
    kernels: tuple[str, ...] = ()
    tests: tuple[str, ...] = ()
    first_exercise: int = 1


@dataclass(frozen=True)
class Chapter:
    number: int
    slug: str  # notebooks/NN_<slug>.ipynb, solutions/chNN_<slug>.py
    title: str  # English, as the notebook's heading has it
    korean_title: str  # the seed's heading, in parentheses in the notebook's (chapter 8's seed heading is English)
    topics: tuple[Topic, ...] = ()
    # Exercise ids are stable keys of learners' progress files, so a new exercise takes the next free id even when it
    # belongs earlier in the notebook: (id, the id it sits before, why).
    placed_before: tuple[tuple[str, str, str], ...] = ()

    def notebook_order(self, exercise_ids: list[str]) -> list[str]:
        """This chapter's ids among ``exercise_ids`` in the order its notebook shows them (``placed_before``)."""
        order = [i for i in exercise_ids if i.startswith(self.exercise_prefix)]
        for moved, before, _ in self.placed_before:
            order.remove(moved)
            order.insert(order.index(before), moved)
        return order

    @property
    def heading(self) -> str:
        """The notebook's title line without its ``# ``: ``3. Normalization (정규화 기법)``."""
        return f"{self.number}. {self.title} ({self.korean_title})"

    @property
    def notebook(self) -> Path:
        """Relative to the repository root: ``notebooks/03_normalization.ipynb``."""
        return Path("notebooks") / f"{self.number:02d}_{self.slug}.ipynb"

    @property
    def solutions_module(self) -> str:
        """``solutions.ch03_normalization``: its ``EXERCISES`` are this chapter's exercises, in order."""
        return f"solutions.ch{self.number:02d}_{self.slug}"

    @property
    def exercise_prefix(self) -> str:
        """What this chapter's exercise ids start with: ``"3."``."""
        return f"{self.number}."

    @property
    def modules(self) -> tuple[str, ...]:
        return _union(t.modules for t in self.topics)

    @property
    def kernels(self) -> tuple[str, ...]:
        return _union(t.kernels for t in self.topics)

    @property
    def test_files(self) -> tuple[Path, ...]:
        """Relative to the repository root: ``tests/test_normalization.py``, ..."""
        return tuple(Path("tests") / f"{stem}.py" for stem in _union(t.tests for t in self.topics))

    def topic_exercises(self, exercise_ids: list[str]) -> list[tuple[Topic, list[str]]]:
        """Each topic with its exercises among ``exercise_ids`` (the others' ids are ignored)."""
        numbers = [(int(m[2]), i) for i in exercise_ids if (m := EXERCISE_ID.fullmatch(i)) and int(m[1]) == self.number]
        firsts = [t.first_exercise for t in self.topics[1:]] + [None]
        return [(topic, [i for n, i in numbers if n >= topic.first_exercise and (end is None or n < end)])
                for topic, end in zip(self.topics, firsts)]


def _union(groups) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for group in groups for name in group))


CHAPTERS: tuple[Chapter, ...] = (
    Chapter(0, "start_here", "Start here", "시작하기"),
    Chapter(1, "backpropagation", "Backpropagation in Transformers", "역전파", (
        Topic("gradient flow, residuals, Pre/Post-LN", ("gradflow",), (), ("test_gradflow",)),
        Topic("stable softmax, online softmax", ("stability",), ("softmax",), ("test_stability", "test_kernels"),
              first_exercise=2),
        Topic("SwiGLU, gradient clipping", ("models", "training"), ("swiglu",),
              ("test_kernels", "test_solutions_ch00_ch01", "test_models"), first_exercise=5),
    )),
    Chapter(2, "initialization", "Initialization", "초기화 전략", (
        Topic("Xavier, He, GPT-2 init, tying, μP", ("initialization", "models"), ("randn",),
              ("test_initialization",)),
    )),
    Chapter(3, "normalization", "Normalization", "정규화 기법", (
        Topic("LayerNorm, RMSNorm, Pre-LN growth, QK-norm, soft-capping", ("normalization",), ("rmsnorm", "layernorm"),
              ("test_normalization", "test_kernels")),
    )),
    Chapter(4, "loss_functions", "Loss functions", "손실 함수", (
        Topic("cross-entropy, smoothing, masking", ("losses",), ("cross_entropy",), ("test_losses", "test_kernels")),
    )),
    Chapter(5, "optimization", "Optimization", "최적화 알고리즘 심화", (
        Topic("AdamW, decay groups, accumulation, DDP, Adafactor", ("optim", "training", "distributed"), ("adamw",),
              ("test_optim", "test_kernels")),
    )),
    Chapter(6, "token_prediction", "Token prediction", "토큰 예측의 이해", (
        Topic("temperature, top-k/p, min-p, penalties, beam search", ("sampling", "charlm"), ("gumbel_sampling",),
              ("test_sampling",)),
    )),
    Chapter(7, "long_sequences", "Long sequences", "긴 시퀀스 학습", (
        Topic("RoPE and its scalings, FlashAttention, ring attention", ("rope", "attention", "distributed"),
              ("flash_attention",), ("test_rope", "test_attention", "test_kernels", "test_models")),
    ), placed_before=(("7.6", "7.5", "tiled attention in PyTorch is the stepping stone to 7.5's Triton kernel"),)),
    Chapter(8, "further_questions", "Further questions and a capstone run", "Further Questions", (
        Topic("schedules, decay, temperature, spikes, capstone", ("further", "training"), (), ("test_further",)),
    )),
)


def chapter(number: int) -> Chapter:
    """The chapter numbered ``number``; KeyError if there is none."""
    for ch in CHAPTERS:
        if ch.number == number:
            return ch
    raise KeyError(f"no chapter {number}; the chapters are {CHAPTERS[0].number} to {CHAPTERS[-1].number}")


def chapter_of(where: str | os.PathLike) -> Chapter:
    """The chapter of an exercise id (``"3.2"``), or of a path whose file name is a chapter's notebook or solutions
    module (``notebooks/03_normalization.ipynb``, ``solutions/ch03_normalization.py``); KeyError otherwise."""
    text = os.fspath(where)
    if m := EXERCISE_ID.fullmatch(text):
        return chapter(int(m[1]))
    name = Path(text).name
    for ch in CHAPTERS:
        if name in (ch.notebook.name, ch.solutions_module.split(".")[-1] + ".py"):
            return ch
    raise KeyError(f"{text!r} is no exercise id and no chapter's notebook or solutions module "
                   f"(a chapter's notebook is named like {CHAPTERS[3].notebook.name})")
