//! prescale: learns each workload's metric history, forecasts it, and turns the forecast into a
//! pre-scaling plan that executors apply ahead of demand.
//!
//! Dependencies point one way: `cli` -> `app` -> `ingest` / `store` -> `domain`.

pub mod app;
pub mod config;
pub mod domain;
pub mod ingest;
pub mod store;
