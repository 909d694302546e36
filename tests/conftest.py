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


def pytest_configure(config):
    # Hypothesis warns when it prints a falsifying example that holds one of the ~100 KB
    # values of tests/strategies.py. Raised as an error, that warning would replace the
    # report of the real failure by FlakyStrategyDefinition.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning",
    )
