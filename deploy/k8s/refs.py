"""Checks of rendered lark-bridge manifests that JSON schemas cannot make.

    refs.py RENDERED.yaml     check one kustomize output (deploy/k8s/validate)
    refs.py --render DIR      render DIR with pykustomize (validate's fallback)

Checked: every workload's selector matches its own pod labels; every Service,
PodDisruptionBudget and the Ingress backend find what they point at; HPAs
target an existing workload; probes name a declared container port; volumes
name a ConfigMap of the output (or a Secret); no two workloads load the same
Secret (each service holds only its own keys); config.toml parses, its
responder pacing stays within Lark's per-app limits (shared by all
replicas), and each consumer's termination grace period outlasts its
shutdown_grace_secs.
"""

import asyncio
import sys

import yaml

try:
    import tomllib
except ImportError:  # Python < 3.11: the config checks are skipped
    tomllib = None

LARK_APP_PER_SECOND, LARK_APP_PER_MINUTE = 50, 1000
LARK_LONG_CONNECTIONS_PER_APP = 50
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}


def render(path):
    import pykustomize

    print(asyncio.run(pykustomize.build(path)).yaml, end="")


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check(objects):
    errors = []
    by_kind = {}
    for o in objects:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    workloads = [o for o in objects if o["kind"] in WORKLOADS]
    pods = {w["metadata"]["name"]: w["spec"]["template"]["metadata"].get("labels", {}) for w in workloads}

    def err(o, message):
        errors.append(f"{o['kind']}/{o['metadata']['name']}: {message}")

    for w in workloads:
        spec = w["spec"]["template"]["spec"]
        if not matches(w["spec"]["selector"].get("matchLabels", {}), pods[w["metadata"]["name"]]):
            err(w, "spec.selector does not match the pod template's labels")
        if w["kind"] == "StatefulSet" and w["spec"].get("serviceName") not in by_kind.get("Service", {}):
            err(w, f"serviceName {w['spec'].get('serviceName')!r} is not a Service here")
        for c in spec.get("containers", []):
            ports = {p.get("name") for p in c.get("ports", [])} | {p["containerPort"] for p in c.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if port is not None and port not in ports:
                    err(w, f"{c['name']}.{probe} uses port {port!r}, not a port of the container")
        for v in spec.get("volumes", []):
            if "configMap" in v and v["configMap"]["name"] not in by_kind.get("ConfigMap", {}):
                err(w, f"volume {v['name']} names ConfigMap {v['configMap']['name']!r}, not in the output")

    # Least privilege: each workload loads a Secret of its own, so no
    # Deployment holds another service's keys (the ingress no FastGPT key).
    secret_users = {}
    for w in workloads:
        for c in w["spec"]["template"]["spec"].get("containers", []):
            for source in c.get("envFrom", []):
                name = source.get("secretRef", {}).get("name")
                if name:
                    secret_users.setdefault(name, set()).add(w["metadata"]["name"])
    for name, users in secret_users.items():
        if len(users) > 1:
            errors.append(f"Secret/{name}: loaded by {', '.join(sorted(users))}: give each its own Secret")

    for s in by_kind.get("Service", {}).values():
        if not any(matches(s["spec"].get("selector"), labels) for labels in pods.values()):
            err(s, "its selector matches no pod template")
    for p in by_kind.get("PodDisruptionBudget", {}).values():
        if not any(matches(p["spec"]["selector"].get("matchLabels"), labels) for labels in pods.values()):
            err(p, "its selector matches no pod template")
    for h in by_kind.get("HorizontalPodAutoscaler", {}).values():
        ref = h["spec"]["scaleTargetRef"]
        if ref["name"] not in by_kind.get(ref["kind"], {}):
            err(h, f"scaleTargetRef {ref['kind']}/{ref['name']} is not in the output")
    for i in by_kind.get("Ingress", {}).values():
        for rule in i["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]
                svc = by_kind.get("Service", {}).get(backend["name"])
                if svc is None:
                    err(i, f"backend Service {backend['name']!r} is not in the output")
                elif backend["port"].get("name") not in {None} | {p.get("name") for p in svc["spec"]["ports"]}:
                    err(i, f"backend port {backend['port']['name']!r} is not a port of Service {backend['name']}")

    for cm in by_kind.get("ConfigMap", {}).values():
        if "config.toml" in cm.get("data", {}) and tomllib is not None:
            errors += check_config(cm, by_kind)
    return errors


def check_config(cm, by_kind):
    where = f"ConfigMap/{cm['metadata']['name']} config.toml"
    try:
        config = tomllib.loads(cm["data"]["config.toml"])
    except tomllib.TOMLDecodeError as e:
        return [f"{where}: {e}"]
    errors = []
    deployments = by_kind.get("Deployment", {})
    responder = config.get("responder", {})
    # The app's limits hold for all responder replicas together (they share
    # them by partition), so the config may not exceed Lark's own.
    for key, limit in (("app_per_second", LARK_APP_PER_SECOND), ("app_per_minute", LARK_APP_PER_MINUTE)):
        value = responder.get(key, limit)
        if value > limit:
            errors.append(f"{where}: responder.{key} = {value} exceeds Lark's {limit} per app")
    for service in ("relay", "responder"):
        d = deployments.get(f"lark-bridge-{service}")
        grace = config.get(service, {}).get("shutdown_grace_secs", 20)
        if d and d["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30) <= grace:
            errors.append(
                f"{where}: {service}.shutdown_grace_secs = {grace} is not below the Deployment's"
                " terminationGracePeriodSeconds"
            )
    return errors


def main(argv):
    if len(argv) == 3 and argv[1] == "--render":
        render(argv[2])
        return 0
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        objects = [o for o in yaml.safe_load_all(f) if o]
    errors = check(objects)
    for e in errors:
        print(f"ERROR {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
