"""Where artifacts live and how Ray runs."""

from __future__ import annotations

from .base import Section, runtime_field


class StoreConfig(Section):
    """The artifact store: one root for every dataset and stage (see docs/STORE.md)."""

    root: str = runtime_field(
        "artifacts",
        description="Local path or filesystem URI (e.g. s3://bucket/prefix) of the artifact store.",
    )
    lock_timeout_s: float = runtime_field(
        600.0, ge=0, description="How long a stage waits for another writer of the same output."
    )


class RayConfig(Section):
    """How the Ray-parallel stages get their cluster."""

    address: str | None = runtime_field(
        None, description="Ray cluster address; RAY_ADDRESS overrides it; none starts a local Ray."
    )
    num_cpus: int | None = runtime_field(None, ge=1, description="CPUs of a local Ray (None: all).")
    temp_dir: str | None = runtime_field(
        None, description="Temp folder of a local Ray; keep it short (socket paths < 107 bytes)."
    )
    include_dashboard: bool = runtime_field(
        False, description="Start the Ray dashboard with a local Ray."
    )
    dashboard_host: str = runtime_field(
        "127.0.0.1", description="Interface the dashboard binds to."
    )
