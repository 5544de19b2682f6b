"""Test session set-up: nothing is written to the user's home, and one Ray serves all tests.

Every cache and state folder (HOME, PREFECT_HOME, Ray's temp and token, matplotlib, torch, HF)
points into one temporary folder made for the session; Ray's temp folder is kept short because
its socket paths break past 107 bytes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="signmae-test-home-"))
_RAY_TMP = tempfile.mkdtemp(prefix="smr-", dir="/tmp")
for _var, _sub in {
    "HOME": "home",
    "PREFECT_HOME": "prefect",
    "XDG_CACHE_HOME": "cache",
    "MPLCONFIGDIR": "mpl",
    "TORCH_HOME": "torch",
    "HF_HOME": "hf",
}.items():
    os.environ[_var] = str(_SESSION_HOME / _sub)
    (_SESSION_HOME / _sub).mkdir(parents=True, exist_ok=True)
os.environ["SIGNMAE_RAY_TMPDIR"] = _RAY_TMP
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("RAY_ADDRESS", None)

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(
    os.environ.get("SIGNMAE_REAL_DATA") or REPO_ROOT.parent / "shared" / "data" / "real"
).resolve()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except ImportError:
        pass
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)
    shutil.rmtree(_RAY_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One local Ray (2 CPUs, no dashboard) for the whole session; shut down at the end."""
    from pipelines.ray_runtime import ensure_ray
    from signmae_core.config import RayConfig

    ensure_ray(RayConfig(num_cpus=2, temp_dir=_RAY_TMP))
    yield


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One temporary Prefect server (and database) for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The shared real clips, read in place. Absent on a developer's laptop the tests that need
    them skip; under CI (`CI` set) an absent folder is a failure, never a silent skip."""
    if not REAL_DATA.is_dir():
        message = f"real test data not found at {REAL_DATA}"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the real-data tests", pytrace=False)
        pytest.skip(message)
    return REAL_DATA
