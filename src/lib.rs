//! prescale: learns each workload's metric history, forecasts it, and turns the forecast into a
//! pre-scaling plan that executors apply ahead of demand.
//!
//! Dependencies point one way, downwards:
//!
//! ```text
//! config          the TOML file, validated once into each layer's settings
//! service         tonic adapters (proto <-> domain), health, reflection, /metrics
//! app             use cases over a store; the serving state: workloads, plans, live models, jobs
//! fleet           membership and ownership of series among replicas, through etcd
//! simulate        replays history: predictive plans against the HPA and an oracle
//! registry        versioned model files and the manifest
//! store  ingest   the metric store (Polars, WAL, Parquet); CSV/Parquet parsing, the Prometheus
//!                 query client
//! events          planned events and their learned uplift
//! forecast  plan  models (Fit/Predict on slices) and the planner; no I/O, no runtime
//! atomic_file     crash-safe file replacement, shared by store and registry
//! domain          series ids, time, series, forecasts: plain values
//! ```
//!
//! A module may import those listed below it (`registry` uses `forecast`; `simulate` uses `plan`,
//! `forecast` and `events`), never one above. `domain`, `forecast` and `plan` name no server,
//! runtime or dataframe crate. `tests/layering.rs` checks both on the source, so CI fails on an
//! import that points upwards. The binary's command line (`src/cli`, `src/demo.rs`, the benches)
//! sits on top of all of them.

pub mod app;
pub mod atomic_file;
pub mod config;
pub mod domain;
pub mod events;
pub mod fleet;
pub mod forecast;
pub mod ingest;
pub mod plan;
pub mod registry;
pub mod service;
pub mod simulate;
pub mod store;
