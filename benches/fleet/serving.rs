//! Serving through the fleet: workloads whose history is a real Prometheus, planned by three
//! replicas; `GetPlan` latency through a non-owner (one forwarded hop) against a direct call to
//! the owner, and the time from `kill -9` of a replica until every workload it owned answers again
//! through the survivors.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prescale::domain::SeriesId;
use prescale::fleet::etcd::Etcd;
use prescale::service::proto::{self, plan_service_client::PlanServiceClient};
use tonic::transport::Channel;

use crate::fleet_support::fleet_view;
use crate::fleet_support::{self, Replica, get_plan, series_name, workload_name};
use crate::prometheus_support::{self, LocalPrometheus, Seed};
use crate::replica::{self, FleetSettings, cpu_seconds};
use crate::{Summary, summary};

/// Days of 30-minute history of each workload's series.
const HISTORY_DAYS: usize = 10;
/// Calls of one kind in a block; blocks of direct and forwarded calls alternate.
const BLOCK: usize = 500;

/// Three replicas planning `workloads` workloads, each on its own series in a local Prometheus.
pub(crate) struct ServingFleet {
    /// The replicas, `r0`, `r1`, `r2`.
    pub(crate) replicas: Vec<Replica>,
    /// One connection per replica.
    channels: Vec<Channel>,
    /// The workload names.
    names: Vec<String>,
    /// A client of the fleet's etcd.
    etcd: Etcd,
    _prometheus: LocalPrometheus,
}

impl ServingFleet {
    /// Starts Prometheus (seeded with the taxi series, scaled per workload) and three replicas,
    /// upserts the workloads through `r0` and waits until all are planned.
    pub(crate) async fn start(settings: &FleetSettings, workloads: usize) -> Self {
        let now = prescale::domain::Timestamp::now().as_millis();
        let last = now.div_euclid(30 * 60_000) * 30 * 60_000;
        let taxi = prometheus_support::nyc_taxi_ending_at(last, HISTORY_DAYS);
        let scaled: Vec<(String, Vec<(i64, f64)>)> = (0..workloads)
            .map(|index| {
                let scale = 1.0 + index as f64 / workloads as f64;
                let samples = taxi
                    .iter()
                    .map(|(at, value)| (*at, value * scale))
                    .collect();
                (format!("load{{w=\"{index}\"}}"), samples)
            })
            .collect();
        let seeds: Vec<Seed<'_>> = scaled
            .iter()
            .map(|(name, samples)| Seed {
                name: name.clone(),
                samples,
            })
            .collect();
        let prometheus = LocalPrometheus::start(&seeds);
        let replicas: Vec<Replica> = ["r0", "r1", "r2"]
            .iter()
            .map(|id| replica::start(id, settings))
            .collect();
        let mut channels = Vec::new();
        for member in &replicas {
            channels.push(replica::channel(member).await);
        }
        let mut plans = PlanServiceClient::new(channels[0].clone());
        for index in 0..workloads {
            plans
                .upsert_workload(upsert(index, &prometheus.url))
                .await
                .expect("the workload is stored");
        }
        let etcd = Etcd::connect(std::slice::from_ref(&settings.etcd), Duration::from_secs(5))
            .await
            .expect("etcd answers");
        let fleet = Self {
            replicas,
            channels,
            names: (0..workloads).map(workload_name).collect(),
            etcd,
            _prometheus: prometheus,
        };
        let started = Instant::now();
        fleet.wait_until_answered(&[0, 1, 2], &fleet.names).await;
        println!(
            "{workloads} workloads planned and answered through all 3 replicas after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let (records, _) = fleet
            .etcd
            .get_prefix("/prescale/workloads/")
            .await
            .expect("etcd answers");
        let bytes: usize = records
            .iter()
            .map(|record| record.key.len() + record.value.len())
            .sum();
        println!(
            "workload records in etcd: {} keys, {bytes} bytes of keys and values ({:.0} per workload)",
            records.len(),
            bytes as f64 / records.len().max(1) as f64
        );
        fleet
    }

    /// Owner (replica index) of each workload, from the members in etcd.
    async fn owners(&self) -> Vec<usize> {
        let view = fleet_view(&self.etcd, self.replicas.len()).await;
        (0..self.names.len())
            .map(|index| {
                let series = SeriesId::new(&series_name(index)).expect("a valid series name");
                let owner = view
                    .owner_of(&series.to_string())
                    .expect("an active member");
                self.replicas
                    .iter()
                    .position(|replica| replica.id == owner.id)
                    .expect("the owner is one of ours")
            })
            .collect()
    }

    /// Polls until every one of `names` answers `GetPlan` through every replica at `through`;
    /// panics after 5 minutes.
    async fn wait_until_answered(&self, through: &[usize], names: &[String]) {
        let started = Instant::now();
        let mut pending: Vec<&String> = names.iter().collect();
        while !pending.is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "{pending:?} not answered within 5 minutes"
            );
            let mut still = Vec::new();
            for name in pending {
                let mut answered = true;
                for index in through {
                    answered &= get_plan(self.channels[*index].clone(), name).await.is_ok();
                }
                if !answered {
                    still.push(name);
                }
            }
            pending = still;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `calls` GetPlan calls each way, one at a time from one client, in alternating blocks: to
    /// the owner directly, and to a non-owner (the two others in turn), which forwards.
    pub(crate) async fn forwarding(&self, calls: usize) -> Forwarding {
        let owners = self.owners().await;
        let mut direct = Vec::with_capacity(calls);
        let mut forwarded = Vec::with_capacity(calls);
        let mut cpu = [0.0_f64; 2];
        let mut call = 0;
        while direct.len() < calls || forwarded.len() < calls {
            for (kind, latencies) in [&mut direct, &mut forwarded].into_iter().enumerate() {
                let before = self.cpu_seconds();
                for _ in 0..BLOCK.min(calls - latencies.len()) {
                    let workload = call % self.names.len();
                    let owner = owners[workload];
                    let target = if kind == 0 {
                        owner
                    } else {
                        (owner + 1 + call % 2) % self.replicas.len()
                    };
                    let started = Instant::now();
                    get_plan(self.channels[target].clone(), &self.names[workload])
                        .await
                        .unwrap_or_else(|status| panic!("GetPlan through {target}: {status}"));
                    latencies.push(started.elapsed());
                    call += 1;
                }
                cpu[kind] += self.cpu_seconds() - before;
            }
        }
        Forwarding {
            direct: summary(&mut direct),
            forwarded: summary(&mut forwarded),
            cpu_per_call: [cpu[0] / calls as f64, cpu[1] / calls as f64],
        }
    }

    /// CPU seconds used so far by the running replicas together.
    fn cpu_seconds(&self) -> f64 {
        self.replicas
            .iter()
            .filter_map(Replica::pid)
            .map(cpu_seconds)
            .sum()
    }

    /// `kills` times: `kill -9` of one replica (each in turn), the time until every workload it
    /// owned answers through both survivors; then the replica restarts on its data directory and
    /// every workload answers through all three again before the next kill.
    pub(crate) async fn reownership(&mut self, kills: usize) -> Vec<Reowned> {
        let mut results = Vec::new();
        for kill in 0..kills {
            let victim = kill % self.replicas.len();
            let owners = self.owners().await;
            let orphans: Vec<String> = (0..self.names.len())
                .filter(|index| owners[*index] == victim)
                .map(workload_name)
                .collect();
            let survivors: Vec<usize> = (0..self.replicas.len())
                .filter(|index| *index != victim)
                .collect();
            self.replicas[victim].kill();
            let killed = Instant::now();
            self.wait_until_answered(&survivors, &orphans).await;
            let elapsed = killed.elapsed();
            println!(
                "kill {}: {} ({} workloads) re-owned and answered after {:.2} s",
                kill + 1,
                self.replicas[victim].id,
                orphans.len(),
                elapsed.as_secs_f64()
            );
            results.push(Reowned {
                workloads: orphans.len(),
                elapsed,
            });
            self.replicas[victim].restart();
            self.channels[victim] = replica::channel(&self.replicas[victim]).await;
            self.wait_until_answered(&[0, 1, 2], &self.names).await;
        }
        results
    }
}

/// What the forwarding phase measured.
pub(crate) struct Forwarding {
    /// Direct calls to the owner.
    pub(crate) direct: Summary,
    /// Calls through a non-owner.
    pub(crate) forwarded: Summary,
    /// CPU seconds of the three replicas together per call: direct, forwarded.
    pub(crate) cpu_per_call: [f64; 2],
}

/// One kill of the re-ownership phase.
pub(crate) struct Reowned {
    /// Workloads the killed replica owned.
    pub(crate) workloads: usize,
    /// From the kill until all of them answered through both survivors.
    pub(crate) elapsed: Duration,
}

/// Workload `w<index>` on series `load_<index>`, its history pulled from `prometheus`: the fleet
/// tests' workload, but in the default mode (forecast-only), as the benchmark plans and serves
/// without scaling.
fn upsert(index: usize, prometheus: &str) -> proto::UpsertWorkloadRequest {
    let mut request = fleet_support::upsert(index, Some(prometheus));
    if let Some(workload) = &mut request.workload {
        workload.mode = String::new();
    }
    request
}

impl ServingFleet {
    /// Workloads per replica index.
    pub(crate) async fn spread(&self) -> BTreeMap<usize, usize> {
        let mut counts = BTreeMap::new();
        for owner in self.owners().await {
            *counts.entry(owner).or_default() += 1;
        }
        counts
    }
}
