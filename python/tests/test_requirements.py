"""Skips (with the reason) instead of failing where numpy or the extension is missing."""
import pytest

from conftest import MISSING


def test_numpy_and_the_extension_import():
    if MISSING:
        pytest.skip("the Python tests need numpy (python3-numpy) and the built extension "
                    "(PYTHONPATH=build/python): %s" % MISSING)
