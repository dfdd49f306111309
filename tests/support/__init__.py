"""Helpers the tests share, one topic a module (pypi/warehouse's `tests/common/` is the model).

Test modules import from here, never from each other."""
