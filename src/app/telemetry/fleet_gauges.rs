//! The fleet state of this replica as gauges: whether it holds its etcd lease, whether it serves
//! read-only after losing etcd, and whether it is joining (warming its share). Rendered only in
//! fleet mode (once a fleet view was recorded), so a replica running alone shows none of them.

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

/// The latest fleet state, `None` until the replica joins a fleet.
#[derive(Debug, Default)]
pub(super) struct FleetGauges {
    /// `(etcd connected, read-only, joining)`, set at every change of the fleet view.
    state: Mutex<Option<[bool; 3]>>,
}

/// Name and help of each gauge, in the order of [`FleetGauges::state`].
const FLEET_GAUGES: [(&str, &str); 3] = [
    (
        "prescale_fleet_etcd_connected",
        "1 while this replica holds its etcd lease (renewed within the step-down deadline); 0 after it stepped down, until it has registered again",
    ),
    (
        "prescale_fleet_read_only",
        "1 while this replica, having lost etcd, serves its last plans read-only (no planning, fleet-wide writes refused)",
    ),
    (
        "prescale_fleet_joining",
        "1 while this replica is joining the fleet: planning the share it will own before turning active",
    ),
];

impl FleetGauges {
    pub(super) fn set(&self, connected: bool, read_only: bool, joining: bool) {
        *self.state.lock() = Some([connected, read_only, joining]);
    }
}

impl Collector for FleetGauges {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(values) = *self.state.lock() else {
            return Ok(());
        };
        for ((name, help), value) in FLEET_GAUGES.iter().zip(values) {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(i64::from(value)).encode(metric)?;
        }
        Ok(())
    }
}
