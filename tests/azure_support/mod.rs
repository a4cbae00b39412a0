//! An Azure Blob Storage server on 127.0.0.1 for the model-store tests: Azurite 3.35.0 (npm,
//! MIT, Microsoft's emulator of the Blob service: its REST protocol with Shared Key signatures and
//! conditional puts), installed by `.ci/run` into `target/tools/azurite` (or named by
//! `PRESCALE_AZURITE`). One server per test, on a free port, in memory (in a temporary working
//! directory), with one storage account of its own, telemetry off, killed on drop. A test that uses it also declares
//! `mod prometheus_support;` (the port helper).
//!
//! Containers are created here with a signed `Create Container` call (the model store only
//! writes blobs into an existing container), and a container's blobs are listed the same way.

#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::prometheus_support::free_port;

/// The storage account the server holds.
pub(crate) const ACCOUNT: &str = "prescaletest";
/// The account's key (base64 of 32 bytes).
pub(crate) const KEY: &str = "cHJlc2NhbGUtdGVzdC1hY2NvdW50LWtleS0zMmJ5dGU=";
/// The service version the signed calls of this module ask for.
const VERSION: &str = "2021-08-06";

/// The `azurite-blob` launcher: `PRESCALE_AZURITE`, else the one `.ci/run` installs under
/// `target/tools/azurite` in the repository.
pub(crate) fn binary() -> PathBuf {
    std::env::var_os("PRESCALE_AZURITE").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/tools/azurite/node_modules/.bin/azurite-blob")
        },
        PathBuf::from,
    )
}

/// Whether the server is missing; says so, for the test to skip.
pub(crate) fn missing() -> bool {
    if binary().exists() {
        return false;
    }
    eprintln!(
        "skipped: {} is not installed (npm install --prefix target/tools/azurite azurite@3.35.0)",
        binary().display()
    );
    true
}

/// A running Azurite Blob service.
pub(crate) struct LocalAzure {
    child: Child,
    port: u16,
    /// The account's blob endpoint, path-style: `http://127.0.0.1:<port>/<account>`.
    pub(crate) endpoint: String,
    workspace: tempfile::TempDir,
}

impl LocalAzure {
    /// Starts a server holding the empty containers `containers`, once it accepts connections.
    pub(crate) fn start(containers: &[&str]) -> Self {
        let workspace = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = workspace.path().join("azurite.log");
        let child = Command::new(binary())
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args(["--inMemoryPersistence", "--disableTelemetry", "--silent"])
            // Accept the service version object_store signs for, newer than this Azurite's.
            .arg("--skipApiVersionCheck")
            .env("AZURITE_ACCOUNTS", format!("{ACCOUNT}:{KEY}"))
            .current_dir(workspace.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("azurite-blob starts");
        let mut server = Self {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}/{ACCOUNT}"),
            workspace,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "azurite-blob exited before it listened: {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "azurite-blob is not listening on port {port} after 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        for container in containers {
            let (status, body) = server.signed("PUT", container, &[("restype", "container")]);
            assert_eq!(status, 201, "creating container {container}: {body}");
        }
        server
    }

    /// The environment an Azure client needs for this server: the account and its key.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        [
            ("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT),
            ("AZURE_STORAGE_ACCOUNT_KEY", KEY),
        ]
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .to_vec()
    }

    /// [`LocalAzure::env`] with a key the server does not accept.
    pub(crate) fn env_with_wrong_key(&self) -> Vec<(String, String)> {
        let wrong = STANDARD.encode([7u8; 32]);
        self.env()
            .into_iter()
            .map(|(key, value)| match key.as_str() {
                "AZURE_STORAGE_ACCOUNT_KEY" => (key, wrong.clone()),
                _ => (key, value),
            })
            .collect()
    }

    /// The names of every blob in `container`, as the server lists them.
    pub(crate) fn blobs(&self, container: &str) -> Vec<String> {
        let (status, body) = self.signed(
            "GET",
            container,
            &[("comp", "list"), ("restype", "container")],
        );
        assert_eq!(status, 200, "listing container {container}: {body}");
        body.split("<Name>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Name>").map(|(name, _)| name.to_owned()))
            .collect()
    }

    /// Sends `method` on `/<account>/<path>?<query>` signed with the account's Shared Key
    /// (learn.microsoft.com, "Authorize with Shared Key"; path-style, so the canonical resource
    /// names the account twice), and returns the status and the body.
    fn signed(&self, method: &str, path: &str, query: &[(&str, &str)]) -> (u16, String) {
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let mut sorted = query.to_vec();
        sorted.sort_unstable();
        let canonical_query: String = sorted
            .iter()
            .map(|(name, value)| format!("\n{name}:{value}"))
            .collect();
        // The verb and eleven empty standard headers (no body: Content-Length is empty).
        let to_sign = format!(
            "{method}\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{VERSION}\n/{ACCOUNT}/{ACCOUNT}/{path}{canonical_query}"
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &STANDARD.decode(KEY).unwrap());
        let signature = STANDARD.encode(ring::hmac::sign(&key, to_sign.as_bytes()).as_ref());
        let query: Vec<String> = query
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let request = format!(
            "{method} /{ACCOUNT}/{path}?{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nx-ms-date: {date}\r\nx-ms-version: {VERSION}\r\nAuthorization: SharedKey {ACCOUNT}:{signature}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            query.join("&"),
            self.port
        );
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status in {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, body)| body.to_owned());
        (status, body)
    }
}

impl Drop for LocalAzure {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
