//! Pushed samples and events in a fleet of `prescale serve` processes on 127.0.0.1, coordinated
//! through a real etcd, with a real Prometheus (remote-write receiver on) as the TSDB: a `Push`
//! through any replica lands at each series' owner and in Prometheus before it is acknowledged;
//! after `kill -9` of an owner, the new owner refills the series from Prometheus and plans and
//! forecasts from the pushed samples; with Prometheus down a `Push` is refused and nothing is
//! stored, and a series gained by a handover answers `UNAVAILABLE` naming its refill (`GetPlan` and
//! `GetWorkload` alike) until the new owner has loaded its history; a sample that reaches
//! Prometheus after the new owner's refill (as an old owner that saw the move late writes it
//! through) reaches the new owner's store by its late top-up; an event added through one replica
//! is applied by the owner's plans on another, and removes of it through two replicas at once
//! count it once.

mod etcd_support;
mod fleet_support;
mod prometheus_support;

use std::time::{Duration, Instant};

use fleet_support::{Replica, ReplicaConfig, series_name, series_ref, upsert, workload_name};
use prescale::fleet::etcd::Etcd;
use prescale::service::proto::{
    self, ForecastRequest, GetPlanRequest, GetWorkloadRequest, ListEventsRequest,
    RemoveEventRequest, WriteRequest, event_service_client::EventServiceClient,
    forecast_service_client::ForecastServiceClient, ingest_service_client::IngestServiceClient,
    plan_service_client::PlanServiceClient,
};
use prometheus_support::{LocalPrometheus, http_get};
use tonic::transport::Channel;

/// Series pushed, one workload on each.
const SERIES: usize = 6;
/// Days of 30-minute history pushed per series.
const DAYS: usize = 10;
/// Samples pushed per series.
const SAMPLES: u64 = (DAYS * 48) as u64;

/// `DAYS` of 30-minute taxi demand ending at the last half hour, scaled per series.
fn history(index: usize) -> Vec<(i64, f64)> {
    let now = prescale::domain::Timestamp::now().as_millis();
    let last = now.div_euclid(30 * 60_000) * 30 * 60_000;
    let scale = 1.0 + index as f64 / 4.0;
    prometheus_support::nyc_taxi_ending_at(last, DAYS)
        .into_iter()
        .map(|(at, value)| (at, value * scale))
        .collect()
}

/// One message holding `samples` of each series in `indexes`.
fn message(indexes: &[usize], samples: impl Fn(usize) -> Vec<(i64, f64)>) -> WriteRequest {
    WriteRequest {
        series: indexes
            .iter()
            .map(|index| {
                let (timestamps_ms, values) = samples(*index).into_iter().unzip();
                proto::SeriesSamples {
                    series: Some(series_ref(*index)),
                    timestamps_ms,
                    values,
                }
            })
            .collect(),
    }
}

/// Waits until workload `name` answers GetPlan through every one of `replicas`.
async fn wait_planned(replicas: &[&Replica], name: &str, within: Duration) {
    let started = Instant::now();
    loop {
        let mut failures = Vec::new();
        for replica in replicas {
            if let Err(status) = PlanServiceClient::new(replica.channel().await)
                .get_plan(GetPlanRequest {
                    workload: name.to_owned(),
                })
                .await
            {
                failures.push(format!("{}: {status}", replica.id));
            }
        }
        if failures.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{name} not planned within {within:?}: {failures:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The seasonal naive forecast of `load_<index>` through `replica`: fitted on demand from the
/// owner's store, so two owners holding the same samples answer the same.
async fn forecast_mean(replica: &Replica, index: usize) -> Vec<f64> {
    ForecastServiceClient::new(replica.channel().await)
        .forecast(ForecastRequest {
            series: Some(series_ref(index)),
            horizon: "6h".to_owned(),
            model: "seasonal_naive".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("forecast through {}: {status}", replica.id))
        .into_inner()
        .mean
}

/// How long a first write may meet a fleet whose members are still turning active.
const SETTLE: Duration = Duration::from_secs(30);

/// Sends `messages` as one `Push` through `channel`, again while the answer is `UNAVAILABLE`
/// because the members are changing (replicas register as joining and turn active a moment after
/// they start, and two replicas may see that a moment apart): what the API asks a client to do.
/// Resending rewrites the same values, which the stores and Prometheus take as they are.
async fn push_settled(channel: Channel, messages: Vec<WriteRequest>) -> proto::WriteResponse {
    let deadline = Instant::now() + SETTLE;
    loop {
        let pushed = IngestServiceClient::new(channel.clone())
            .push(tokio_stream::iter(messages.clone()))
            .await;
        match pushed {
            Err(status)
                if status.code() == tonic::Code::Unavailable
                    && status.message().contains("members are changing")
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            pushed => return pushed.unwrap().into_inner(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_lands_at_the_owners_and_in_prometheus_and_outlives_a_kill_9() {
    if etcd_support::missing() || prometheus_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let prometheus = LocalPrometheus::start_accepting_history();
    let mut replicas: Vec<Replica> = ["r0", "r1", "r2"]
        .iter()
        .map(|id| {
            ReplicaConfig::new(id, &etcd.url)
                .tsdb(&prometheus.url)
                .start()
        })
        .collect();
    let through = replicas[0].channel().await;
    for index in 0..SERIES {
        PlanServiceClient::new(through.clone())
            .upsert_workload(upsert(index, None))
            .await
            .unwrap();
    }

    // Two messages through r0, each with every series: the older and the newer half.
    let indexes: Vec<usize> = (0..SERIES).collect();
    let half = DAYS * 24;
    let messages = vec![
        message(&indexes, |index| history(index)[..half].to_vec()),
        message(&indexes, |index| history(index)[half..].to_vec()),
    ];
    let pushed = push_settled(through.clone(), messages).await;
    assert_eq!(
        (pushed.accepted, pushed.batches),
        (SERIES as u64 * SAMPLES, 2)
    );

    // Acknowledged means written through: Prometheus holds every sample now, and each series is
    // stored by exactly one replica, its owner (several of them other than r0).
    let mut owners = Vec::new();
    for index in 0..SERIES {
        let name = series_name(index);
        assert_eq!(
            prometheus_support::samples_over(&prometheus.url, &name, "30d"),
            SAMPLES,
            "{name}"
        );
        let mut holders = Vec::new();
        for (position, replica) in replicas.iter().enumerate() {
            match replica.stored(&name).await {
                0 => {}
                SAMPLES => holders.push(position),
                other => panic!("{name}: {other} samples at {}", replica.id),
            }
        }
        assert_eq!(holders.len(), 1, "{name} stored at {holders:?}");
        owners.push(holders[0]);
    }
    eprintln!("owners: {owners:?}");
    assert!(owners.iter().any(|owner| *owner != 0), "{owners:?}");

    // A write marked as forwarded that reaches a non-owner is refused, not sent on.
    let stray = (0..SERIES).find(|index| owners[*index] != 0).unwrap();
    let mut marked = tonic::Request::new(message(&[stray], |index| history(index)[..1].to_vec()));
    marked
        .metadata_mut()
        .insert("x-prescale-forwarded", "1".parse().unwrap());
    let refused = IngestServiceClient::new(through.clone())
        .write(marked)
        .await
        .expect_err("a forwarded write to a non-owner");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");

    // Every workload is planned from the pushed samples, through every replica.
    for index in 0..SERIES {
        let all: Vec<&Replica> = replicas.iter().collect();
        wait_planned(&all, &format!("w{index}"), Duration::from_secs(180)).await;
    }
    let victim = (0..replicas.len())
        .max_by_key(|replica| owners.iter().filter(|owner| *owner == replica).count())
        .unwrap();
    let orphans: Vec<usize> = (0..SERIES)
        .filter(|index| owners[*index] == victim)
        .collect();
    let before: Vec<Vec<f64>> = {
        let mut means = Vec::new();
        for index in &orphans {
            means.push(forecast_mean(&replicas[victim], *index).await);
        }
        means
    };

    // kill -9 the owner of the most: the new owners refill from Prometheus, then plan and
    // forecast from the same samples.
    replicas[victim].kill();
    let killed = Instant::now();
    let survivors: Vec<&Replica> = replicas
        .iter()
        .enumerate()
        .filter(|(position, _)| *position != victim)
        .map(|(_, replica)| replica)
        .collect();
    for index in &orphans {
        wait_planned(&survivors, &format!("w{index}"), Duration::from_secs(120)).await;
    }
    eprintln!(
        "{} series of the killed replica planned again after {:?}",
        orphans.len(),
        killed.elapsed()
    );
    for (index, mean) in orphans.iter().zip(&before) {
        let name = series_name(*index);
        let mut refilled = Vec::new();
        for survivor in &survivors {
            refilled.push(survivor.stored(&name).await);
        }
        refilled.sort_unstable();
        assert_eq!(refilled, [0, SAMPLES], "{name} at the survivors");
        for survivor in &survivors {
            assert_eq!(forecast_mean(survivor, *index).await, *mean, "{name}");
        }
    }
    drop(etcd);
}

/// Replicas `a` and `b` on `etcd`, writing pushes through to and refilling from `prometheus`.
fn pair(etcd: &str, prometheus: &str) -> Vec<Replica> {
    ["a", "b"]
        .iter()
        .map(|id| ReplicaConfig::new(id, etcd).tsdb(prometheus).start())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_prometheus_down_a_push_is_refused_and_a_gained_series_is_unavailable_while_loading() {
    if etcd_support::missing() || prometheus_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let prometheus = LocalPrometheus::start_accepting_history();
    let mut replicas = pair(&etcd.url, &prometheus.url);
    let day = 48;
    let samples = history(0);
    push_settled(
        replicas[0].channel().await,
        vec![message(&[0], |_| samples[..day].to_vec())],
    )
    .await;
    let name = series_name(0);
    assert_eq!(
        prometheus_support::samples_over(&prometheus.url, &name, "30d"),
        day as u64
    );
    let owner = if replicas[0].stored(&name).await > 0 {
        0
    } else {
        1
    };
    assert_eq!(replicas[owner].stored(&name).await, day as u64);

    // A sample the store would refuse is refused before Prometheus gets any of the message.
    let invalid = IngestServiceClient::new(replicas[1 - owner].channel().await)
        .write(message(&[0], |_| {
            let mut next_day = samples[day..2 * day].to_vec();
            next_day[5].1 = f64::NAN;
            next_day
        }))
        .await
        .expect_err("a NaN sample");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument, "{invalid}");
    assert_eq!(
        prometheus_support::samples_over(&prometheus.url, &name, "30d"),
        day as u64
    );

    // Prometheus goes away: a push through the other replica is refused, and not stored.
    let url = prometheus.url.clone();
    drop(prometheus);
    assert!(http_get(&url, "/-/ready").is_none());
    let refused = IngestServiceClient::new(replicas[1 - owner].channel().await)
        .push(tokio_stream::iter(vec![message(&[0], |_| {
            samples[day..2 * day].to_vec()
        })]))
        .await
        .expect_err("a push the tsdb did not take");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");
    assert!(refused.message().contains("tsdb"), "{refused}");
    assert_eq!(replicas[owner].stored(&name).await, day as u64);

    // A workload on the series, then its owner killed: the survivor gains the series and cannot
    // load its history from Prometheus, so it answers for the workload neither its plan nor its
    // status (whose rule would be missing) but UNAVAILABLE saying that it is loading the history.
    PlanServiceClient::new(replicas[1 - owner].channel().await)
        .upsert_workload(upsert(0, None))
        .await
        .unwrap();
    replicas[owner].kill();
    let survivor = &replicas[1 - owner];
    let mut plans = PlanServiceClient::new(survivor.channel().await);
    let loading = loading(&survivor.id);
    let started = Instant::now();
    let refilling = loop {
        let answer = plans
            .get_plan(GetPlanRequest {
                workload: workload_name(0),
            })
            .await
            .expect_err("a plan of a series with no history");
        if answer.message() == loading {
            break answer;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the survivor did not take the series over within 30 s: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(refilling.code(), tonic::Code::Unavailable, "{refilling}");
    let status = plans
        .get_workload(GetWorkloadRequest {
            name: workload_name(0),
        })
        .await
        .expect_err("the status of a workload whose owner is loading its history");
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::Unavailable, loading.as_str())
    );
    drop(etcd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_added_through_one_replica_is_applied_by_the_owner_on_another() {
    if etcd_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let replicas: Vec<Replica> = ["e0", "e1"]
        .iter()
        .map(|id| ReplicaConfig::new(id, &etcd.url).start())
        .collect();
    // Both active before the push: without a TSDB, a series whose owner changed after it was
    // pushed would have no history at its new owner.
    let client = Etcd::connect(std::slice::from_ref(&etcd.url), Duration::from_secs(2))
        .await
        .unwrap();
    fleet_support::fleet_view(&client, replicas.len()).await;
    let channel = replicas[0].channel().await;
    PlanServiceClient::new(channel.clone())
        .upsert_workload(upsert(0, None))
        .await
        .unwrap();
    push_settled(channel, vec![message(&[0], history)]).await;
    let owner = if replicas[0].stored(&series_name(0)).await > 0 {
        0
    } else {
        1
    };
    let other = &replicas[1 - owner];
    wait_planned(&[&replicas[owner]], "w0", Duration::from_secs(120)).await;

    let now = prescale::domain::Timestamp::now().as_millis();
    EventServiceClient::new(other.channel().await)
        .add_event(proto::Event {
            name: "launch".to_owned(),
            start_ms: now + 2 * 3_600_000,
            end_ms: now + 4 * 3_600_000,
            multiplier: Some(2.0),
            like: String::new(),
        })
        .await
        .unwrap();
    let mut owners_plans = PlanServiceClient::new(replicas[owner].channel().await);
    let started = Instant::now();
    loop {
        let plan = owners_plans
            .get_plan(GetPlanRequest {
                workload: "w0".to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        if plan
            .applied_events
            .iter()
            .any(|event| event.contains("launch"))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the owner's plan never applied the event: {:?} {:?}",
            plan.applied_events,
            plan.skipped_events
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Removed through the owner, it leaves the other replica's events too.
    let removed = EventServiceClient::new(replicas[owner].channel().await)
        .remove_event(RemoveEventRequest {
            name: "launch".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.removed, 1);
    let started = Instant::now();
    let mut others_events = EventServiceClient::new(other.channel().await);
    while !others_events
        .list_events(ListEventsRequest {})
        .await
        .unwrap()
        .into_inner()
        .events
        .is_empty()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the event stayed at {}",
            other.id
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(etcd);
}

/// `RemoveEvent` of one name through two replicas at once, several rounds: between them they
/// answer each event removed once, as their deletes in etcd deleted it, and the one whose delete
/// found nothing left answers `NOT_FOUND`. (Counted from each replica's read before its delete,
/// both answered every event in most rounds.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_event_through_two_replicas_at_once_counts_each_event_once() {
    if etcd_support::missing() {
        return;
    }
    /// Rounds of adds then two removes at once.
    const ROUNDS: usize = 10;
    /// Events called `launch` added in each round.
    const EVENTS: u32 = 3;
    let etcd = etcd_support::LocalEtcd::start();
    let replicas: Vec<Replica> = ["e0", "e1"]
        .iter()
        .map(|id| ReplicaConfig::new(id, &etcd.url).start())
        .collect();
    let mut first = EventServiceClient::new(replicas[0].channel().await);
    let mut second = EventServiceClient::new(replicas[1].channel().await);
    let now = prescale::domain::Timestamp::now().as_millis();
    for round in 0..ROUNDS {
        for index in 0..EVENTS {
            let start_ms = now + i64::from(index + 1) * 3_600_000;
            first
                .add_event(proto::Event {
                    name: "launch".to_owned(),
                    start_ms,
                    end_ms: start_ms + 1_800_000,
                    multiplier: Some(2.0),
                    like: String::new(),
                })
                .await
                .unwrap();
        }
        let remove = || RemoveEventRequest {
            name: "launch".to_owned(),
        };
        let (by_first, by_second) =
            tokio::join!(first.remove_event(remove()), second.remove_event(remove()));
        let mut removed = 0;
        for answer in [by_first, by_second] {
            match answer {
                Ok(response) => {
                    let count = response.into_inner().removed;
                    assert!(count > 0, "round {round}: OK with nothing removed");
                    removed += count;
                }
                Err(status) => {
                    assert_eq!(
                        status.code(),
                        tonic::Code::NotFound,
                        "round {round}: {status}"
                    );
                }
            }
        }
        assert_eq!(removed, EVENTS, "round {round}: removed in all");
    }
    drop(etcd);
}

/// The join timeout of the replica that joins in
/// [`a_joining_replica_refills_loads_and_plans_its_share_then_turns_active_before_its_join_timeout`]:
/// far more than warming its share takes, so turning active before half of it shows it warmed.
const JOIN_TIMEOUT: Duration = Duration::from_secs(90);

/// Waits until `replica`, just started, is ready (health `SERVING`: active in the fleet), which must
/// come before half of [`JOIN_TIMEOUT`]; returns how long it took.
async fn wait_active(replica: &Replica, started: Instant) -> Duration {
    while replica.health("").await
        != tonic_health::pb::health_check_response::ServingStatus::Serving
    {
        assert!(
            started.elapsed() < JOIN_TIMEOUT / 2,
            "{} still joining after {:?} (join_timeout {JOIN_TIMEOUT:?})",
            replica.id,
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(replica.gauge("prescale_fleet_joining"), Some(0.0));
    started.elapsed()
}

/// Asserts that `joined`, active now, holds the pushed samples of every series of `share`,
/// answers their plans itself and made them with the fleet's stored versions, not with fits.
async fn assert_warmed(joined: &Replica, share: &[usize]) {
    for index in share {
        assert_eq!(
            joined.stored(&series_name(*index)).await,
            SAMPLES,
            "load_{index}"
        );
        PlanServiceClient::new(joined.channel().await)
            .get_plan(GetPlanRequest {
                workload: format!("w{index}"),
            })
            .await
            .unwrap_or_else(|status| panic!("w{index} through {}: {status}", joined.id));
    }
    assert_eq!(joined.counter("prescale_model_fits_total"), 0.0);
    assert!(joined.counter("prescale_models_loaded_total") >= share.len() as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_replica_refills_loads_and_plans_its_share_then_turns_active_before_its_join_timeout()
 {
    if etcd_support::missing() || prometheus_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let prometheus = LocalPrometheus::start_accepting_history();
    let store = tempfile::tempdir().unwrap();
    let config = |id: &str| {
        ReplicaConfig::new(id, &etcd.url)
            .tsdb(&prometheus.url)
            .model_store(store.path())
            .metrics()
            .join_timeout(JOIN_TIMEOUT)
    };
    let first = config("j0").start();
    // Alone, j0 owns every series once it is active; a push before that finds no owner.
    wait_active(&first, Instant::now()).await;
    let channel = first.channel().await;
    for index in 0..SERIES {
        PlanServiceClient::new(channel.clone())
            .upsert_workload(upsert(index, None))
            .await
            .unwrap();
    }
    let indexes: Vec<usize> = (0..SERIES).collect();
    push_settled(channel, vec![message(&indexes, history)]).await;
    for index in 0..SERIES {
        wait_planned(&[&first], &format!("w{index}"), Duration::from_secs(180)).await;
    }
    let share: Vec<usize> = fleet_support::share_of(&["j0", "j1"], "j1", SERIES)
        .into_iter()
        .collect();
    assert!((1..SERIES).contains(&share.len()), "j1's share: {share:?}");

    // A new replica (an empty data directory) refills its future share from Prometheus, loads
    // the stored versions and plans them while joining, and turns active once it has.
    let started = Instant::now();
    let mut second = config("j1").start();
    eprintln!(
        "j1 active {:?} after it started",
        wait_active(&second, started).await
    );
    assert_warmed(&second, &share).await;

    // Killed and restarted with the same id and data directory, once j0 has taken its share
    // back: the same, with the store holding what it had.
    second.kill();
    let client = Etcd::connect(std::slice::from_ref(&etcd.url), Duration::from_secs(2))
        .await
        .unwrap();
    fleet_support::fleet_view(&client, 1).await;
    for index in &share {
        wait_planned(&[&first], &format!("w{index}"), Duration::from_secs(60)).await;
    }
    let started = Instant::now();
    second.restart();
    eprintln!(
        "j1 active {:?} after its restart",
        wait_active(&second, started).await
    );
    assert_warmed(&second, &share).await;
    drop(etcd);
}

/// What a call about a workload answers while `member`, its owner, refills its series.
fn loading(member: &str) -> String {
    format!(
        "member {member} owns this series and is loading its history from the fleet's tsdb after a handover; retry"
    )
}

/// Waits (up to `within`) until `replica` stores `samples` samples of series `load_<index>`; with
/// `not_loading`, checks at each look that its workload does not answer as loading its history
/// meanwhile (a refill after a handover does answer so, rightly, while it reads).
async fn wait_stored(
    replica: &Replica,
    index: usize,
    samples: u64,
    within: Duration,
    not_loading: bool,
) {
    let name = series_name(index);
    let loading = loading(&replica.id);
    let started = Instant::now();
    loop {
        let stored = replica.stored(&name).await;
        if stored == samples {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{} stores {stored} samples of {name}, not {samples}, after {within:?}",
            replica.id
        );
        if not_loading
            && let Err(status) = PlanServiceClient::new(replica.channel().await)
                .get_plan(GetPlanRequest {
                    workload: workload_name(index),
                })
                .await
        {
            assert_ne!(status.message(), loading, "{}", replica.id);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_written_through_after_the_new_owners_refill_reaches_its_store_by_the_late_top_up()
{
    if etcd_support::missing() || prometheus_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let prometheus = LocalPrometheus::start_accepting_history();
    let mut replicas = pair(&etcd.url, &prometheus.url);
    // Both active, so that the series has its owner from the push on and the survivor gains it
    // only at the kill. (An upsert through `a` is fenced on the members: once it is applied, `a`
    // has seen `b` active.)
    let client = Etcd::connect(std::slice::from_ref(&etcd.url), Duration::from_secs(2))
        .await
        .unwrap();
    fleet_support::fleet_view(&client, 2).await;
    let through = replicas[0].channel().await;
    PlanServiceClient::new(through.clone())
        .upsert_workload(upsert(0, None))
        .await
        .unwrap();
    let samples = history(0);
    push_settled(through, vec![message(&[0], |_| samples.clone())]).await;
    let name = series_name(0);
    let owner = usize::from(fleet_support::share_of(&["a", "b"], "b", 1).contains(&0));
    let survivor = 1 - owner;
    assert_eq!(
        (
            replicas[owner].stored(&name).await,
            replicas[survivor].stored(&name).await
        ),
        (SAMPLES, 0)
    );

    // The owner is killed; once its lease expires the survivor gains the series and refills it.
    replicas[owner].kill();
    wait_stored(
        &replicas[survivor],
        0,
        SAMPLES,
        Duration::from_secs(60),
        false,
    )
    .await;

    // A sample in Prometheus that the refill did not read, as an old owner that saw the move
    // late would have written it through: in the TSDB, not in the new owner's store.
    let last = samples.last().unwrap().0;
    let at = (prescale::domain::Timestamp::now().as_millis() - 1_000).max(last + 1);
    prometheus_support::remote_write(&prometheus.url, &name, &[(at, 4242.0)]).await;
    assert_eq!(
        prometheus_support::samples_over(&prometheus.url, &name, "30d"),
        SAMPLES + 1
    );

    // Once every old owner must have seen the move (the lease TTL, the longest write-through and
    // a margin after it), the new owner reads the series again, without answering as loading.
    wait_stored(
        &replicas[survivor],
        0,
        SAMPLES + 1,
        Duration::from_secs(60),
        true,
    )
    .await;
    drop(etcd);
}
