"""`broker faults --kill-active` needs PostgreSQL: without it, a usage error that says so, before
any broker starts."""

from __future__ import annotations

from typer.testing import CliRunner

from shared.ops.cli import app


def test_kill_active_without_a_database_is_a_usage_error_naming_eb_database_url() -> None:
    result = CliRunner().invoke(app, ["faults", "--kill-active"], env={"EB_DATABASE_URL": None})
    assert result.exit_code == 2, result.output
    assert "--kill-active needs PostgreSQL" in result.output
    assert "EB_DATABASE_URL" in result.output


def test_a_database_url_that_is_not_postgres_is_refused() -> None:
    result = CliRunner().invoke(
        app, ["faults", "--kill-active"], env={"EB_DATABASE_URL": "mysql://u:secret@host/db"}
    )
    assert result.exit_code == 2, result.output
    assert "must be a postgresql:// URL" in result.output
    assert "secret" not in result.output
