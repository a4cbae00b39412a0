//! prescale: learns each workload's metric history, forecasts it, and turns the forecast into a
//! pre-scaling plan that executors apply ahead of demand.
//!
//! Dependencies point one way: `cli` -> `app` -> `ingest` / `store` / `forecast` / `plan` / `events` /
//! `simulate` -> `domain`.

pub mod app;
pub mod atomic_file;
pub mod config;
pub mod domain;
pub mod events;
pub mod forecast;
pub mod ingest;
pub mod plan;
pub mod registry;
pub mod service;
pub mod simulate;
pub mod store;
