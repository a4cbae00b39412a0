"""Offline checks of deploy/: run by deploy/validate.sh (in CI) with the packages of requirements.txt.

1. Renders deploy/kubernetes/kustomization.yaml and the fleet overlay deploy/kubernetes-fleet as
   `kubectl apply -k` would, for the keys they use (resources, configMapGenerators without hash
   suffix, images, JSON 6902 patches and `$patch: delete`) and refuses any other key, so that what
   is validated is what a cluster receives. Where kubectl is installed, its rendering must be the
   same.
2. Validates every rendered object against the Kubernetes OpenAPI schemas bundled in
   kubernetes-validate, strictly (an unknown field is an error), for the oldest and the newest
   Kubernetes version we claim.
3. Validates examples/scaledobject.yaml against the openAPIV3Schema of KEDA's ScaledObject CRD
   (vendored in kubernetes/schemas/), with unknown fields refused as kubectl's strict field
   validation does.
4. Checks that the ports, paths and user the manifests, prescale.toml, the ScaledObject and the
   Dockerfile name agree.
5. Renders deploy/kubernetes-monitoring (the Prometheus Operator's ServiceMonitor and
   PrometheusRule, whose CRDs are not vendored here): the ServiceMonitor must select the Service
   prescale and scrape its metrics port at /metrics, using only the fields listed below, and the
   PrometheusRule must be exactly what `--write-rules` generates from
   deploy/prometheus/prescale-alerts.yml.
6. Proves that checks 2, 3 and 5 can fail: broken copies of a manifest must be rejected.

`python3 deploy/validate.py --write-rules` writes kubernetes-monitoring/prometheusrule.yaml from the
rules file.
"""

import copy
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

DEPLOY = Path(__file__).resolve().parent
KUSTOMIZATION = DEPLOY / "kubernetes"
FLEET_KUSTOMIZATION = DEPLOY / "kubernetes-fleet"
MONITORING_KUSTOMIZATION = DEPLOY / "kubernetes-monitoring"
ALERT_RULES = DEPLOY / "prometheus" / "prescale-alerts.yml"
PROMETHEUS_RULE = MONITORING_KUSTOMIZATION / "prometheusrule.yaml"
# The Prometheus Operator's API group and version of both objects.
OPERATOR_API = "monitoring.coreos.com/v1"
# The ServiceMonitor fields used here; any other is refused, as the operator's CRD schema is not
# vendored to check it.
SERVICE_MONITOR_SPEC_KEYS = {"selector", "endpoints"}
SERVICE_MONITOR_ENDPOINT_KEYS = {"port", "path", "interval", "scrapeTimeout"}
SCALED_OBJECT = KUSTOMIZATION / "examples" / "scaledobject.yaml"
KEDA_CRD = KUSTOMIZATION / "schemas" / "keda.sh_scaledobjects.yaml"
DOCKERFILE = DEPLOY.parent / "Dockerfile"
# The oldest Kubernetes the manifests are for (CronJob timeZone and gRPC probes are GA from 1.27),
# and the newest kubernetes-validate bundles.
KUBERNETES_VERSIONS = ["1.30", "1.37"]
KUSTOMIZATION_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "configMapGenerator",
    "generatorOptions",
    "images",
    "patches",
}


class CheckFailed(Exception):
    """A check found a problem; the message says which and where."""


def load_all(path):
    with open(path, encoding="utf-8") as file:
        return [document for document in yaml.safe_load_all(file) if document is not None]


def render(directory):
    """The objects `kubectl apply -k directory` applies, for the keys these kustomizations use."""
    kustomization = load_all(directory / "kustomization.yaml")[0]
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    if unknown:
        raise CheckFailed(
            f"{directory.name}/kustomization.yaml uses {sorted(unknown)}, which validate.py does not "
            "render: render it here too, or keep it out"
        )
    if kustomization.get("generatorOptions") != {"disableNameSuffixHash": True}:
        raise CheckFailed("generatorOptions must be exactly disableNameSuffixHash: true")
    objects = []
    for resource in kustomization["resources"]:
        path = directory / resource
        objects.extend(render(path) if path.is_dir() else load_all(path))
    for generator in kustomization.get("configMapGenerator", []):
        generate_config_map(objects, directory, generator)
    for patch in kustomization.get("patches", []):
        apply_patch(objects, directory, patch)
    images = {image["name"]: image for image in kustomization.get("images", [])}
    for item in objects:
        for container in pod_spec(item).get("containers", []) if pod_spec(item) else []:
            image = images.get(container["image"])
            if image is not None:
                container["image"] = f"{image['newName']}:{image['newTag']}"
    return objects


def generate_config_map(objects, directory, generator):
    """A configMapGenerator: a new ConfigMap, or (`behavior: replace`) the data of a base's."""
    if set(generator) - {"name", "namespace", "files", "behavior"}:
        raise CheckFailed(f"configMapGenerator {generator['name']}: only name, namespace, files, behavior")
    data = {}
    for name in generator["files"]:
        data[Path(name).name] = (directory / name).read_text(encoding="utf-8")
    metadata = {"name": generator["name"]}
    if "namespace" in generator:
        metadata["namespace"] = generator["namespace"]
    behavior = generator.get("behavior", "create")
    existing = [item for item in objects if item["kind"] == "ConfigMap" and item["metadata"] == metadata]
    if behavior == "create" and not existing:
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data})
    elif behavior == "replace" and len(existing) == 1:
        existing[0]["data"] = data
    else:
        raise CheckFailed(f"configMapGenerator {generator['name']}: behavior {behavior} with {len(existing)} existing")


def apply_patch(objects, directory, patch):
    """A JSON 6902 patch with a target (kind and name), or a strategic merge patch that is only
    `$patch: delete` of one object; kustomize's other patch forms are refused."""
    if set(patch) - {"path", "target"}:
        raise CheckFailed(f"patch {patch}: only path and target")
    documents = load_all(directory / patch["path"])
    target = patch.get("target")
    if target is None:
        if len(documents) != 1 or documents[0].get("$patch") != "delete":
            raise CheckFailed(f"{patch['path']}: only a `$patch: delete` has no target here")
        doomed = documents[0]

        def identity(item):
            return item["kind"], item["metadata"]["name"], item["metadata"].get("namespace")

        kept = [item for item in objects if identity(item) != identity(doomed)]
        if len(kept) != len(objects) - 1:
            raise CheckFailed(f"{patch['path']}: deletes {name_of(doomed)}, which is not rendered")
        objects[:] = kept
        return
    if set(target) - {"kind", "name"}:
        raise CheckFailed(f"patch {patch['path']}: the target is kind and name only")
    matched = [item for item in objects if (item["kind"], item["metadata"]["name"]) == (target["kind"], target["name"])]
    if len(matched) != 1 or len(documents) != 1:
        raise CheckFailed(f"patch {patch['path']}: matches {len(matched)} objects")
    for operation in documents[0]:
        json_patch_operation(matched[0], operation, patch["path"])


def json_patch_operation(document, operation, origin):
    """One RFC 6902 `add`, `replace` or `remove` on `document`, in place."""
    parts = [part.replace("~1", "/").replace("~0", "~") for part in operation["path"].split("/")[1:]]
    parent = document
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last, kind = parts[-1], operation["op"]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if kind == "add":
            parent.insert(index, operation["value"])
            return
        if index >= len(parent):
            raise CheckFailed(f"{origin}: {operation['path']} does not exist")
    elif kind != "add" and last not in parent:
        raise CheckFailed(f"{origin}: {operation['path']} does not exist")
    if kind in ("add", "replace"):
        parent[index if isinstance(parent, list) else last] = operation["value"]
    elif kind == "remove":
        del parent[index if isinstance(parent, list) else last]
    else:
        raise CheckFailed(f"{origin}: operation {kind} is not rendered here")


def pod_spec(item):
    """The pod spec of a workload object, or None."""
    spec = item.get("spec", {})
    if item["kind"] in ("StatefulSet", "Deployment", "DaemonSet", "Job"):
        return spec["template"]["spec"]
    if item["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    return None


def name_of(item):
    return f"{item['kind']}/{item['metadata']['name']}"


def compare_with_kubectl(directory, objects):
    """When kubectl is installed, its rendering of the kustomization must equal ours."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        print("kubectl not installed: rendering checked by validate.py alone")
        return
    output = subprocess.run(
        [kubectl, "kustomize", str(directory)], check=True, capture_output=True, text=True
    ).stdout
    theirs = {name_of(item): item for item in yaml.safe_load_all(output) if item}
    ours = {name_of(item): item for item in objects}
    if theirs != ours:
        differing = sorted(key for key in theirs.keys() | ours.keys() if theirs.get(key) != ours.get(key))
        raise CheckFailed(f"kubectl kustomize {directory.name} renders {differing} differently from validate.py")
    print(f"kubectl kustomize {directory.name} renders the same {len(ours)} objects")


def validate_kubernetes(item):
    """Errors of `item` against the Kubernetes schemas of every version we claim (strict)."""
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(item, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            errors.append(f"{name_of(item)} (Kubernetes {version}): {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            errors.append(error.message)
    return errors


def strict_schema(schema):
    """The CRD schema with unknown fields refused, as kubectl's strict field validation does: an
    object schema with properties and no additionalProperties or preserve-unknown-fields gets
    additionalProperties: false."""
    schema = copy.deepcopy(schema)

    def visit(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


def keda_validator():
    """A JSON-schema validator of ScaledObjects, from the vendored CRD's served version."""
    crd = load_all(KEDA_CRD)[0]
    versions = [version for version in crd["spec"]["versions"] if version["served"]]
    if [version["name"] for version in versions] != ["v1alpha1"]:
        raise CheckFailed(f"the KEDA CRD serves {[v['name'] for v in versions]}, expected v1alpha1")
    schema = strict_schema(versions[0]["schema"]["openAPIV3Schema"])
    # The API server checks metadata against ObjectMeta, not the CRD; kubernetes-validate has that.
    schema["properties"]["metadata"] = {"type": "object"}
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    validator_class.check_schema(schema)
    return f"{crd['spec']['group']}/v1alpha1", crd["spec"]["names"]["kind"], validator_class(schema)


def validate_keda(item, keda):
    api_version, kind, validator = keda
    errors = []
    if (item.get("apiVersion"), item.get("kind")) != (api_version, kind):
        errors.append(f"expected {api_version} {kind}, found {item.get('apiVersion')} {item.get('kind')}")
    for error in sorted(validator.iter_errors(item), key=lambda error: list(error.path)):
        path = ".".join(str(part) for part in error.path)
        errors.append(f"{name_of(item)} (KEDA CRD): {path}: {error.message}")
    return errors


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def container_ports(item):
    container = pod_spec(item)["containers"][0]
    return {port["name"]: port["containerPort"] for port in container.get("ports", [])}


def mounts(item):
    """Mount path of each volume of the first container, by volume name."""
    container = pod_spec(item)["containers"][0]
    return {mount["name"]: mount["mountPath"] for mount in container.get("volumeMounts", [])}


def check_consistency(objects, scaled_object):
    """Ports, paths and the user agree across prescale.toml, the manifests and the Dockerfile; with
    a retrain CronJob (the single replica), its server and tokens too; in a fleet, its names."""
    by_kind = {item["kind"]: item for item in objects}
    statefulset = by_kind["StatefulSet"]
    config = tomllib.loads(by_kind["ConfigMap"]["data"]["prescale.toml"])
    problems = []

    def expect(what, found, wanted):
        if found != wanted:
            problems.append(f"{what}: {found!r}, expected {wanted!r}")

    listeners = {
        "grpc": config["server"]["listen"],
        "http": config["server"]["metrics_listen"],
        "scaler": config["scaler"]["listen"],
    }
    ports = container_ports(statefulset)
    service = next(item for item in objects if item["kind"] == "Service" and item["metadata"]["name"] == "prescale")
    service_ports = {port["name"]: port for port in service["spec"]["ports"]}
    for name, address in listeners.items():
        expect(f"StatefulSet containerPort {name}", ports.get(name), port_of(address))
        expect(f"Service port {name} targetPort", service_ports[name]["targetPort"], name)
    expect("Service selector", service["spec"]["selector"], statefulset["spec"]["template"]["metadata"]["labels"])
    container = pod_spec(statefulset)["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        handler = container[probe].get("grpc") or container[probe].get("tcpSocket")
        expect(f"{probe} port", handler["port"], port_of(listeners["grpc"]))

    volume_mounts = mounts(statefulset)
    expect("data_dir", config["data_dir"], volume_mounts["data"])
    config_path = container["args"][container["args"].index("--config") + 1]
    expect("serve --config directory", str(Path(config_path).parent), volume_mounts["config"])
    config_volume = next(v for v in pod_spec(statefulset)["volumes"] if v["name"] == "config")
    configmap = by_kind["ConfigMap"]
    expect("config volume's ConfigMap", config_volume["configMap"]["name"], configmap["metadata"]["name"])
    expect("ConfigMap key", Path(config_path).name in configmap["data"], True)
    tokens_file = config["server"]["auth"]["tokens_file"]
    expect("tokens_file directory", str(Path(tokens_file).parent), volume_mounts["tokens"])
    service_host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"

    cronjob = by_kind.get("CronJob")
    if cronjob is not None:
        args = pod_spec(cronjob)["containers"][0]["args"]
        expect("CronJob --token-file", args[args.index("--token-file") + 1], tokens_file)
        expect("CronJob token volume", mounts(cronjob)["tokens"], volume_mounts["tokens"])
        expect("CronJob --server", args[args.index("--server") + 1], f"http://{service_host}:{service_ports['grpc']['port']}")
        expect("[registry] schedule (the CronJob retrains)", config["registry"]["schedule"], "off")
    else:
        expect("[registry] schedule is on without a CronJob", config["registry"]["schedule"] != "off", True)
    if "fleet" in config:
        problems.extend(check_fleet(objects, config, listeners))

    external = next(t for t in scaled_object["spec"]["triggers"] if t["type"] == "external")
    expect("ScaledObject scalerAddress", external["metadata"]["scalerAddress"], f"{service_host}:{service_ports['scaler']['port']}")

    user = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    for item in [statefulset] + ([cronjob] if cronjob else []):
        context = pod_spec(item)["securityContext"]
        expect(f"{name_of(item)} runAsUser:runAsGroup vs Dockerfile USER", (context["runAsUser"], context["runAsGroup"]), (int(user[1]), int(user[2])))
    return problems


def check_fleet(objects, config, listeners):
    """The fleet overlay: several replicas, each registering under its pod name and advertising its
    own DNS name under the StatefulSet's headless Service; a PodDisruptionBudget over the pods; a
    liveness probe that does not ask gRPC health (a replica without etcd is not restarted)."""
    problems = []

    def expect(what, found, wanted):
        if found != wanted:
            problems.append(f"fleet: {what}: {found!r}, expected {wanted!r}")

    statefulset = next(item for item in objects if item["kind"] == "StatefulSet")
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    namespace = statefulset["metadata"]["namespace"]
    expect("StatefulSet replicas > 1", statefulset["spec"]["replicas"] > 1, True)
    for key in ("member_id", "advertise", "scaler_advertise"):
        expect(f"[fleet] {key} (set per pod)", key in config["fleet"], False)
    peers = [
        item
        for item in objects
        if item["kind"] == "Service" and item["metadata"]["name"] == statefulset["spec"]["serviceName"]
    ]
    expect("the StatefulSet's serviceName is a Service", len(peers), 1)
    if peers:
        expect("peers Service is headless", peers[0]["spec"].get("clusterIP"), "None")
        expect("peers Service selector", peers[0]["spec"]["selector"], labels)
    container = pod_spec(statefulset)["containers"][0]
    env = {variable["name"]: variable for variable in container.get("env", [])}
    expect("PRESCALE_MEMBER_ID", env.get("PRESCALE_MEMBER_ID", {}).get("valueFrom"), {"fieldRef": {"fieldPath": "metadata.name"}})
    host = f"$(PRESCALE_MEMBER_ID).{statefulset['spec']['serviceName']}.{namespace}.svc.cluster.local"
    expect("PRESCALE_ADVERTISE", env.get("PRESCALE_ADVERTISE", {}).get("value"), f"{host}:{port_of(listeners['grpc'])}")
    expect("PRESCALE_SCALER_ADVERTISE", env.get("PRESCALE_SCALER_ADVERTISE", {}).get("value"), f"{host}:{port_of(listeners['scaler'])}")
    expect("livenessProbe asks no gRPC health", "grpc" in container["livenessProbe"], False)
    budgets = [item for item in objects if item["kind"] == "PodDisruptionBudget"]
    expect("PodDisruptionBudgets", len(budgets), 1)
    if budgets:
        expect("PodDisruptionBudget selector", budgets[0]["spec"]["selector"]["matchLabels"], labels)
    return problems


def broken_copies(objects, scaled_object):
    """Manifests that must be rejected, each with the check that must reject it."""
    statefulset = copy.deepcopy(next(item for item in objects if item["kind"] == "StatefulSet"))
    statefulset["spec"]["replicas"] = "one"
    probe = copy.deepcopy(next(item for item in objects if item["kind"] == "StatefulSet"))
    pod_spec(probe)["containers"][0]["readinessProbe"]["grpc"]["portt"] = 50051
    wrong_type = copy.deepcopy(scaled_object)
    wrong_type["spec"]["minReplicaCount"] = "two"
    unknown_field = copy.deepcopy(scaled_object)
    unknown_field["spec"]["triggers"][0]["metadataa"] = {"workload": "checkout"}
    return [
        ("StatefulSet replicas: \"one\"", validate_kubernetes, statefulset),
        ("StatefulSet probe field portt", validate_kubernetes, probe),
        ("ScaledObject minReplicaCount: \"two\"", "keda", wrong_type),
        ("ScaledObject trigger field metadataa", "keda", unknown_field),
    ]


def broken_fleet_copies(objects, scaled_object):
    """Fleet manifests that must be rejected: by the schemas, and by the fleet's consistency."""
    budget = copy.deepcopy(next(item for item in objects if item["kind"] == "PodDisruptionBudget"))
    budget["spec"]["maxUnavailible"] = 1
    wrong_host = copy.deepcopy(objects)
    container = pod_spec(next(item for item in wrong_host if item["kind"] == "StatefulSet"))["containers"][0]
    advertise = next(variable for variable in container["env"] if variable["name"] == "PRESCALE_ADVERTISE")
    advertise["value"] = advertise["value"].replace("prescale-peers", "prescale")
    liveness = copy.deepcopy(objects)
    container = pod_spec(next(item for item in liveness if item["kind"] == "StatefulSet"))["containers"][0]
    container["livenessProbe"] = copy.deepcopy(container["readinessProbe"])
    return [
        ("PodDisruptionBudget field maxUnavailible", validate_kubernetes(budget)),
        ("fleet advertising the load-balanced Service", check_consistency(wrong_host, scaled_object)),
        ("fleet liveness probe on gRPC health", check_consistency(liveness, scaled_object)),
    ]


def prometheus_rule_text():
    """prometheusrule.yaml as generated from the alert rules file: its `groups`, comments included,
    as the spec of a PrometheusRule."""
    lines = ALERT_RULES.read_text(encoding="utf-8").splitlines()
    start = lines.index("groups:")
    spec = "\n".join(f"  {line}" if line else "" for line in lines[start:])
    return f"""# Generated from deploy/prometheus/prescale-alerts.yml by `python3 deploy/validate.py --write-rules`:
# edit that file (and its unit tests), not this one. deploy/validate.py fails when they differ.
apiVersion: {OPERATOR_API}
kind: PrometheusRule
metadata:
  name: prescale
  namespace: prescale
  labels:
    app.kubernetes.io/name: prescale
spec:
{spec}
"""


def check_monitoring(objects, base_objects, rule_text):
    """The ServiceMonitor scrapes the base's Service prescale on the port of metrics_listen at
    /metrics, with known fields only; the PrometheusRule is the generated one (`rule_text` is its
    file's text)."""
    problems = []

    def expect(what, found, wanted):
        if found != wanted:
            problems.append(f"monitoring: {what}: {found!r}, expected {wanted!r}")

    expect("kinds", sorted(item["kind"] for item in objects), ["PrometheusRule", "ServiceMonitor"])
    service = next(item for item in base_objects if item["kind"] == "Service" and item["metadata"]["name"] == "prescale")
    config = tomllib.loads(next(item for item in base_objects if item["kind"] == "ConfigMap")["data"]["prescale.toml"])
    metrics_port = port_of(config["server"]["metrics_listen"])
    for item in objects:
        expect(f"{name_of(item)} apiVersion", item.get("apiVersion"), OPERATOR_API)
        expect(f"{name_of(item)} namespace", item["metadata"].get("namespace"), service["metadata"]["namespace"])
        if item["kind"] == "PrometheusRule":
            if item["spec"] != load_all(ALERT_RULES)[0]:
                problems.append(f"monitoring: the PrometheusRule's spec differs from the groups of {ALERT_RULES.name}")
            if rule_text != prometheus_rule_text():
                problems.append(f"monitoring: {PROMETHEUS_RULE.name} is not what --write-rules generates from {ALERT_RULES.name}: run it")
        if item["kind"] != "ServiceMonitor":
            continue
        spec = item["spec"]
        expect("ServiceMonitor spec fields", sorted(set(spec) - SERVICE_MONITOR_SPEC_KEYS), [])
        selected = spec.get("selector", {}).get("matchLabels", {})
        labels = service["metadata"].get("labels", {})
        expect("ServiceMonitor selects the Service prescale", bool(selected) and selected.items() <= labels.items(), True)
        ports = {port["name"]: port["port"] for port in service["spec"]["ports"]}
        endpoints = spec.get("endpoints", [])
        expect("ServiceMonitor endpoints", len(endpoints), 1)
        for endpoint in endpoints:
            expect("ServiceMonitor endpoint fields", sorted(set(endpoint) - SERVICE_MONITOR_ENDPOINT_KEYS), [])
            expect("ServiceMonitor port (metrics_listen)", ports.get(endpoint.get("port")), metrics_port)
            expect("ServiceMonitor path", endpoint.get("path"), "/metrics")
            for key in ("interval", "scrapeTimeout"):
                if key in endpoint and not re.fullmatch(r"([0-9]+(ms|s|m|h))+", str(endpoint[key])):
                    problems.append(f"monitoring: ServiceMonitor {key} {endpoint[key]!r} is not a Prometheus duration")
    return problems


def validate_monitoring(base_objects):
    """Renders the monitoring kustomization and checks it, and that broken copies are rejected."""
    objects = render(MONITORING_KUSTOMIZATION)
    compare_with_kubectl(MONITORING_KUSTOMIZATION, objects)
    rule_text = PROMETHEUS_RULE.read_text(encoding="utf-8")
    errors = check_monitoring(objects, base_objects, rule_text)
    if not errors:
        for item in objects:
            print(f"ok  {MONITORING_KUSTOMIZATION.name}: {name_of(item)} ({OPERATOR_API}, fields checked here)")

    def changed(kind, change):
        copies = copy.deepcopy(objects)
        change(next(item for item in copies if item["kind"] == kind))
        return copies

    def endpoint(item):
        return item["spec"]["endpoints"][0]

    rejected = [
        ("ServiceMonitor port grpc", check_monitoring(changed("ServiceMonitor", lambda item: endpoint(item).update(port="grpc")), base_objects, rule_text)),
        ("ServiceMonitor field intervall", check_monitoring(changed("ServiceMonitor", lambda item: endpoint(item).update(intervall="30s")), base_objects, rule_text)),
        ("ServiceMonitor selecting another app", check_monitoring(changed("ServiceMonitor", lambda item: item["spec"]["selector"]["matchLabels"].update({"app.kubernetes.io/name": "other"})), base_objects, rule_text)),
        ("PrometheusRule with a rule of its own", check_monitoring(changed("PrometheusRule", lambda item: item["spec"]["groups"][0]["rules"][0].update(expr="vector(1)")), base_objects, rule_text)),
        ("prometheusrule.yaml not regenerated", check_monitoring(objects, base_objects, rule_text.replace("for: 5m", "for: 10m", 1))),
    ]
    errors.extend(report_rejected(MONITORING_KUSTOMIZATION, rejected))
    print(f"{MONITORING_KUSTOMIZATION.name}: {len(objects)} objects checked")
    return errors


def validate_rendering(directory, keda, examples):
    """Renders one kustomization and runs every check on it; the errors."""
    objects = render(directory)
    compare_with_kubectl(directory, objects)
    errors = []
    for item in objects:
        found = validate_kubernetes(item)
        errors.extend(found)
        if not found:
            print(f"ok  {directory.name}: {name_of(item)} (Kubernetes {', '.join(KUBERNETES_VERSIONS)}, strict)")
    errors.extend(check_consistency(objects, examples[0]))
    rejected = [
        (what, validate_keda(broken, keda) if check == "keda" else check(broken))
        for what, check, broken in broken_copies(objects, examples[0])
    ]
    if directory == FLEET_KUSTOMIZATION:
        rejected.extend(broken_fleet_copies(objects, examples[0]))
    errors.extend(report_rejected(directory, rejected))
    print(f"{directory.name}: {len(objects)} objects checked")
    return errors


def report_rejected(directory, rejected):
    """Prints each broken copy with the first error that rejected it; the errors for those that
    were accepted."""
    errors = []
    for what, found in rejected:
        if found:
            print(f"ok  {directory.name}: rejected {what}: {found[0]}")
        else:
            errors.append(f"{directory.name}: the validator accepted a broken manifest: {what}")
    return errors


def main():
    keda = keda_validator()
    examples = load_all(SCALED_OBJECT)
    errors = []
    for item in examples:
        found = validate_keda(item, keda)
        errors.extend(found)
        if not found:
            print(f"ok  {name_of(item)} (KEDA CRD {KEDA_CRD.name}, unknown fields refused)")
    for directory in (KUSTOMIZATION, FLEET_KUSTOMIZATION):
        errors.extend(validate_rendering(directory, keda, examples))
    errors.extend(validate_monitoring(render(KUSTOMIZATION)))

    if errors:
        print("\n".join(["", "FAILED:"] + errors), file=sys.stderr)
        return 1
    print(f"deploy manifests: 3 kustomizations and {len(examples)} example valid")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-rules"]:
        PROMETHEUS_RULE.write_text(prometheus_rule_text(), encoding="utf-8")
        print(f"wrote {PROMETHEUS_RULE.relative_to(DEPLOY.parent)}")
        sys.exit(0)
    try:
        sys.exit(main())
    except CheckFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
