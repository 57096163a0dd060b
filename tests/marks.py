"""Marks shared by the test modules."""

import pytest
from django.conf import settings


def on_postgres() -> bool:
    return settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


def requires_postgres(reason: str):
    return pytest.mark.skipif(not on_postgres(), reason=f"PostgreSQL only: {reason}")
