"""deploy/k8s rendered by kubectl's kustomize and checked offline (scripts/check_k8s.py):
every overlay passes, and deliberately broken manifests do not."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.scripts import load_script

pytestmark = [pytest.mark.integration, pytest.mark.k8s]

check = load_script("scripts/check_k8s.py")

if not (shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")):
    if os.environ.get("CI"):
        pytest.fail("kubectl is missing: CI must check the manifests", pytrace=False)
    pytest.skip("kubectl is not installed (the k8s extra)", allow_module_level=True)


def test_every_kustomization_passes() -> None:
    dirs = [check.K8S / "base", *check.overlays()]
    assert [d.name for d in dirs] == ["base", "cpu", "production"]
    for d in dirs:
        assert check.check_dir(d) == [], d


def _by_name(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objects}


def test_production_has_every_part() -> None:
    objs = _by_name(check.render(check.K8S / "overlays" / "production"))
    api = objs["Deployment/cinecloud-api"]
    assert api["spec"]["replicas"] == 2
    assert api["metadata"]["namespace"] == "cinecloud"
    (worker,) = objs["Deployment/cinecloud-worker"]["spec"]["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert worker["image"] == "registry.example.com/cinecloud:0.1.0"
    assert "StatefulSet/postgres" in objs and "Service/postgres" in objs
    # the replicas count rate limits together, in the Redis beside them
    assert "Deployment/redis" in objs and "Service/redis" in objs
    (env,) = [k for k in objs if k.startswith("ConfigMap/cinecloud-config-")]
    assert objs[env]["data"]["CINECLOUD_LIMITS__STORAGE"] == "redis://redis:6379/0"
    assert "Deployment/cinecloud-edge" in objs and "Service/cinecloud-edge" in objs
    scaler = objs["ScaledObject/cinecloud-worker"]["spec"]
    assert scaler["scaleTargetRef"]["name"] == "cinecloud-worker"
    assert scaler["maxReplicaCount"] == 16  # the overlay's patch
    (trigger,) = scaler["triggers"]
    assert trigger["type"] == "prometheus"
    assert "cinecloud_autoscaler_desired_workers" in trigger["metadata"]["query"]
    (template,) = [k for k in objs if k.startswith("ConfigMap/cinecloud-edge-template-")]
    conf = objs[template]["data"]["cinecloud.conf"]
    assert conf == (check.ROOT / "deploy" / "nginx" / "cinecloud.conf").read_text()


def test_cpu_overlay_asks_for_no_gpu() -> None:
    objs = _by_name(check.render(check.K8S / "overlays" / "cpu"))
    pod = objs["Deployment/cinecloud-worker"]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in str(pod)
    query = objs["ScaledObject/cinecloud-worker"]["spec"]["triggers"][0]["metadata"]["query"]
    assert 'pool="cinecloud/shapes-t2v"' in query


def _overlay(tmp_path: Path, patches: str) -> Path:
    """A kustomization over the real base, with ``patches`` (YAML list items)."""
    base = os.path.relpath(check.K8S / "base", tmp_path)
    body = f"resources:\n  - {base}\n"
    if patches:
        body += "patches:\n" + textwrap.indent(textwrap.dedent(patches).strip(), "  ") + "\n"
    (tmp_path / "kustomization.yaml").write_text(body)
    return tmp_path


def _json6902(kind: str, name: str, ops: str) -> str:
    return (
        f"- target: {{kind: {kind}, name: {name}}}\n  patch: |-\n"
        + textwrap.indent(textwrap.dedent(ops).strip(), "    ")
        + "\n"
    )


def test_an_overlay_of_the_base_alone_passes(tmp_path: Path) -> None:
    assert check.check_dir(_overlay(tmp_path, "")) == []


API = "/spec/template/spec/containers/0"
WORKER_ENV = "/spec/template/spec/containers/0/env"
BROKEN = {
    "replicas as text": (
        _json6902(
            "Deployment", "cinecloud-api", '- {op: replace, path: /spec/replicas, value: "two"}'
        ),
        "Deployment/cinecloud-api: spec/replicas: 'two' is not of type 'integer'",
    ),
    "a misspelt field": (
        _json6902(
            "Deployment",
            "cinecloud-api",
            f"- {{op: add, path: {API}/containerPorts, value: [{{containerPort: 80}}]}}",
        ),
        "Deployment/cinecloud-api: spec/template/spec/containers/0: Additional properties",
    ),
    "a field KEDA does not have": (
        _json6902(
            "ScaledObject", "cinecloud-worker", "- {op: add, path: /spec/maxReplicas, value: 4}"
        ),
        "ScaledObject/cinecloud-worker: spec: Additional properties are not allowed "
        "('maxReplicas' was unexpected)",
    ),
    "a prometheus trigger without threshold": (
        _json6902(
            "ScaledObject",
            "cinecloud-worker",
            "- {op: remove, path: /spec/triggers/0/metadata/threshold}",
        ),
        "ScaledObject/cinecloud-worker: spec/triggers/0/metadata: 'threshold' is a required",
    ),
    "a scaler for another pool": (
        _json6902(
            "ScaledObject",
            "cinecloud-worker",
            """
            - op: replace
              path: /spec/triggers/0/metadata/query
              value: max(cinecloud_autoscaler_desired_workers{pool="other/model"})
            """,
        ),
        "ScaledObject/cinecloud-worker: its query's pool ['other/model'] is not the workers'",
    ),
    "a scaler capped below the autoscaler": (
        _json6902(
            "ScaledObject",
            "cinecloud-worker",
            "- {op: replace, path: /spec/maxReplicaCount, value: 4}",
        ),
        "maxReplicaCount is below the autoscaler's max_workers 8",
    ),
    "a service that selects nothing": (
        _json6902(
            "Service",
            "cinecloud-edge",
            "- {op: replace, path: /spec/selector/app.kubernetes.io~1component, value: egde}",
        ),
        "Service/cinecloud-edge: its selector matches no pod template",
    ),
    "a secret key nobody creates": (
        _json6902(
            "Deployment",
            "cinecloud-worker",
            f"- {{op: replace, path: {WORKER_ENV}/1/valueFrom/secretKeyRef/key, value: token}}",
        ),
        "Secret cinecloud-secrets has no key token",
    ),
    "a variable used before it is set": (
        _json6902(
            "Deployment",
            "cinecloud-api",
            f"- {{op: move, from: {API}/env/0, path: {API}/env/1}}",
        ),
        "env CINECLOUD_DB__URL: $(POSTGRES_PASSWORD) is not defined before it",
    ),
    "a patch for an object that is not there": (
        "- patch: |-\n    {apiVersion: apps/v1, kind: Deployment, metadata: {name: gpu}}\n",
        "kustomize failed",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_manifest_fails(tmp_path: Path, case: str) -> None:
    patches, expected = BROKEN[case]
    problems = check.check_dir(_overlay(tmp_path, patches))
    assert any(expected in p for p in problems), problems


def test_the_command_exits_1_on_a_broken_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    patches, expected = BROKEN["replicas as text"]
    assert check.main([str(_overlay(tmp_path, patches))]) == 1
    assert expected in capsys.readouterr().out
    assert check.main([str(check.K8S / "overlays" / "cpu")]) == 0
