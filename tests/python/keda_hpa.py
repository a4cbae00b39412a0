"""Plays KEDA and the HPA it drives against prescale's external scaler, with KEDA's own proto.

Usage: keda_hpa.py HOST:PORT PROTO_DIR

Generates stubs from PROTO_DIR/externalscaler/externalscaler.proto (KEDA's, vendored) with
grpcio-tools, then reads commands from stdin, one per line, and answers each on stdout:

  init SCALED_OBJECT WORKLOAD REPLICAS HPA_TOLERANCE SCALE_UP_TOLERANCE|-
      a ScaledObject whose external trigger names WORKLOAD (and sets `scaleUpTolerance` unless
      `-`), whose HPA runs REPLICAS and has HPA_TOLERANCE; answers `ok`.
  sync SCALED_OBJECT
      one HPA sync period: GetMetricSpec, then GetMetrics twice (KEDA's operator and its metrics
      server both poll) and IsActive, and the HPA formula on the last value; answers
      `replicas=N value=V active=0|1 error=CODE|-`.

The HPA formula (Kubernetes "Horizontal Pod Autoscaling", algorithm details; an External metric
with an AverageValue target): usage_ratio = value / (target * current); the HPA keeps `current`
while |1 - usage_ratio| <= tolerance, otherwise it runs ceil(value / target). A failing metric
leaves the count as it is. KEDA reads the float fields when they are set (2.17 and later) and the
integer ones before; both must agree.
"""

import math
import pathlib
import sys
import tempfile

import grpc
from grpc_tools import protoc


def generate_stubs(proto_dir: pathlib.Path, out_dir: pathlib.Path) -> None:
    code = protoc.main(
        [
            "protoc",
            f"-I{proto_dir / 'externalscaler'}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(proto_dir / "externalscaler" / "externalscaler.proto"),
        ]
    )
    if code != 0:
        sys.exit(f"protoc failed with {code}")
    sys.path.insert(0, str(out_dir))


def fail(what: str) -> None:
    sys.exit(f"check failed: {what}")


class ScaledObject:
    def __init__(self, name, workload, replicas, hpa_tolerance, scale_up_tolerance):
        self.name = name
        self.metadata = {"workload": workload}
        if scale_up_tolerance != "-":
            self.metadata["scaleUpTolerance"] = scale_up_tolerance
        self.replicas = replicas
        self.tolerance = hpa_tolerance


def target_of(spec_response) -> tuple:
    if len(spec_response.metricSpecs) != 1:
        fail(f"one metric spec, got {spec_response}")
    spec = spec_response.metricSpecs[0]
    if spec.targetSize != spec.targetSizeFloat:
        fail(f"targetSize {spec.targetSize} and targetSizeFloat {spec.targetSizeFloat} agree")
    if spec.targetSizeFloat <= 0:
        fail(f"a positive target, got {spec.targetSizeFloat}")
    return spec.metricName, spec.targetSizeFloat


def value_of(metrics_response, metric_name: str) -> float:
    if len(metrics_response.metricValues) != 1:
        fail(f"one metric value, got {metrics_response}")
    value = metrics_response.metricValues[0]
    if value.metricName != metric_name:
        fail(f"the value names the metric asked for, {metric_name}: {value.metricName}")
    if value.metricValue != value.metricValueFloat:
        fail(f"metricValue {value.metricValue} and metricValueFloat {value.metricValueFloat} agree")
    return value.metricValueFloat


def hpa_replicas(value: float, target: float, current: int, tolerance: float) -> int:
    usage_ratio = value / (target * current)
    if abs(1.0 - usage_ratio) <= tolerance:
        return current
    return math.ceil(value / target)


def sync(stub, pb, scaled: ScaledObject) -> str:
    reference = pb.ScaledObjectRef(
        name=scaled.name, namespace="shop", scalerMetadata=scaled.metadata
    )
    try:
        metric_name, target = target_of(stub.GetMetricSpec(reference))
        active = stub.IsActive(reference).result
    except grpc.RpcError as error:
        return f"replicas={scaled.replicas} value=- active=- error={error.code().name}"
    request = pb.GetMetricsRequest(scaledObjectRef=reference, metricName=metric_name)
    try:
        value = value_of(stub.GetMetrics(request), metric_name)
        again = value_of(stub.GetMetrics(request), metric_name)
    except grpc.RpcError as error:
        # The HPA cannot read the metric: it scales on nothing, the count stays.
        return (
            f"replicas={scaled.replicas} value=- active={int(active)} "
            f"error={error.code().name}"
        )
    if again != value:
        fail(f"polling twice in one period gives one value: {value} then {again}")
    scaled.replicas = hpa_replicas(value, target, scaled.replicas, scaled.tolerance)
    return f"replicas={scaled.replicas} value={value:g} active={int(active)} error=-"


def main() -> None:
    address, proto_dir = sys.argv[1], pathlib.Path(sys.argv[2])
    out_dir = pathlib.Path(tempfile.mkdtemp(prefix="keda-stubs-"))
    generate_stubs(proto_dir, out_dir)
    import externalscaler_pb2 as pb  # noqa: E402  (generated above)
    import externalscaler_pb2_grpc as pb_grpc  # noqa: E402

    stub = pb_grpc.ExternalScalerStub(grpc.insecure_channel(address))
    scaled_objects = {}
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "init":
            name, workload, replicas, tolerance, scale_up = words[1:6]
            scaled_objects[name] = ScaledObject(
                name, workload, int(replicas), float(tolerance), scale_up
            )
            print("ok", flush=True)
        elif words[0] == "sync":
            print(sync(stub, pb, scaled_objects[words[1]]), flush=True)
        else:
            fail(f"unknown command {line!r}")


if __name__ == "__main__":
    main()
