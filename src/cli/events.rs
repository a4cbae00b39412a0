//! `prescale events`: the planned events (launches, sales) stored beside the metric store.

use anyhow::Result;
use clap::Subcommand;
use prescale::app::EventStore;
use prescale::config::Config;
use prescale::events::{EventSpec, Uplift};

use super::DataDirUse;
use super::args::DataDirArg;
use crate::output::outln;

#[derive(Debug, Subcommand)]
pub(super) enum EventsCommand {
    /// Add (or replace) a planned event.
    Add {
        /// Event name; past events with this name teach its uplift.
        #[arg(long)]
        name: String,
        /// Start (RFC 3339).
        #[arg(long)]
        start: String,
        /// End (RFC 3339).
        #[arg(long)]
        end: String,
        /// Fixed uplift of the base forecast instead of a learned one.
        #[arg(long, conflicts_with = "like")]
        multiplier: Option<f64>,
        /// Learn the uplift from past events of this name.
        #[arg(long)]
        like: Option<String>,
        #[command(flatten)]
        data_dir: DataDirArg,
    },
    /// List stored events.
    List {
        #[command(flatten)]
        data_dir: DataDirArg,
    },
    /// Remove every event with this name.
    Remove {
        /// Event name.
        name: String,
        #[command(flatten)]
        data_dir: DataDirArg,
    },
}

impl EventsCommand {
    /// The data directory whose `events.toml` the command reads or writes.
    pub(super) fn data_dir(&self) -> &DataDirArg {
        match self {
            Self::Add { data_dir, .. }
            | Self::List { data_dir }
            | Self::Remove { data_dir, .. } => data_dir,
        }
    }
}

/// `prescale events add|list|remove`, on `DATA_DIR/events.toml`.
pub(super) fn events(config: &Config, command: EventsCommand) -> Result<()> {
    let access = match command {
        EventsCommand::Add { .. } => DataDirUse::Create,
        EventsCommand::List { .. } | EventsCommand::Remove { .. } => DataDirUse::Existing,
    };
    let store = EventStore::new(access.data_dir(config)?);
    match command {
        EventsCommand::Add {
            name,
            start,
            end,
            multiplier,
            like,
            ..
        } => {
            store.add(&EventSpec {
                name: name.clone(),
                start,
                end,
                multiplier,
                like,
            })?;
            outln!("stored event {name}")?;
        }
        EventsCommand::List { .. } => {
            let calendar = store.load()?;
            if calendar.events().is_empty() {
                outln!("no events stored")?;
            }
            for event in calendar.events() {
                let uplift = match event.uplift() {
                    Uplift::Learned => "learned from past occurrences".to_owned(),
                    Uplift::Like(past) => format!("learned from {past}"),
                    Uplift::Multiplier(multiplier) => format!("x{multiplier}"),
                };
                outln!(
                    "{:<24} {} .. {}  {uplift}",
                    event.name(),
                    event.range().from(),
                    event.range().to()
                )?;
            }
        }
        EventsCommand::Remove { name, .. } => {
            let removed = store.remove(&name)?;
            outln!("removed {removed} event(s) named {name}")?;
        }
    }
    Ok(())
}
