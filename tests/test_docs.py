"""The Examples sections of the public docstrings run as doctests."""

import doctest

import pytest

import fastmnist.datasets._batching
import fastmnist.datasets._idx_file
import fastmnist.datasets._mnist

MODULES = [fastmnist.datasets._idx_file, fastmnist.datasets._mnist, fastmnist.datasets._batching]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples(module, shared_data):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
