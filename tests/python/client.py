"""A stock Python gRPC client against a running prescale server.

Usage: client.py HOST:PORT PROTO_DIR

Generates stubs from PROTO_DIR with grpcio-tools, then: checks health (grpc.health.v1), lists the
services by server reflection (v1alpha, the only version grpcio's reflection client speaks), pushes
ten days of a daily cycle, gets a forecast, upserts a workload and polls GetPlan until its first plan.
Exits non-zero, with the reason on stderr, when anything is not as the API documents it.
"""

import math
import pathlib
import sys
import tempfile
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_tools import protoc

STEP_MS = 300_000
DAY_MS = 86_400_000
START_MS = 1_420_070_400_000


def generate_stubs(proto_dir: pathlib.Path, out_dir: pathlib.Path) -> None:
    files = sorted(str(path) for path in (proto_dir / "prescale" / "v1").glob("*.proto"))
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    code = protoc.main(
        [
            "protoc",
            f"-I{proto_dir}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *files,
        ]
    )
    if code != 0:
        sys.exit(f"protoc failed with {code}")
    sys.path.insert(0, str(out_dir))


def check(condition: bool, what: str) -> None:
    if not condition:
        sys.exit(f"check failed: {what}")


def main() -> None:
    address, proto_dir = sys.argv[1], pathlib.Path(sys.argv[2])
    out_dir = pathlib.Path(tempfile.mkdtemp(prefix="prescale-stubs-"))
    generate_stubs(proto_dir, out_dir)
    from prescale.v1 import (  # noqa: E402  (generated above)
        admin_pb2,
        admin_pb2_grpc,
        common_pb2,
        forecast_pb2,
        forecast_pb2_grpc,
        ingest_pb2,
        ingest_pb2_grpc,
        plan_pb2,
        plan_pb2_grpc,
    )

    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=30)

    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="prescale.v1.ForecastService")
    )
    check(health.status == health_pb2.HealthCheckResponse.SERVING, f"health {health}")
    print("health: SERVING")

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {service.name for reply in replies for service in reply.list_services_response.service}
    for name in ["prescale.v1.IngestService", "prescale.v1.PlanService", "grpc.health.v1.Health"]:
        check(name in names, f"reflection lists {name}: {sorted(names)}")
    print(f"reflection (v1alpha): {len(names)} services")

    series = common_pb2.SeriesRef(name="python_load", labels={"client": "grpcio"})
    timestamps = [START_MS + index * STEP_MS for index in range(10 * 288)]
    values = [
        500.0 + 300.0 * math.sin((time_ms % DAY_MS) / DAY_MS * 2 * math.pi) + (index % 7)
        for index, time_ms in enumerate(timestamps)
    ]
    ingest = ingest_pb2_grpc.IngestServiceStub(channel)
    written = ingest.Push(
        iter(
            ingest_pb2.WriteRequest(
                series=[
                    common_pb2.SeriesSamples(
                        series=series,
                        timestamps_ms=timestamps[day * 288 : (day + 1) * 288],
                        values=values[day * 288 : (day + 1) * 288],
                    )
                ]
            )
            for day in range(10)
        )
    )
    check(written.accepted == 2880 and written.batches == 10, f"push reply {written}")
    print(f"push: {written.accepted} samples in {written.batches} messages")

    try:
        ingest.Write(
            ingest_pb2.WriteRequest(
                series=[common_pb2.SeriesSamples(series=series, timestamps_ms=[1], values=[math.nan])]
            )
        )
        sys.exit("a NaN sample was accepted")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"NaN refused with {error.code()}")

    forecast = forecast_pb2_grpc.ForecastServiceStub(channel).Forecast(
        forecast_pb2.ForecastRequest(series=series, horizon="1d", levels=[80, 95])
    )
    check(len(forecast.mean) == 288, f"forecast has {len(forecast.mean)} steps")
    check([band.level for band in forecast.bands] == [80.0, 95.0], "bands 80 and 95")
    check(forecast.start_ms == START_MS + 10 * DAY_MS, "forecast starts after the history")
    check(abs(sum(member.weight for member in forecast.members) - 1.0) < 1e-6, "weights sum to 1")
    print(f"forecast: {len(forecast.mean)} steps, model {forecast.model.version}")

    plans = plan_pb2_grpc.PlanServiceStub(channel)
    plans.UpsertWorkload(
        plan_pb2.UpsertWorkloadRequest(
            workload=plan_pb2.Workload(
                name="python-api",
                series=series,
                capacity_per_replica=50.0,
                max_replicas=100,
                warm_up="10m",
            )
        )
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            plan = plans.GetPlan(plan_pb2.GetPlanRequest(workload="python-api"))
            break
        except grpc.RpcError as error:
            check(error.code() == grpc.StatusCode.UNAVAILABLE, f"GetPlan failed with {error}")
            check(time.monotonic() < deadline, "a plan within two minutes")
            time.sleep(0.1)
    steps = plan.steps
    check(len(steps.at_ms) == 288, f"plan has {len(steps.at_ms)} steps")
    check(
        all(low <= desired <= high for low, desired, high in zip(steps.low, steps.desired, steps.high, strict=True)),
        "low <= desired <= high",
    )
    check(plan.mode == "forecast-only", f"default mode {plan.mode}")
    peak = max(steps.desired)
    print(f"plan: revision {plan.revision}, {len(steps.at_ms)} steps, peak {peak} replicas")

    series_list = admin_pb2_grpc.AdminServiceStub(channel).ListSeries(admin_pb2.ListSeriesRequest())
    check(any(info.series.name == "python_load" for info in series_list.series), "series listed")
    print("ok")


if __name__ == "__main__":
    main()
