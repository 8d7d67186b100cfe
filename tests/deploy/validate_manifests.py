#!/usr/bin/env python3
"""Offline checks of deploy/ (issue 13), run by ctest through validate_manifests.sh.

1. Every overlay (deploy/kubernetes/overlays/*) renders: with `kubectl kustomize` where kubectl
   is installed, and always with render_kustomize.py (this folder), and the two agree.
2. Every rendered object validates: Kubernetes kinds against the Kubernetes OpenAPI schemas
   (kubernetes-validate, strict: unknown fields fail), the custom resources (ServiceMonitor,
   PodMonitor, PrometheusRule, ScaledObject, InferencePool, HTTPRoute) against strict schemas of
   the fields their CRDs define (crd_schemas.py). deploy/kubernetes.yaml validates too.
3. The serve configs (each overlay's ConfigMap, deploy/kubernetes.yaml's, the image's
   deploy/container/config.yaml) load in the real binary: `lightserve serve --config F
   --print-config` exits 0 (unknown keys and bad values exit 2).
4. The pods can drain: terminationGracePeriodSeconds > preStop sleep + the config's
   shutdown.drain_timeout_seconds; the probes name /health, /ready and the gRPC port.
5. The alert rules load in promtool (`promtool check rules`) and pass the unit tests in
   alerts_test.yaml (`promtool test rules`); every PromQL query of the dashboard, KEDA and the
   prometheus-adapter rule parses (as recording rules in `promtool check rules`). Without
   promtool (Debian: apt-get install prometheus) these are skipped with a message, and the
   queries get a bracket-balance check only.
Usage: validate_manifests.py LIGHTSERVE_BINARY
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
import crd_schemas  # noqa: E402
import render_kustomize  # noqa: E402

KUBE_VERSION = "1.32.0"  # the oldest Kubernetes the manifests promise to work on (docs/deploying.md)
failures = []
checked = []


def fail(msg):
    failures.append(msg)
    print("FAIL:", msg)


def ok(msg):
    checked.append(msg)
    print("ok:", msg)


def key(doc):
    return (doc.get("kind"), doc.get("metadata", {}).get("name"))


def validate(doc, where):
    import kubernetes_validate

    kind = doc.get("kind")
    if kind in crd_schemas.SCHEMAS:
        errors = crd_schemas.validate(doc)
        for e in errors:
            fail(f"{where}: {kind}/{key(doc)[1]}: {e}")
        return not errors
    try:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        return True
    except kubernetes_validate.ValidationError as e:
        fail(f"{where}: {kind}/{key(doc)[1]}: {e.message} at {'/'.join(map(str, e.path))}")
    except kubernetes_validate.SchemaNotFoundError as e:
        fail(f"{where}: {kind}/{key(doc)[1]}: no schema ({e})")
    return False


def render(overlay):
    """The overlay's objects: kubectl's rendering where kubectl exists (compared with ours)."""
    ours = render_kustomize.build(overlay)
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        print(f"note: kubectl absent; {overlay.name} rendered by render_kustomize.py only")
        return ours
    out = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"kubectl kustomize {overlay}: {out.stderr.strip()}")
        return ours
    theirs = [d for d in yaml.safe_load_all(out.stdout) if d]
    a = sorted(theirs, key=lambda d: json.dumps(key(d)))
    b = sorted(ours, key=lambda d: json.dumps(key(d)))
    if a != b:
        ka, kb = [key(d) for d in a], [key(d) for d in b]
        detail = f"objects {ka} vs {kb}" if ka != kb else next(
            f"{key(x)} differs" for x, y in zip(a, b) if x != y)
        fail(f"{overlay.name}: render_kustomize.py disagrees with kubectl kustomize: {detail}")
    else:
        ok(f"{overlay.name}: render_kustomize.py matches kubectl kustomize ({len(a)} objects)")
    return theirs


def check_config(text, where, binary):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    try:
        r = subprocess.run([binary, "serve", "--config", f.name, "--print-config"],
                           capture_output=True, text=True, timeout=60)
    finally:
        os.unlink(f.name)
    if r.returncode != 0:
        fail(f"{where}: lightserve serve --print-config exits {r.returncode}: {r.stderr.strip()}")
        return None
    ok(f"{where}: the serve config loads in lightserve")
    return yaml.safe_load(r.stdout)


def check_pod(docs, where, binary):
    configs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    for d in docs:
        if d["kind"] != "Deployment" or d["metadata"]["name"] != "lightserve":
            continue
        spec = d["spec"]["template"]["spec"]
        c = next(c for c in spec["containers"] if c["name"] == "lightserve")
        cm_name = next(v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v)
        effective = check_config(configs[cm_name]["data"]["config.yaml"], where, binary)
        if effective is None:
            continue
        drain = effective["shutdown"]["drain_timeout_seconds"]
        pre = c.get("lifecycle", {}).get("preStop", {})
        pre_stop = pre.get("sleep", {}).get("seconds", 0)
        if "exec" in pre:
            cmd = pre["exec"]["command"]
            pre_stop = int(cmd[-1]) if cmd[0].endswith("sleep") else 0
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if grace <= drain + pre_stop:
            fail(f"{where}: terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + drain {drain}")
        else:
            ok(f"{where}: grace {grace} s > preStop {pre_stop} s + drain {drain} s")
        if pre_stop <= 0:
            fail(f"{where}: no preStop sleep")
        probes = {p: c.get(p, {}) for p in ("startupProbe", "readinessProbe", "livenessProbe")}
        if probes["readinessProbe"].get("httpGet", {}).get("path") != "/ready":
            fail(f"{where}: readiness probe is not /ready")
        if probes["livenessProbe"].get("httpGet", {}).get("path") != "/health":
            fail(f"{where}: liveness probe is not /health")
        grpc_port = effective["server"]["grpc_port"]
        if probes["startupProbe"].get("grpc", {}).get("port") != grpc_port:
            fail(f"{where}: startup probe is not gRPC health on {grpc_port}")
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        if ports.get("http") != effective["server"]["http_port"] or ports.get("grpc") != grpc_port:
            fail(f"{where}: container ports {ports} are not the config's")
        if effective["server"]["host"] != "0.0.0.0":
            fail(f"{where}: server.host {effective['server']['host']} is not reachable from the Service")
        gpu = c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
        if (effective["model"]["device"] != "cpu") != bool(gpu):
            fail(f"{where}: device {effective['model']['device']} but nvidia.com/gpu limit {gpu}")
        ok(f"{where}: probes /health, /ready, gRPC :{grpc_port}; device {effective['model']['device']}")


# ---- PromQL ---------------------------------------------------------------------------------
def promql_queries():
    """(where, query) for every PromQL the deployment hands to Prometheus or Grafana."""
    out = []
    dash = json.loads((ROOT / "deploy/kubernetes/components/monitoring/lightserve-dashboard.json").read_text())
    panels = []
    for p in dash["panels"]:
        panels.append(p)
        panels.extend(p.get("panels", []))
    for p in panels:
        for t in p.get("targets", []):
            out.append((f"dashboard panel '{p['title']}'", t["expr"]))
    for v in dash["templating"]["list"]:
        q = v.get("query")
        if isinstance(q, dict):
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", q["query"])
            if m:
                out.append((f"dashboard variable {v['name']}", m.group(1)))
    keda = yaml.safe_load((ROOT / "deploy/kubernetes/components/keda/scaledobject.yaml").read_text())
    for i, t in enumerate(keda["spec"]["triggers"]):
        out.append((f"KEDA trigger {i}", t["metadata"]["query"]))
    adapter = yaml.safe_load((ROOT / "deploy/kubernetes/prometheus-adapter/values.yaml").read_text())
    for r in adapter["rules"]["custom"]:
        out.append((f"adapter seriesQuery {r['name']['as']}", r["seriesQuery"]))
        q = (r["metricsQuery"].replace("<<.GroupBy>>", "namespace, pod")
             .replace("<<.Series>>", r["name"]["as"])
             .replace("<<.LabelMatchers>>", 'namespace="default", pod=~"lightserve-.*"'))
        out.append((f"adapter metricsQuery {r['name']['as']}", q))
    return out


def substitute_grafana(q):
    return (q.replace("$__rate_interval", "5m").replace("$namespace", ".*")
            .replace("$pod", ".*").replace("$model_name", ".*"))


def check_promql(rules_doc):
    promtool = shutil.which("promtool")
    queries = [(w, substitute_grafana(q)) for w, q in promql_queries()]
    rules = {"groups": rules_doc["spec"]["groups"]}
    if promtool is None:
        print("note: promtool absent (apt-get install prometheus): alert rules and queries get a "
              "shape check only")
        for w, q in queries + [(r.get("alert"), r["expr"]) for g in rules["groups"] for r in g["rules"]]:
            if q.count("(") != q.count(")") or q.count("{") != q.count("}") or q.count("[") != q.count("]"):
                fail(f"{w}: unbalanced brackets in {q}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        rules_file = Path(tmp) / "lightserve-rules.yaml"
        rules_file.write_text(yaml.safe_dump(rules, sort_keys=False))
        r = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"promtool check rules (PrometheusRule): {r.stdout}{r.stderr}")
        else:
            n = sum(len(g["rules"]) for g in rules["groups"])
            ok(f"promtool check rules: the PrometheusRule's {n} rules load")
        test_file = Path(tmp) / "alerts_test.yaml"
        shutil.copy(HERE / "alerts_test.yaml", test_file)
        r = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True,
                           text=True, cwd=tmp)
        if r.returncode != 0:
            fail(f"promtool test rules alerts_test.yaml: {r.stdout}{r.stderr}")
        else:
            ok("promtool test rules: tests/deploy/alerts_test.yaml passes (each alert fires, and not when healthy)")
        # Every query as a recording rule: promtool parses each PromQL expression.
        recording = {"groups": [{"name": "queries", "rules": [
            {"record": f"lightserve:query_{i}", "expr": q} for i, (_, q) in enumerate(queries)]}]}
        qfile = Path(tmp) / "queries.yaml"
        qfile.write_text(yaml.safe_dump(recording, sort_keys=False))
        r = subprocess.run([promtool, "check", "rules", str(qfile)], capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"promtool: a dashboard/KEDA/adapter query does not parse: {r.stdout}{r.stderr}")
        else:
            ok(f"promtool: all {len(queries)} dashboard, KEDA and prometheus-adapter queries parse")


def main():
    binary = sys.argv[1]
    overlays = sorted(p for p in (ROOT / "deploy/kubernetes/overlays").iterdir() if p.is_dir())
    if not overlays:
        fail("no overlays under deploy/kubernetes/overlays")
    kinds = set()
    rules_doc = None
    for overlay in overlays:
        docs = render(overlay)
        n = sum(validate(d, overlay.name) for d in docs)
        if n == len(docs):
            ok(f"{overlay.name}: {n} objects validate ({', '.join(sorted({d['kind'] for d in docs}))})")
        kinds |= {d["kind"] for d in docs}
        check_pod(docs, overlay.name, binary)
        rules_doc = rules_doc or next((d for d in docs if d["kind"] == "PrometheusRule"), None)
    # What the issue asks the overlays to hold, between them.
    wanted = {"Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget",
              "ServiceMonitor", "PodMonitor", "HorizontalPodAutoscaler", "ScaledObject",
              "PrometheusRule", "InferencePool"}
    if wanted - kinds:
        fail(f"no overlay renders {sorted(wanted - kinds)}")
    single = [d for d in yaml.safe_load_all((ROOT / "deploy/kubernetes.yaml").read_text()) if d]
    if all(validate(d, "deploy/kubernetes.yaml") for d in single):
        ok(f"deploy/kubernetes.yaml: {len(single)} objects validate")
    check_config(single[0]["data"]["config.yaml"], "deploy/kubernetes.yaml", binary)
    check_config((ROOT / "deploy/container/config.yaml").read_text(), "deploy/container/config.yaml", binary)
    if rules_doc is None:
        fail("no PrometheusRule rendered")
    else:
        check_promql(rules_doc)
    print(f"\n{len(checked)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
