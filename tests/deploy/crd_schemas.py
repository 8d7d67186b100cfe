"""Strict JSON schemas for the custom resources in deploy/kubernetes (kubernetes-validate knows
only Kubernetes' own kinds). Each lists the fields its CRD defines at the levels we use, with
their types and enums, and forbids any other field, so a misspelt or misplaced key fails. They
are written from the CRDs' API references (not copied), for these versions:
  monitoring.coreos.com/v1 ServiceMonitor, PodMonitor, PrometheusRule (prometheus-operator 0.7x)
  keda.sh/v1alpha1 ScaledObject (KEDA 2.x)
  inference.networking.k8s.io/v1 InferencePool (Gateway API Inference Extension 1.0)
  gateway.networking.k8s.io/v1 HTTPRoute (Gateway API 1.x)
"""
import jsonschema


def obj(props, required=(), extra=False):
    return {"type": "object", "properties": props, "required": list(required),
            "additionalProperties": extra}


STR = {"type": "string"}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
METADATA = obj({"name": STR, "namespace": STR, "labels": STRMAP, "annotations": STRMAP}, ["name"])
LABEL_SELECTOR = obj({
    "matchLabels": STRMAP,
    "matchExpressions": {"type": "array", "items": obj(
        {"key": STR, "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
         "values": {"type": "array", "items": STR}}, ["key", "operator"])},
})
NAMESPACE_SELECTOR = obj({"any": BOOL, "matchNames": {"type": "array", "items": STR}})
RELABELINGS = {"type": "array", "items": obj({
    "sourceLabels": {"type": "array", "items": STR}, "separator": STR, "targetLabel": STR,
    "regex": STR, "modulus": INT, "replacement": STR,
    "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod",
                        "HashMod", "labelmap", "LabelMap", "labeldrop", "LabelDrop",
                        "labelkeep", "LabelKeep", "lowercase", "Lowercase", "uppercase",
                        "Uppercase", "keepequal", "KeepEqual", "dropequal", "DropEqual"]}})}
ENDPOINT_COMMON = {
    "port": STR, "path": STR, "scheme": {"enum": ["http", "https"]}, "interval": DURATION,
    "scrapeTimeout": DURATION, "honorLabels": BOOL, "honorTimestamps": BOOL,
    "relabelings": RELABELINGS, "metricRelabelings": RELABELINGS, "params": {"type": "object"},
    "followRedirects": BOOL, "enableHttp2": BOOL,
}


def custom(api, kind, spec):
    return obj({"apiVersion": {"const": api}, "kind": {"const": kind}, "metadata": METADATA,
                "spec": spec}, ["apiVersion", "kind", "metadata", "spec"])


RULE = obj({"alert": STR, "record": STR, "expr": {"type": ["string", "integer"]},
            "for": DURATION, "keep_firing_for": DURATION, "labels": STRMAP,
            "annotations": STRMAP}, ["expr"])

HPA_BEHAVIOR_RULES = obj({
    "stabilizationWindowSeconds": {"type": "integer", "minimum": 0, "maximum": 3600},
    "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
    "policies": {"type": "array", "items": obj(
        {"type": {"enum": ["Pods", "Percent"]}, "value": {"type": "integer", "minimum": 1},
         "periodSeconds": {"type": "integer", "minimum": 1, "maximum": 1800}},
        ["type", "value", "periodSeconds"])},
})

SCHEMAS = {
    "ServiceMonitor": custom("monitoring.coreos.com/v1", "ServiceMonitor", obj({
        "selector": LABEL_SELECTOR, "namespaceSelector": NAMESPACE_SELECTOR, "jobLabel": STR,
        "targetLabels": {"type": "array", "items": STR},
        "podTargetLabels": {"type": "array", "items": STR},
        "endpoints": {"type": "array", "minItems": 1,
                      "items": obj({**ENDPOINT_COMMON, "targetPort": {"type": ["integer", "string"]}})},
    }, ["selector", "endpoints"])),
    "PodMonitor": custom("monitoring.coreos.com/v1", "PodMonitor", obj({
        "selector": LABEL_SELECTOR, "namespaceSelector": NAMESPACE_SELECTOR, "jobLabel": STR,
        "podTargetLabels": {"type": "array", "items": STR},
        "podMetricsEndpoints": {"type": "array", "minItems": 1,
                                "items": obj({**ENDPOINT_COMMON, "portNumber": PORT})},
    }, ["selector", "podMetricsEndpoints"])),
    "PrometheusRule": custom("monitoring.coreos.com/v1", "PrometheusRule", obj({
        "groups": {"type": "array", "minItems": 1, "items": obj({
            "name": STR, "interval": DURATION, "limit": INT, "partial_response_strategy": STR,
            "rules": {"type": "array", "minItems": 1, "items": RULE}}, ["name", "rules"])},
    }, ["groups"])),
    "ScaledObject": custom("keda.sh/v1alpha1", "ScaledObject", obj({
        "scaleTargetRef": obj({"apiVersion": STR, "kind": STR, "name": STR,
                               "envSourceContainerName": STR}, ["name"]),
        "minReplicaCount": {"type": "integer", "minimum": 0},
        "maxReplicaCount": {"type": "integer", "minimum": 1},
        "idleReplicaCount": {"type": "integer", "minimum": 0},
        "pollingInterval": {"type": "integer", "minimum": 1},
        "cooldownPeriod": {"type": "integer", "minimum": 0},
        "initialCooldownPeriod": {"type": "integer", "minimum": 0},
        "fallback": obj({"failureThreshold": INT, "replicas": INT}, ["failureThreshold", "replicas"]),
        "advanced": obj({
            "restoreToOriginalReplicaCount": BOOL,
            "horizontalPodAutoscalerConfig": obj({
                "name": STR,
                "behavior": obj({"scaleUp": HPA_BEHAVIOR_RULES, "scaleDown": HPA_BEHAVIOR_RULES})}),
            "scalingModifiers": {"type": "object"}}),
        "triggers": {"type": "array", "minItems": 1, "items": obj({
            "type": STR, "name": STR, "useCachedMetrics": BOOL,
            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
            # KEDA takes every trigger setting as a string.
            "metadata": STRMAP,
            "authenticationRef": obj({"name": STR, "kind": STR}, ["name"])}, ["type", "metadata"])},
    }, ["scaleTargetRef", "triggers"])),
    "InferencePool": custom("inference.networking.k8s.io/v1", "InferencePool", obj({
        "selector": obj({"matchLabels": STRMAP}, ["matchLabels"]),
        "targetPorts": {"type": "array", "minItems": 1, "maxItems": 8,
                        "items": obj({"number": PORT}, ["number"])},
        "endpointPickerRef": obj({
            "group": STR, "kind": STR, "name": STR,
            "port": obj({"number": PORT}, ["number"]),
            "failureMode": {"enum": ["FailOpen", "FailClose"]}}, ["name"]),
    }, ["selector", "targetPorts", "endpointPickerRef"])),
    "HTTPRoute": custom("gateway.networking.k8s.io/v1", "HTTPRoute", obj({
        "parentRefs": {"type": "array", "items": obj(
            {"group": STR, "kind": STR, "namespace": STR, "name": STR, "sectionName": STR,
             "port": PORT}, ["name"])},
        "hostnames": {"type": "array", "items": STR},
        "rules": {"type": "array", "items": obj({
            "name": STR,
            "matches": {"type": "array", "items": obj({
                "path": obj({"type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
                             "value": STR}),
                "headers": {"type": "array"}, "queryParams": {"type": "array"},
                "method": {"enum": ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT",
                                    "OPTIONS", "TRACE", "PATCH"]}})},
            "filters": {"type": "array"},
            "backendRefs": {"type": "array", "items": obj(
                {"group": STR, "kind": STR, "name": STR, "namespace": STR, "port": PORT,
                 "weight": {"type": "integer", "minimum": 0}, "filters": {"type": "array"}},
                ["name"])},
            "timeouts": obj({"request": STR, "backendRequest": STR}),
        })},
    })),
}


def validate(doc):
    """Error messages for `doc` against its kind's schema (empty: valid)."""
    schema = SCHEMAS[doc["kind"]]
    errors = []
    for e in jsonschema.Draft7Validator(schema).iter_errors(doc):
        errors.append(f"{e.message} at {'/'.join(map(str, e.absolute_path)) or '(root)'}")
    if doc["kind"] == "PrometheusRule":
        for g in doc["spec"]["groups"]:
            for r in g["rules"]:
                if ("alert" in r) == ("record" in r):
                    errors.append(f"rule in {g['name']}: exactly one of alert and record")
    return errors
