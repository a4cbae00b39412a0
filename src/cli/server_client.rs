//! Reaching a running `prescale serve` from the command line: the `--server`, `--token-file` and
//! `--ca-file` flags, the channel, and the bearer token on each request. A serving server holds
//! its data directory's `LOCK`, so commands that change a served store go through its API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use prescale::domain::SeriesId;
use prescale::service::proto;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// `--server URL` with its credentials: commands that can ask a running server instead of opening
/// the store.
#[derive(Debug, Args)]
pub(super) struct ServerArgs {
    /// Ask the server at this URL (`http://HOST:50051`) instead of opening the store (a serving
    /// server holds it locked against changes; reads open it read-only beside the server).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// File whose first line is the bearer token for `--server` (as `[server.auth] tokens_file`).
    #[arg(long, requires = "server", env = "PRESCALE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// PEM file of the CA that signed an `https` `--server`'s certificate, trusted instead of the
    /// system's roots.
    #[arg(long, requires = "server")]
    ca_file: Option<PathBuf>,
}

impl ServerArgs {
    /// The server to ask, when `--server` was given.
    pub(super) fn target(&self) -> Option<ServerTarget<'_>> {
        self.server.as_deref().map(|url| ServerTarget {
            url,
            token_file: self.token_file.as_deref(),
            ca_file: self.ca_file.as_deref(),
        })
    }
}

/// Where the server is and how to reach it.
#[derive(Debug)]
pub(super) struct ServerTarget<'a> {
    /// `http://HOST:PORT` or `https://HOST:PORT`.
    pub(super) url: &'a str,
    /// File whose first line (not empty, not `#`) is the bearer token.
    pub(super) token_file: Option<&'a Path>,
    /// PEM file of the CA that signed an `https` server's certificate, trusted instead of the
    /// system's roots.
    pub(super) ca_file: Option<&'a Path>,
}

/// A channel to the server, with TLS when the URL is `https`.
pub(super) async fn connect(target: &ServerTarget<'_>) -> Result<Channel> {
    let mut endpoint = Endpoint::from_shared(target.url.to_owned())
        .with_context(|| format!("--server {:?} is not a URL", target.url))?
        .connect_timeout(Duration::from_secs(10));
    if target.url.starts_with("https://") {
        // The CA of `--ca-file`, else the system's trusted roots (`SSL_CERT_FILE` and
        // `SSL_CERT_DIR` override where they are read from). Not both: a host without a trust
        // store (a minimal image) would fail the CA given with "no native certs found".
        let tls = match target.ca_file {
            Some(path) => {
                let pem =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
            }
            None => ClientTlsConfig::new().with_native_roots(),
        };
        endpoint = endpoint
            .tls_config(tls)
            .with_context(|| format!("connecting to {}", target.url))?;
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {}", target.url))
}

/// The bearer token in `path`: its first line that is neither empty nor a `#` comment, as
/// `[server.auth] tokens_file` reads them.
pub(super) fn read_token(path: &Path) -> Result<MetadataValue<Ascii>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let token = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .with_context(|| format!("{} holds no token", path.display()))?;
    format!("Bearer {token}")
        .parse()
        .with_context(|| format!("the token in {} is not printable ASCII", path.display()))
}

/// `message` as a request, with `authorization: Bearer TOKEN` when there is a token.
pub(super) fn with_token<T>(message: T, token: Option<&MetadataValue<Ascii>>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", token.clone());
    }
    request
}

/// `series` as the server's messages name it.
pub(super) fn series_ref(series: &SeriesId) -> proto::SeriesRef {
    proto::SeriesRef {
        name: series.name().to_owned(),
        labels: series.labels().clone().into_iter().collect(),
    }
}

/// A series the server named, in the store's canonical text (`load{svc="a"}`), so series of one
/// metric are told apart; its bare name only if its labels make no valid series.
pub(super) fn series_text(series: &proto::SeriesRef) -> String {
    SeriesId::with_labels(&series.name, series.labels.iter())
        .map_or_else(|_| series.name.clone(), |id| id.to_string())
}
