"""The side-by-side benchmark against PyTorch, Keras and scikit-learn (``fastmnist bench``).

``driver`` runs it, ``worker`` is one measurement in a fresh process, ``models`` describes
the reference models, ``report`` turns the raw runs into medians, targets, markdown and
charts. Importing this package imports none of the frameworks.
"""

from .driver import add_arguments, main, run

__all__ = ["add_arguments", "main", "run"]
