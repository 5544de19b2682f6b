"""Extra CLI commands that live beside their stage: each entry registers one subcommand.

An entry is `register(subparsers, add_config_args)`; it adds a parser and sets `func`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import baselines_cmd, inspect_cmd, predict_cmd, serve_cmd, status_cmd

REGISTER: list[Callable[[Any, Callable[[Any], None]], None]] = [
    inspect_cmd.register,  # inspect VIDEO_ID [--masks]
    predict_cmd.register,  # predict VIDEO..., export-encoder
    baselines_cmd.register,  # baselines: raw-pixel / hand-keypoint 1-NN, keypoint classifier
    serve_cmd.register,  # serve: Prefect server, worker, deployments and a Ray head on 127.0.0.1
    status_cmd.register,  # status, gc
]
