//! The model registry's commands: `retrain` and `models list|show|rollback`.
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use prescale::app::{self, EventStore};
use prescale::config::Config;
use prescale::domain::{SeriesId, Timestamp};
use prescale::registry::VersionInfo;

use super::args::{DataDirArg, StoreArgs};
use super::server_client::ServerArgs;
use super::{DataDirUse, open, open_registry, retrain_client};
use crate::output::outln;

#[derive(Debug, Args)]
pub(super) struct RetrainArgs {
    /// Every stored series.
    #[arg(long, conflicts_with = "series", required_unless_present = "series")]
    all: bool,
    /// Series to retrain (`NAME` or `NAME{k="v"}`); repeatable.
    #[arg(long, num_args = 1..)]
    series: Vec<String>,
    /// Fit and compare, but write nothing to the registry.
    #[arg(long, conflicts_with = "server")]
    dry_run: bool,
    /// Series fitted at once [default: `registry.concurrency`].
    #[arg(long, conflicts_with = "server")]
    concurrency: Option<usize>,
    /// With `--server`, the server retrains through its Retrain RPC and the job is followed.
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    pub(super) store: StoreArgs,
}

#[derive(Debug, Subcommand)]
pub(super) enum ModelsCommand {
    /// One line per series: live version, versions stored, backtest figures of the live one (in a
    /// fleet with a model store: the fleet's live pointers and the store's versions).
    List {
        #[command(flatten)]
        data_dir: DataDirArg,
    },
    /// Every version of a series with its figures and decision; marks the live one (in a fleet
    /// with a model store: the store's versions, the live one per its pointer in etcd).
    Show {
        /// Series (`NAME` or `NAME{k="v"}`).
        name: String,
        #[command(flatten)]
        data_dir: DataDirArg,
    },
    /// Make an earlier version live: VERSION, or by default the previous live version. In a fleet
    /// with a model store, moves the series' live pointer in etcd.
    Rollback {
        /// Series (`NAME` or `NAME{k="v"}`).
        name: String,
        /// Version to make live.
        version: Option<u64>,
        #[command(flatten)]
        data_dir: DataDirArg,
    },
    /// In a fleet with a model store: make the store this fleet's, whichever fleet claimed it
    /// before. For a fleet whose etcd was rebuilt (it has a new fleet id, and its replicas are
    /// refused by the store's old claim); never for two fleets at once.
    ClaimStore {
        #[command(flatten)]
        data_dir: DataDirArg,
    },
}

impl ModelsCommand {
    /// The data directory the registry lives in unless `registry.dir` says otherwise.
    pub(super) fn data_dir(&self) -> &DataDirArg {
        match self {
            Self::List { data_dir }
            | Self::Show { data_dir, .. }
            | Self::Rollback { data_dir, .. }
            | Self::ClaimStore { data_dir } => data_dir,
        }
    }
}

/// `prescale retrain`: bounded parallel fits, a progress bar on a terminal, one line per series.
/// With `--server`, the server runs it (see [`retrain_client`]).
pub(super) fn retrain(config: &Config, args: &RetrainArgs) -> Result<()> {
    use std::io::IsTerminal;

    let named: Vec<SeriesId> = args
        .series
        .iter()
        .map(|name| name.parse())
        .collect::<Result<_, _>>()?;
    if let Some(target) = args.server.target() {
        return retrain_client::retrain_on_server(&target, &named);
    }
    let (app, _) = open(config, DataDirUse::Create)?;
    let registry = open_registry(config, DataDirUse::Create)?;
    let series = if args.all {
        app.store().series()
    } else {
        named
    };
    let settings = app::RetrainSettings {
        dry_run: args.dry_run,
        events: EventStore::new(&config.data_dir).load()?,
        ..config.retrain_settings(args.concurrency)
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(series.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} series, ETA {eta}",
            )
            .expect("invariant: the template is valid")
            .progress_chars("=> "),
        );
        bar
    });
    let started = std::time::Instant::now();
    let line = |series: &SeriesId, result: &Result<app::RetrainOutcome, app::AppError>| {
        let text = match result {
            Ok(outcome) => format!(
                "{series}: {}{} ({})",
                if outcome.promoted {
                    "promoted"
                } else {
                    "kept live"
                },
                outcome
                    .version
                    .map_or_else(|| " (dry run)".to_owned(), |v| format!(" v{v}")),
                outcome.reason
            ),
            Err(error) => format!("{series}: failed: {error}"),
        };
        match &bar {
            Some(bar) => {
                bar.println(text);
                bar.inc(1);
            }
            // A closed standard output does not stop the retraining: the summary after it ends
            // the command.
            None => {
                let _ = outln!("{text}");
            }
        }
    };
    let results = app::retrain_many(&app, &registry, &series, &settings, &line);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let counts = app::RetrainCounts::of(&results);
    let failed = counts.failed;
    outln!(
        "retrained {} series in {:.1}s: {} promoted, {} kept, {failed} failed{}",
        results.len(),
        started.elapsed().as_secs_f64(),
        counts.promoted,
        counts.kept,
        if args.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        }
    )?;
    if failed > 0 {
        bail!("{failed} of {} series failed", results.len());
    }
    Ok(())
}

/// `count` versions, in words: "1 version", "3 versions".
pub(super) fn versions(count: usize) -> String {
    if count == 1 {
        "1 version".to_owned()
    } else {
        format!("{count} versions")
    }
}

/// `prescale models list|show|rollback`.
pub(super) fn models(config: &Config, command: ModelsCommand) -> Result<()> {
    if let Some(fleet) = &config.fleet
        && let Some(location) = &fleet.model_store
    {
        return super::fleet_models::models(fleet, location, command);
    }
    let registry = open_registry(config, DataDirUse::Existing)?;
    let figures = |info: &VersionInfo| {
        format!(
            "mae {} mase {}",
            info.backtest_mae
                .map_or("-".to_owned(), |v| format!("{v:.4}")),
            info.backtest_mase
                .map_or("-".to_owned(), |v| format!("{v:.3}")),
        )
    };
    match command {
        ModelsCommand::List { .. } => {
            let listed = registry.list();
            if listed.is_empty() {
                outln!("no models trained yet")?;
            }
            for (name, entry) in listed {
                let live = entry.live.and_then(|version| entry.version(version));
                outln!(
                    "{name}  live {}  {}  {}",
                    entry.live.map_or("-".to_owned(), |v| format!("v{v}")),
                    versions(entry.versions.len()),
                    live.map_or(String::new(), figures)
                )?;
            }
        }
        ModelsCommand::Show { name, .. } => {
            let series: SeriesId = name.parse()?;
            let entry = registry
                .entry(&series)
                .with_context(|| format!("no models of {series}"))?;
            outln!("{series} ({})", registry.dir().join(&entry.dir).display())?;
            for info in &entry.versions {
                let trained = |millis| Timestamp::from_millis(millis);
                outln!(
                    "{} v{}  trained {}..{} ({} points) at {}  prescale {}  {}  crc32 {:08x}  {}",
                    if entry.live == Some(info.version) {
                        "*"
                    } else {
                        " "
                    },
                    info.version,
                    trained(info.trained_from_ms),
                    trained(info.trained_to_ms),
                    info.points,
                    trained(info.created_at_ms),
                    info.prescale_version,
                    figures(info),
                    info.crc32,
                    info.decision
                )?;
            }
        }
        ModelsCommand::Rollback { name, version, .. } => {
            let series: SeriesId = name.parse()?;
            let live = registry.rollback(&series, version)?;
            outln!("{series}: v{live} is live")?;
        }
        ModelsCommand::ClaimStore { .. } => {
            bail!("claim-store is for a fleet with a model store ([fleet] model_store)")
        }
    }
    Ok(())
}
