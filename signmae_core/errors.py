"""Errors a person can act on; the CLI prints their message on one line, without a traceback."""


class SignmaeError(RuntimeError):
    """Base of the project's user-facing errors."""


class InputError(SignmaeError):
    """Bad input data (a missing label file, a path outside its dataset root, ...)."""
