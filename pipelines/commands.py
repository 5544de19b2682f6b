"""Extra CLI commands that live beside their stage: each entry registers one subcommand.

An entry is `register(subparsers, add_config_args)`; it adds a parser and sets `func`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

REGISTER: list[Callable[[Any, Callable[[Any], None]], None]] = []

from . import predict_cmd  # noqa: E402  predict, export-encoder

REGISTER.append(predict_cmd.register)

from . import inspect_cmd  # noqa: E402  inspect

REGISTER.append(inspect_cmd.register)
