"""Grading a class with nbgrader: the chapters' exercises as assignments, and the teacher's steps.

Chapter: the teacher's guide, "Grading a class with nbgrader". Not part of ``fedtl_helpers``
(the students' package): a teacher's tool, like ``deploy/``, run as ``python3 dev.py classroom``
(``python -m classroom`` from the repository root). ``assignments`` builds nbgrader's source
assignments from the chapters, ``grading`` runs nbgrader's own commands, ``outcomes`` says what
happened to each submission. No TensorFlow, and no nbgrader import: nbgrader runs in its own
environment, ``.venv-classroom``.
"""
