"""Reference answers to every exercise, one module per notebook, in course order.

Each module defines ``CHAPTER`` (its title) and ``EXERCISES`` (a list of
:class:`course_utils.harness.exercises.Exercise`): the reference answer, the cases ``check`` runs, and the
realistic mistakes whose hints it shows. Where an answer is a building block later chapters use,
it lives in course_utils and is re-exported here.
"""
CHAPTERS = [
    "ch00_start_here",
    "ch01_backpropagation",
    "ch02_initialization",
    "ch03_normalization",
    "ch04_loss_functions",
    "ch05_optimization",
    "ch06_token_prediction",
    "ch07_long_sequences",
    "ch08_further_questions",
]
