"""Test-wide settings: hypothesis runs are reproducible and leave no database behind."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "h5record",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("h5record")
