"""`broker up` gives each process only the variables it needs: a secret stays with its service."""

from __future__ import annotations

from shared.ops.embedded import service_environment
from shared.ops.secured import CALLOUT

EVERYTHING = {
    "PATH": "/usr/bin",
    "EB_POOLS": "/etc/pools.toml",
    "EB_OIDC_ISSUER": "https://id.example",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
    "EB_CANFAR_TOKEN": "canfar-token",
    "EB_DIRAC_TOKEN_FILE": "/secrets/dirac",
    "EB_JBO_TOKEN": "jbo-token",
    "EB_LOCAL_SANDBOX": "true",
    "EB_RUCIO_TOKEN": "rucio-token",
    "EB_ADMIN_PASSWORD": "admin-password",
    "EB_HTTP_SECRET": "http-secret",
    "EB_HTTP_NATS_NKEY_SEED_FILE": "/data/bus/http.nk",
    "EB_LOGIN_WINDOW_S": "60",
    "EB_TOY_TOKEN": "an unknown plugin's",
    "EB_DATABASE_URL": "postgresql://broker:db-password@db/broker",
}
SHARED = {"PATH", "EB_POOLS", "EB_OIDC_ISSUER", "OTEL_EXPORTER_OTLP_ENDPOINT", "EB_TOY_TOKEN"}
#: Where the services keep their state: all three, and only they.
STATE = {"EB_DATABASE_URL"}


def test_each_service_gets_the_shared_variables_and_only_its_own_secrets() -> None:
    assert set(service_environment("launcher", EVERYTHING)) == SHARED | STATE | {
        "EB_CANFAR_TOKEN", "EB_DIRAC_TOKEN_FILE", "EB_JBO_TOKEN", "EB_LOCAL_SANDBOX",
    }  # fmt: skip
    assert set(service_environment("scheduler", EVERYTHING)) == SHARED | STATE | {"EB_RUCIO_TOKEN"}
    assert set(service_environment("offers", EVERYTHING)) == SHARED | STATE | {
        "EB_ADMIN_PASSWORD", "EB_HTTP_SECRET", "EB_HTTP_NATS_NKEY_SEED_FILE", "EB_LOGIN_WINDOW_S",
    }  # fmt: skip


def test_the_auth_callout_gets_no_service_secret() -> None:
    assert set(service_environment(CALLOUT, EVERYTHING)) == SHARED
