"""deploy/kubernetes, checked offline: every manifest is valid against the Kubernetes API schemas
(`kubernetes-validate`, strict: an unknown field is an error), the manifests agree with the code and
with the NATS chart's values (variables the broker reads, the pods' names, the Secrets the docs
tell the operator to make), and the NATS node configuration those values make, rendered by the
chart's documented rules for `merge`, is one nats-server accepts.

The chart's values file has no JSON schema (nats-io/k8s ships none), so its keys were checked by
hand against chart 2.14.2's values.yaml; what is tested here is what the broker relies on."""

from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from shared.ops.cli import app
from shared.ops.site import HUB_DOMAIN
from tests.deployment import ROOT, names_the_code_reads, nats_server_test

KUBERNETES = ROOT / "deploy" / "kubernetes"
VALUES = KUBERNETES / "nats-values.yaml"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
KUBERNETES_VERSION = "1.37.0"
#: The chart's file of the server configuration, which `merge`'s include paths are relative to.
CHART_CONFIG = "/etc/nats-config/nats.conf"
RELEASE = "nats"


def manifests() -> list[dict[str, Any]]:
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path == VALUES:
            continue
        found += [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    return found


def values() -> dict[str, Any]:
    return dict(yaml.safe_load(VALUES.read_text(encoding="utf-8")))


def pod_specs() -> dict[str, dict[str, Any]]:
    workloads = [m for m in manifests() if m["kind"] in ("Deployment", "Job")]
    return {m["metadata"]["name"]: m["spec"]["template"]["spec"] for m in workloads}


def containers() -> list[dict[str, Any]]:
    specs = pod_specs().values()
    return [c for spec in specs for c in [*spec.get("initContainers", []), *spec["containers"]]]


def config_map(name: str) -> dict[str, str]:
    return next(m["data"] for m in manifests() if m["kind"] == "ConfigMap" and m["metadata"]["name"] == name)


# -- the Kubernetes schemas -----------------------------------------------------------------------


def test_every_manifest_is_valid_against_the_kubernetes_schemas() -> None:
    found = manifests()
    assert {m["kind"] for m in found} >= {"Deployment", "Service", "ConfigMap", "Job"}
    for manifest in found:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_the_validator_refuses_a_misspelt_field() -> None:
    manifest = next(m for m in manifests() if m["kind"] == "Deployment")
    broken = json.loads(json.dumps(manifest))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


# -- the manifests and the code --------------------------------------------------------------------


def test_every_variable_given_to_the_broker_is_one_it_reads() -> None:
    known = names_the_code_reads()
    given = set(config_map("eb-config"))
    for container in containers():
        given |= {variable["name"] for variable in container.get("env", [])}
    assert given <= known, f"variables nothing reads: {sorted(given - known)}"


def test_services_use_every_node_three_replicas_and_postgresql() -> None:
    settings = config_map("eb-config")
    replicas = values()["config"]["cluster"]["replicas"]
    nodes = [f"nats://{RELEASE}-{i}.{RELEASE}-headless:4222" for i in range(replicas)]
    assert settings["EB_NATS_URL"].split(",") == nodes
    assert settings["EB_STREAM_REPLICAS"] == "3" and settings["EB_MANAGE_STREAMS"] == "false"
    for name in ("eb-offers", "eb-scheduler", "eb-launcher"):
        (container,) = pod_specs()[name]["containers"]
        env = {variable["name"]: variable for variable in container["env"]}
        assert env["EB_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "eb-database", "key": "url"}
        assert env["EB_NATS_NKEY_SEED_FILE"]["value"] == f"/keys/{name.removeprefix('eb-')}.nk"


def test_a_service_runs_more_than_once_only_on_postgresql() -> None:
    for manifest in manifests():
        if manifest["kind"] != "Deployment":
            continue
        (container,) = manifest["spec"]["template"]["spec"]["containers"]
        if manifest["spec"]["replicas"] > 1:
            # A lease and the inbox claim are PostgreSQL's: on SQLite a second process is refused.
            assert "EB_DATABASE_URL" in {variable["name"] for variable in container.get("env", [])}
    deployments = {m["metadata"]["name"]: m["spec"] for m in manifests() if m["kind"] == "Deployment"}
    assert {name: spec["replicas"] for name, spec in deployments.items()} == {
        "eb-callout": 1, "eb-offers": 2, "eb-scheduler": 2, "eb-launcher": 2
    }
    assert deployments["eb-callout"]["strategy"] == {"type": "Recreate"}


def test_the_http_api_has_probes_on_its_own_port() -> None:
    (offers,) = pod_specs()["eb-offers"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in offers["ports"]}
    env = {variable["name"]: variable.get("value") for variable in offers["env"]}
    assert ports["http"] == int(env["EB_HTTP_PORT"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert offers[probe]["httpGet"] == {"path": "/capabilities", "port": "http"}


def test_the_callouts_probe_is_the_file_it_writes_while_it_answers(tmp_path: Path) -> None:
    from shared.ops.secured import SecuredBus

    (callout,) = pod_specs()["eb-callout"]["containers"]
    settings = config_map("eb-config")
    ready = SecuredBus(Path(settings["EB_DATA_DIR"])).callout_ready_file
    assert callout["readinessProbe"]["exec"]["command"] == ["test", "-f", str(ready)]


def test_the_docs_say_how_to_make_every_secret_the_manifests_name() -> None:
    volumes = [volume for spec in pod_specs().values() for volume in spec["volumes"]]
    names = {volume["secret"]["secretName"] for volume in volumes if "secret" in volume}
    for container in containers():
        for variable in container.get("env", []):
            if "valueFrom" in variable:
                names.add(variable["valueFrom"]["secretKeyRef"]["name"])
    for variable in values()["container"]["env"].values():
        names.add(variable["valueFrom"]["secretKeyRef"]["name"])
    for volume in values()["podTemplate"]["patch"]:
        names.add(volume["value"]["secret"]["secretName"])
    doc = DEPLOYMENT_DOC.read_text(encoding="utf-8")
    undocumented = sorted(name for name in names if f"kubectl create secret generic {name}" not in doc)
    assert not undocumented, f"docs/deployment.md does not say how to make {undocumented}"


# -- the NATS chart's values ------------------------------------------------------------------------


def test_the_values_ask_for_a_three_node_jetstream_cluster_on_volumes() -> None:
    config = values()["config"]
    assert config["cluster"]["enabled"] is True and config["cluster"]["replicas"] == 3
    jetstream = config["jetstream"]
    assert jetstream["enabled"] is True
    assert jetstream["fileStore"]["enabled"] is True and jetstream["fileStore"]["pvc"]["enabled"] is True
    assert jetstream["merge"]["domain"] == HUB_DOMAIN
    assert config["leafnodes"]["enabled"] is True


def test_the_include_finds_the_mounted_generated_configuration() -> None:
    include = values()["config"]["merge"]["$include"]
    (mount,) = [m for m in (op["value"] for op in values()["container"]["patch"]) if m["name"] == "eb-bus"]
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(CHART_CONFIG), include))
    assert resolved == posixpath.join(mount["mountPath"], "nats-server.json")


def chart_like_config(generated_include: str) -> str:
    """The server configuration the chart renders from these values, for the parts the broker
    relies on, by the rules its values document: the ``$include`` key becomes an include
    directive, ``<< x >>`` strings are written unquoted, and the keys are sorted."""
    config = values()["config"]
    cluster = {
        "name": RELEASE,
        "port": 6222,
        "no_advertise": config["cluster"]["noAdvertise"],
        "routes": [],
        **config["cluster"]["merge"],
    }
    for op in config["cluster"]["patch"]:
        assert op["op"] == "replace"
        cluster[op["path"].strip("/")] = op["value"]
    document = {
        "$include": generated_include,
        "server_name": "<< $SERVER_NAME >>",
        "port": 4222,
        "http_port": config["monitor"]["port"],
        "cluster": cluster,
        "jetstream": {"store_dir": config["jetstream"]["fileStore"]["dir"], **config["jetstream"]["merge"]},
        "leafnodes": {"port": config["leafnodes"]["port"], **config["leafnodes"]["merge"]},
    }
    text = json.dumps(document, indent=2, sort_keys=True)
    text = re.sub(r'".*\$include": "(.*)",?', r"include \1;", text)
    return re.sub(r'"<<\s+(.*?)\s+>>"', r"\1", text)


def test_nats_server_accepts_the_node_configuration_the_values_make(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Secret eb-nats-config holds what `broker bus-config` writes with the pods' settings.
    settings = config_map("eb-config")
    pools = tmp_path / "pools.toml"
    pools.write_text(config_map("eb-pools")["pools.toml"], encoding="utf-8")
    for name, value in {**settings, "EB_DATA_DIR": str(tmp_path / "data"), "EB_POOLS": str(pools)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("EB_LEAFNODE_PORT", str(values()["config"]["leafnodes"]["port"]))
    done = CliRunner().invoke(app, ["bus-config"])
    assert done.exit_code == 0, done.output
    mounted = tmp_path / "etc" / "eb-bus"
    mounted.mkdir(parents=True)
    (mounted / "nats-server.json").write_bytes((tmp_path / "data" / "bus" / "nats-server.json").read_bytes())
    config = tmp_path / "etc" / "nats-config" / "nats.conf"
    config.parent.mkdir()
    config.write_text(chart_like_config(values()["config"]["merge"]["$include"]), encoding="utf-8")
    password = "0123abcd" * 8
    env = {"SERVER_NAME": "nats-0", "NATS_ROUTE_PASSWORD": password}
    for i in range(3):
        env[f"NATS_ROUTE_{i}"] = f"nats://route:{password}@{RELEASE}-{i}.{RELEASE}-headless:6222"
    assert set(values()["container"]["env"]) == set(env) - {"SERVER_NAME"}
    checked = nats_server_test(config, env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
