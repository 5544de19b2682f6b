"""Extra CLI commands that live beside their stage: each entry registers one subcommand.

An entry is `register(subparsers, add_config_args)`; it adds a parser and sets `func`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

REGISTER: list[Callable[[Any, Callable[[Any], None]], None]] = []
