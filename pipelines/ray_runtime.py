"""Getting a Ray cluster: connect to `RAY_ADDRESS` when set, otherwise start a local one.

Only what this module started is shut down again; a cluster we merely connected to is left
running. A local Ray keeps its temporary files under a short folder (Ray's Unix socket paths
break past 107 bytes) and starts without a dashboard unless the config asks for one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from signmae_core.config import RayConfig


def _short_temp_dir(configured: str | None) -> str:
    if configured:
        return configured
    env = os.environ.get("SIGNMAE_RAY_TMPDIR")
    if env:
        return env
    return str(Path(tempfile.gettempdir()) / "signmae-ray")


def ensure_ray(config: RayConfig | None = None) -> bool:
    """Make sure Ray is initialized; return True when this call started it (so we own it)."""
    import ray

    config = config or RayConfig()
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS") or config.address
    if address:
        ray.init(address=address, log_to_driver=True)
        return True  # our connection, not the cluster: shutting it down only disconnects
    temp_dir = _short_temp_dir(config.temp_dir)
    if len(temp_dir) > 60:
        raise ValueError(f"Ray temp dir {temp_dir!r} is too long for Unix socket paths (>60 chars)")
    Path(temp_dir).mkdir(parents=True, exist_ok=True)
    ray.init(
        num_cpus=config.num_cpus,
        include_dashboard=config.include_dashboard,
        dashboard_host=config.dashboard_host,
        _temp_dir=temp_dir,
        configure_logging=True,
        logging_level="WARNING",
        log_to_driver=True,
    )
    return True


@contextlib.contextmanager
def ray_session(config: RayConfig | None = None) -> Iterator[None]:
    """Ray for the duration of a block: started (or connected) if needed, shut down if ours."""
    import ray

    started = ensure_ray(config)
    try:
        yield
    finally:
        if started:
            ray.shutdown()
