//! `prescale workloads apply|list|show|delete --server URL`: a running server's workloads, through
//! its `PlanService` (`UpsertWorkload`, `ListWorkloads`, `GetWorkload` with `GetPlan`,
//! `DeleteWorkload`). Workloads live in the server (and in a fleet, in etcd), so there is no
//! offline form of these commands.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use prescale::service::proto::{self, plan_service_client::PlanServiceClient};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::server_client::{ServerArgs, ServerTarget, connect, read_token, with_token};
use super::workloads_output::{print_definition, print_plan, print_row, print_status};
use crate::output::outln;

#[derive(Debug, Subcommand)]
pub(super) enum WorkloadsCommand {
    /// Create or replace the workload a `workload.toml` describes (`UpsertWorkload`) and print it
    /// as stored, defaults filled in.
    #[command(mut_arg("server", required_server))]
    Apply {
        /// Workload file (see workload.example.toml).
        file: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// One line per workload: name, series, mode, planning level or SLO, source when pulled.
    #[command(mut_arg("server", required_server))]
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// A workload as `GetWorkload` answers it (definition, SLO rule, source status, the replicas
    /// reported applied), then its current plan from `GetPlan` in short form.
    #[command(mut_arg("server", required_server))]
    Show {
        /// Workload name.
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a workload and its plan (`DeleteWorkload`); its series and models stay.
    #[command(mut_arg("server", required_server))]
    Delete {
        /// Workload name.
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

impl WorkloadsCommand {
    /// The server the command asks.
    fn server(&self) -> &ServerArgs {
        match self {
            Self::Apply { server, .. }
            | Self::List { server }
            | Self::Show { server, .. }
            | Self::Delete { server, .. } => server,
        }
    }
}

/// `--server` as the workloads commands take it: required, since only a server holds workloads.
fn required_server(arg: clap::Arg) -> clap::Arg {
    arg.required(true)
        .help("The server at this URL (`http://HOST:50051`), which holds the workloads")
}

/// `prescale workloads ...`, through the server's `PlanService`.
pub(super) fn workloads(command: &WorkloadsCommand) -> Result<()> {
    let target = command
        .server()
        .target()
        .expect("invariant: clap requires --server on the workloads commands");
    // Read and checked before connecting, as `plan --workload` reads it: a bad file needs no server.
    let workload = match command {
        WorkloadsCommand::Apply { file, .. } => Some(prescale::app::load_workload(file)?),
        _ => None,
    };
    crate::runtime::multi_threaded()?.block_on(async {
        let mut api = PlanApi::connect(&target).await?;
        match command {
            WorkloadsCommand::Apply { .. } => {
                let workload = workload.expect("invariant: read above for apply");
                api.apply(&workload).await
            }
            WorkloadsCommand::List { .. } => api.list().await,
            WorkloadsCommand::Show { name, .. } => api.show(name).await,
            WorkloadsCommand::Delete { name, .. } => api.delete(name).await,
        }
    })
}

/// A `PlanService` client of the server, with the bearer token each request carries.
struct PlanApi {
    /// The client, on a channel to the server.
    plans: PlanServiceClient<Channel>,
    /// `Bearer TOKEN` from `--token-file`, when given.
    token: Option<MetadataValue<Ascii>>,
}

impl PlanApi {
    /// Reads the token and connects to the server.
    async fn connect(target: &ServerTarget<'_>) -> Result<Self> {
        let token = target.token_file.map(read_token).transpose()?;
        Ok(Self {
            plans: PlanServiceClient::new(connect(target).await?),
            token,
        })
    }

    /// `message` as a request carrying the token.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        with_token(message, self.token.as_ref())
    }

    /// Stores `workload` and prints it as the server stored it.
    async fn apply(&mut self, workload: &prescale::plan::Workload) -> Result<()> {
        let request = self.request(proto::UpsertWorkloadRequest {
            workload: Some(prescale::service::workload_message(workload)),
        });
        let stored = self
            .plans
            .upsert_workload(request)
            .await
            .with_context(|| format!("storing workload {}", workload.name()))?
            .into_inner();
        outln!("stored workload {}", stored.name)?;
        print_definition(&stored)
    }

    /// Prints one line per workload.
    async fn list(&mut self) -> Result<()> {
        let request = self.request(proto::ListWorkloadsRequest {});
        let listed = self
            .plans
            .list_workloads(request)
            .await
            .context("listing the workloads")?
            .into_inner();
        if listed.workloads.is_empty() {
            outln!("no workloads")?;
            return Ok(());
        }
        outln!(
            "{:<24}  {:<32}  {:<18}  {:<16}  SOURCE",
            "NAME",
            "SERIES",
            "MODE",
            "PLANNING"
        )?;
        for workload in &listed.workloads {
            print_row(workload)?;
        }
        Ok(())
    }

    /// Prints the workload as `GetWorkload` answers it, then its current plan, or why there is
    /// none yet.
    async fn show(&mut self, name: &str) -> Result<()> {
        let request = self.request(proto::GetWorkloadRequest {
            name: name.to_owned(),
        });
        let workload = self
            .plans
            .get_workload(request)
            .await
            .with_context(|| format!("getting workload {name}"))?
            .into_inner();
        print_definition(&workload)?;
        print_status(&workload)?;
        let request = self.request(proto::GetPlanRequest {
            workload: name.to_owned(),
        });
        match self.plans.get_plan(request).await {
            Ok(plan) => print_plan(&plan.into_inner()),
            Err(status) if no_plan_yet(&status) => {
                outln!("plan:            none: {}", status.message())?;
                Ok(())
            }
            Err(status) => {
                Err(anyhow::Error::new(status).context(format!("getting the plan of {name}")))
            }
        }
    }

    /// Deletes the workload.
    async fn delete(&mut self, name: &str) -> Result<()> {
        let request = self.request(proto::DeleteWorkloadRequest {
            name: name.to_owned(),
        });
        self.plans
            .delete_workload(request)
            .await
            .with_context(|| format!("deleting workload {name}"))?;
        outln!("deleted workload {name}")?;
        Ok(())
    }
}

/// Whether `GetPlan` failed because the workload has no plan (yet): its first plan is still being
/// computed (`UNAVAILABLE`), or the last attempt lacked history, its series or its source
/// (`FAILED_PRECONDITION`). The workload itself is there, so `show` says why and succeeds.
fn no_plan_yet(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::FailedPrecondition)
}
