"""The wheel carries templates and migrations; no model change lacks its migration."""

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_contains_templates_and_migrations(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("django_qb_oauth-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "qb_oauth/migrations/0001_initial.py" in names
    assert any(n.startswith("qb_oauth/templates/qb_oauth/") and n.endswith(".html") for n in names)
    assert not any(n.startswith(("tests/", "example_project/", "benchmarks/")) for n in names)


@pytest.mark.django_db
def test_no_missing_migrations():
    out = io.StringIO()
    call_command("makemigrations", "qb_oauth", "--check", "--dry-run", stdout=out)
