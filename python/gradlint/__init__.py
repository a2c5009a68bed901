"""gradlint: a static linter for gradient-reset bugs in PyTorch and Rust training code.

The package ships the ``gradlint`` binary; :func:`find_gradlint_bin` locates it.
"""

from gradlint.__main__ import find_gradlint_bin

__all__ = ["find_gradlint_bin"]
