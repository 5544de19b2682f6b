"""Where artifacts live and how Ray runs."""

from __future__ import annotations

from pydantic import Field

from .base import Section


class StoreConfig(Section):
    """The artifact store: one root for every dataset and stage (see docs/STORE.md)."""

    root: str = Field(
        "artifacts",
        description="Local path or filesystem URI (e.g. s3://bucket/prefix) of the artifact store.",
    )
    lock_timeout_s: float = Field(
        600.0, ge=0, description="How long a stage waits for another writer of the same output."
    )


class RayConfig(Section):
    """How the Ray-parallel stages get their cluster."""

    address: str | None = Field(
        None, description="Ray cluster address; RAY_ADDRESS overrides it; none starts a local Ray."
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray (None: all).")
    temp_dir: str | None = Field(
        None, description="Temp folder of a local Ray; keep it short (socket paths < 107 bytes)."
    )
    include_dashboard: bool = Field(False, description="Start the Ray dashboard with a local Ray.")
    dashboard_host: str = Field("127.0.0.1", description="Interface the dashboard binds to.")
