"""Reference answers to every exercise, one module per chapter, in course order.

Chapter N's module is ``course_utils.chapters.chapter(N).solutions_module`` (``solutions.ch03_normalization``); the
registry (``course_utils.harness.registry``) reads the modules from that table. Each defines ``EXERCISES`` (a list
of :class:`course_utils.harness.exercises.Exercise`): the reference answer, the cases ``check`` runs, and the
realistic mistakes whose hints it shows. Where an answer is a building block later chapters use,
it lives in course_utils and is re-exported here.
"""
