//! An S3 server on 127.0.0.1 for the model-store tests: `s3s-fs` 0.14.1 (crates.io, Apache-2.0,
//! the `s3s` project's S3 server over a directory: the S3 REST protocol with SigV4 signatures and
//! conditional puts), installed by `.ci/run` into `target/tools` (or named by `PRESCALE_S3S_FS`).
//! One server per test, on a free port, with its buckets as directories of a temporary root, killed
//! on drop. A test that uses it also declares `mod prometheus_support;` (the port helper).

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::prometheus_support::free_port;

/// The key pair the server accepts.
pub(crate) const ACCESS_KEY: &str = "prescale-test";
/// See [`ACCESS_KEY`].
pub(crate) const SECRET_KEY: &str = "prescale-test-secret-key";

/// The `s3s-fs` binary: `PRESCALE_S3S_FS`, else `target/tools/bin/s3s-fs` in the repository.
pub(crate) fn binary() -> PathBuf {
    std::env::var_os("PRESCALE_S3S_FS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/bin/s3s-fs"),
        PathBuf::from,
    )
}

/// Whether the server is missing; says so, for the test to skip.
pub(crate) fn missing() -> bool {
    if binary().exists() {
        return false;
    }
    eprintln!(
        "skipped: {} is not installed (cargo install s3s-fs --version 0.14.1 --features binary --locked --root target/tools)",
        binary().display()
    );
    true
}

/// A running `s3s-fs` and the directory it serves.
pub(crate) struct LocalS3 {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub(crate) url: String,
    root: tempfile::TempDir,
}

impl LocalS3 {
    /// Starts a server holding the empty buckets `buckets`, and waits until it accepts
    /// connections.
    pub(crate) fn start(buckets: &[&str]) -> Self {
        let root = tempfile::tempdir().unwrap();
        for bucket in buckets {
            std::fs::create_dir(root.path().join(bucket)).unwrap();
        }
        let port = free_port();
        let child = Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs starts");
        let mut server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            root,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("s3s-fs exited before it listened: {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "s3s-fs is not listening on {} after 20 s",
                server.url
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// The environment an AWS client needs for this server: its key pair and a region.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
        ]
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .to_vec()
    }

    /// [`LocalS3::env`] with a secret key the server does not accept.
    pub(crate) fn env_with_wrong_secret(&self) -> Vec<(String, String)> {
        self.env()
            .into_iter()
            .map(|(key, value)| match key.as_str() {
                "AWS_SECRET_ACCESS_KEY" => (key, "not-the-secret".to_owned()),
                _ => (key, value),
            })
            .collect()
    }

    /// The directory bucket `bucket`'s objects are files of (`<bucket>/<key>`).
    pub(crate) fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.path().join(bucket)
    }
}

impl Drop for LocalS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file under `dir`, sorted: the objects of a bucket directory (see
/// [`LocalS3::bucket_dir`]), or the version files of a shared directory store.
pub(crate) fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}
