//! The `[fleet]` section: how `prescale serve` joins a fleet of replicas through etcd. Absent, the
//! server runs alone, exactly as without fleet mode.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::fleet_tsdb::{FileTsdbKeys, FleetTsdb, fleet_tsdb};
use super::validate::{check_range, parse_duration};
use super::{ConfigError, Overrides, ScalerConfig, ServerConfig};
use crate::fleet::etcd::EtcdTls;
use crate::fleet::{MemberInfo, MemberState, MembershipSettings};
use crate::registry::ModelStoreLocation;
use crate::service::FORWARD_TIMEOUT;

/// The `[fleet]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileFleetConfig {
    #[serde(default)]
    etcd_endpoints: Vec<String>,
    member_id: Option<String>,
    advertise: Option<String>,
    scaler_advertise: Option<String>,
    lease_ttl: Option<String>,
    etcd_timeout: Option<String>,
    prefix: Option<String>,
    model_store: Option<String>,
    model_store_endpoint: Option<String>,
    model_store_region: Option<String>,
    tsdb_url: Option<String>,
    tsdb_remote_write_url: Option<String>,
    tsdb_timeout: Option<String>,
    tsdb_bearer_token_file: Option<std::path::PathBuf>,
    tsdb_basic_auth_username: Option<String>,
    tsdb_basic_auth_password_file: Option<std::path::PathBuf>,
    tsdb_ca_file: Option<std::path::PathBuf>,
    peer_ca_file: Option<std::path::PathBuf>,
    etcd_ca_file: Option<std::path::PathBuf>,
    etcd_cert_file: Option<std::path::PathBuf>,
    etcd_key_file: Option<std::path::PathBuf>,
    join_timeout: Option<String>,
    forward_timeout: Option<String>,
}

/// How this replica takes part in a fleet (`[fleet]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// etcd client URLs (`http://host:2379`, or all `https://` with `etcd_tls`); calls are
    /// balanced over them.
    pub etcd_endpoints: Vec<String>,
    /// TLS to etcd (`etcd_ca_file`, and `etcd_cert_file` + `etcd_key_file` for client
    /// certificates) when the endpoints are `https://`.
    pub etcd_tls: Option<EtcdTls>,
    /// This replica as a member: `prescale serve` only ([`Overrides::joins_fleet`]); the other
    /// commands use the fleet without joining it.
    pub member: Option<FleetMember>,
    /// The membership lease's TTL: a replica that stops renewing is dropped after it.
    pub lease_ttl: Duration,
    /// Bound on each etcd call, and on reaching etcd at start.
    pub etcd_timeout: Duration,
    /// The etcd key prefix of this fleet.
    pub prefix: String,
    /// Where the fleet's model versions are kept; `None`: each replica keeps its own registry.
    pub model_store: Option<ModelStoreLocation>,
    /// The TSDB pushed samples are written through to and refilled from (`tsdb_*` keys); `None`
    /// keeps pushed samples in their owner's store only.
    pub tsdb: Option<FleetTsdb>,
    /// How long a joining replica warms its future share (plans it) before it turns active
    /// anyway.
    pub join_timeout: Duration,
    /// With `[server.tls]` or `[scaler.tls]`: the CA (PEM, `peer_ca_file`) that signed every
    /// replica's certificate, which calls forwarded between replicas verify.
    pub peer_ca: Option<Vec<u8>>,
    /// Bound on a call forwarded to another replica (see
    /// [`ServerOptions::forward_timeout`](crate::service::ServerOptions::forward_timeout)).
    pub forward_timeout: Duration,
}

/// The per-replica keys of `[fleet]`: who this replica is among the members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetMember {
    /// This replica's id, unique among the live replicas (a StatefulSet pod's name).
    pub member_id: String,
    /// `host:port` where the other replicas reach this one's gRPC API, for forwarded calls.
    pub advertise: String,
    /// `host:port` of this replica's KEDA external scaler, when `[scaler]` listens.
    pub scaler_advertise: Option<String>,
}

impl FleetConfig {
    /// The membership `member` registers in this fleet.
    pub fn membership(&self, member: &FleetMember) -> MembershipSettings {
        MembershipSettings {
            prefix: self.prefix.clone(),
            member_id: member.member_id.clone(),
            info: MemberInfo {
                addr: member.advertise.clone(),
                scaler_addr: member.scaler_advertise.clone(),
                // Active once it has warmed its share (see `ServingState::warm_then_activate`).
                state: MemberState::Joining,
            },
            lease_ttl: self.lease_ttl,
        }
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// Checks a `host:port` that other replicas dial.
fn advertised(key: &'static str, text: &str) -> Result<String, ConfigError> {
    let text = text.trim();
    let valid = text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !valid {
        return Err(invalid(key, format!("{text:?} is not a host:port")));
    }
    Ok(text.to_owned())
}

/// The `[fleet]` table with the per-replica keys replaced by flags or environment variables
/// (`--member-id`, `--advertise`, `--scaler-advertise`), so one file serves every pod of a
/// StatefulSet. An override without a `[fleet]` table is refused rather than ignored.
pub(super) fn with_overrides(
    raw: Option<FileFleetConfig>,
    overrides: &Overrides,
) -> Result<Option<FileFleetConfig>, ConfigError> {
    let replaced = [
        ("fleet.member_id", &overrides.member_id),
        ("fleet.advertise", &overrides.advertise),
        ("fleet.scaler_advertise", &overrides.scaler_advertise),
    ];
    let Some(mut raw) = raw else {
        return match replaced.iter().find(|(_, value)| value.is_some()) {
            Some((key, _)) => Err(invalid(
                key,
                "set by a flag or environment variable, but the configuration has no [fleet] table",
            )),
            None => Ok(None),
        };
    };
    for (field, value) in [
        (&mut raw.member_id, &overrides.member_id),
        (&mut raw.advertise, &overrides.advertise),
        (&mut raw.scaler_advertise, &overrides.scaler_advertise),
    ] {
        if value.is_some() {
            field.clone_from(value);
        }
    }
    Ok(Some(raw))
}

/// The `[fleet]` section, `None` when the file has none. With `[server.tls]` or `[scaler.tls]`
/// the replicas forward calls to each other's listeners over TLS too, verifying certificates
/// with `peer_ca_file`.
pub(super) fn fleet_config(
    raw: Option<FileFleetConfig>,
    server: &ServerConfig,
    scaler: Option<&ScalerConfig>,
    joins_fleet: bool,
) -> Result<Option<FleetConfig>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    if raw.etcd_endpoints.is_empty() {
        return Err(invalid(
            "fleet.etcd_endpoints",
            "name at least one etcd endpoint",
        ));
    }
    let etcd_tls = etcd_tls(
        &raw.etcd_endpoints,
        raw.etcd_ca_file.as_deref(),
        raw.etcd_cert_file.as_deref(),
        raw.etcd_key_file.as_deref(),
    )?;
    let member = if joins_fleet {
        Some(fleet_member(
            raw.member_id,
            raw.advertise,
            raw.scaler_advertise,
            scaler,
        )?)
    } else {
        None
    };
    let tls =
        server.options.tls.is_some() || scaler.is_some_and(|scaler| scaler.options.tls.is_some());
    let peer_ca = peer_ca(raw.peer_ca_file.as_deref(), tls)?;
    let lease_ttl = parse_duration("fleet.lease_ttl", raw.lease_ttl.as_deref().unwrap_or("10s"))?;
    if lease_ttl.subsec_nanos() != 0 {
        return Err(invalid("fleet.lease_ttl", "etcd leases are whole seconds"));
    }
    check_range("fleet.lease_ttl", lease_ttl.as_secs(), 2..=300)?;
    let etcd_timeout = parse_duration(
        "fleet.etcd_timeout",
        raw.etcd_timeout.as_deref().unwrap_or("5s"),
    )?;
    let prefix = raw.prefix.unwrap_or_else(|| "/prescale/".to_owned());
    if !prefix.starts_with('/') || !prefix.ends_with('/') {
        return Err(invalid(
            "fleet.prefix",
            format!("{prefix:?} must start and end with '/'"),
        ));
    }
    let model_store = raw
        .model_store
        .as_deref()
        .map(|url| {
            ModelStoreLocation::parse(url)?.with_endpoint(
                raw.model_store_endpoint.as_deref(),
                raw.model_store_region.as_deref(),
            )
        })
        .transpose()
        .map_err(|reason| invalid("fleet.model_store", reason))?;
    if model_store.is_none()
        && (raw.model_store_endpoint.is_some() || raw.model_store_region.is_some())
    {
        return Err(invalid(
            "fleet.model_store",
            "model_store_endpoint and model_store_region need an s3:// or az:// model_store",
        ));
    }
    let tsdb = fleet_tsdb(FileTsdbKeys {
        tsdb_url: raw.tsdb_url,
        tsdb_remote_write_url: raw.tsdb_remote_write_url,
        tsdb_timeout: raw.tsdb_timeout,
        tsdb_bearer_token_file: raw.tsdb_bearer_token_file,
        tsdb_basic_auth_username: raw.tsdb_basic_auth_username,
        tsdb_basic_auth_password_file: raw.tsdb_basic_auth_password_file,
        tsdb_ca_file: raw.tsdb_ca_file,
    })?;
    let join_timeout = parse_duration(
        "fleet.join_timeout",
        raw.join_timeout.as_deref().unwrap_or("60s"),
    )?;
    check_range("fleet.join_timeout", join_timeout.as_secs(), 0..=3600)?;
    let forward_timeout = match raw.forward_timeout.as_deref() {
        Some(text) => parse_duration("fleet.forward_timeout", text)?,
        None => FORWARD_TIMEOUT,
    };
    check_range(
        "fleet.forward_timeout",
        forward_timeout.as_millis(),
        100..=300_000,
    )?;
    Ok(Some(FleetConfig {
        tsdb,
        etcd_endpoints: raw.etcd_endpoints,
        etcd_tls,
        member,
        lease_ttl,
        etcd_timeout,
        prefix,
        model_store,
        join_timeout,
        peer_ca,
        forward_timeout,
    }))
}

/// The per-replica keys of `[fleet]`, required of `prescale serve`.
fn fleet_member(
    member_id: Option<String>,
    advertise: Option<String>,
    scaler_advertise: Option<String>,
    scaler: Option<&ScalerConfig>,
) -> Result<FleetMember, ConfigError> {
    let member_id = member_id.unwrap_or_default();
    let id_ok = (1..=63).contains(&member_id.len())
        && member_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !id_ok {
        return Err(invalid(
            "fleet.member_id",
            format!("{member_id:?} must be 1 to 63 letters, digits, '-', '_' or '.'"),
        ));
    }
    let advertise = advertised(
        "fleet.advertise",
        advertise.as_deref().ok_or_else(|| {
            invalid(
                "fleet.advertise",
                "required: the host:port other replicas dial",
            )
        })?,
    )?;
    let scaler_advertise = match (scaler_advertise.as_deref(), scaler) {
        (Some(text), Some(_)) => Some(advertised("fleet.scaler_advertise", text)?),
        (None, Some(_)) => {
            return Err(invalid(
                "fleet.scaler_advertise",
                "required when [scaler] listens: the host:port other replicas forward KEDA calls to",
            ));
        }
        (Some(_), None) => {
            return Err(invalid(
                "fleet.scaler_advertise",
                "set, but [scaler] does not listen",
            ));
        }
        (None, None) => None,
    };
    Ok(FleetMember {
        member_id,
        advertise,
        scaler_advertise,
    })
}

/// The PEM of `peer_ca_file`: required when a listener serves TLS (`tls`), refused when none
/// does.
fn peer_ca(file: Option<&Path>, tls: bool) -> Result<Option<Vec<u8>>, ConfigError> {
    match (file, tls) {
        (None, false) => Ok(None),
        (None, true) => Err(invalid(
            "fleet.peer_ca_file",
            "required with [server.tls] or [scaler.tls]: the CA (PEM) that signed every \
             replica's certificate, which the replicas verify when they forward calls to each other",
        )),
        (Some(_), false) => Err(invalid(
            "fleet.peer_ca_file",
            "set, but neither [server.tls] nor [scaler.tls] is: the replicas call each other in plaintext",
        )),
        (Some(path), true) => Ok(Some(certificate_pem("fleet.peer_ca_file", path)?)),
    }
}

/// TLS to etcd: `None` when every endpoint is `http://`; with every endpoint `https://`, the CA
/// of `ca_file` (required) and the client certificate of `cert_file` and `key_file` (both or
/// neither). A mix of schemes is refused.
fn etcd_tls(
    endpoints: &[String],
    ca_file: Option<&Path>,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<Option<EtcdTls>, ConfigError> {
    let key = "fleet.etcd_endpoints";
    let host = |endpoint: &str, scheme: &str| {
        endpoint
            .strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty())
    };
    let tls = if endpoints.iter().all(|endpoint| host(endpoint, "http://")) {
        false
    } else if endpoints.iter().all(|endpoint| host(endpoint, "https://")) {
        true
    } else {
        return Err(invalid(
            key,
            format!(
                "{endpoints:?}: every endpoint must be an http://host:port URL, or every one an \
                 https://host:port URL"
            ),
        ));
    };
    if !tls {
        if let Some((name, _)) = [
            ("fleet.etcd_ca_file", ca_file),
            ("fleet.etcd_cert_file", cert_file),
            ("fleet.etcd_key_file", key_file),
        ]
        .into_iter()
        .find(|(_, file)| file.is_some())
        {
            return Err(invalid(name, "set, but the etcd endpoints are http://"));
        }
        return Ok(None);
    }
    let ca_file = ca_file.ok_or_else(|| {
        invalid(
            "fleet.etcd_ca_file",
            "required with https:// etcd endpoints: the CA (PEM) that signed etcd's certificates",
        )
    })?;
    let identity = match (cert_file, key_file) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((read_pem(cert)?, read_pem(key)?)),
        _ => {
            return Err(invalid(
                "fleet.etcd_cert_file",
                "etcd_cert_file and etcd_key_file go together",
            ));
        }
    };
    Ok(Some(EtcdTls {
        ca: certificate_pem("fleet.etcd_ca_file", ca_file)?,
        identity,
    }))
}

/// The bytes of `path`.
fn read_pem(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The bytes of `path`, which must hold a PEM certificate (`key` names the setting).
fn certificate_pem(key: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let pem = read_pem(path)?;
    if !pem
        .windows(CERTIFICATE_PEM.len())
        .any(|window| window == CERTIFICATE_PEM)
    {
        return Err(invalid(
            key,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(pem)
}

/// The header of a PEM certificate.
const CERTIFICATE_PEM: &[u8] = b"-----BEGIN CERTIFICATE-----";

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::{Config, ConfigError, Overrides};

    /// `text` loaded as `prescale serve` loads it.
    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"), &serving())
    }

    fn serving() -> Overrides {
        Overrides {
            joins_fleet: true,
            ..Overrides::default()
        }
    }

    const FLEET: &str = "[fleet]\netcd_endpoints = [\"http://127.0.0.1:2379\"]\nmember_id = \"prescale-0\"\nadvertise = \"prescale-0.prescale:50051\"\n";

    fn refused_key(text: &str) -> &'static str {
        match parse(text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected a refused key, got {other:?}"),
        }
    }

    #[test]
    fn no_fleet_table_is_single_process_mode() {
        assert_eq!(parse("").unwrap().fleet, None);
    }

    #[test]
    fn a_fleet_table_gives_the_membership_with_defaults() {
        let fleet = parse(FLEET).unwrap().fleet.expect("fleet mode");
        assert_eq!(fleet.etcd_endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(fleet.lease_ttl, Duration::from_secs(10));
        assert_eq!(fleet.etcd_timeout, Duration::from_secs(5));
        assert_eq!(fleet.join_timeout, Duration::from_secs(60));
        assert_eq!(fleet.forward_timeout, Duration::from_secs(10));
        let membership = fleet.membership(fleet.member.as_ref().unwrap());
        assert_eq!(membership.members_prefix(), "/prescale/members/");
        assert_eq!(membership.info.addr, "prescale-0.prescale:50051");
        assert_eq!(membership.step_down_after(), Duration::from_secs(8));
    }

    #[test]
    fn fleet_keys_are_checked() {
        assert_eq!(
            refused_key("[fleet]\nmember_id = \"a\"\nadvertise = \"a:1\"\n"),
            "fleet.etcd_endpoints"
        );
        let with = |line: &str| format!("{FLEET}{line}\n");
        assert_eq!(
            refused_key(&FLEET.replace("http://127.0.0.1:2379", "127.0.0.1:2379")),
            "fleet.etcd_endpoints"
        );
        assert_eq!(
            refused_key(&FLEET.replace("prescale-0\"", "bad id\"")),
            "fleet.member_id"
        );
        assert_eq!(
            refused_key(&FLEET.replace("prescale-0.prescale:50051", "nowhere")),
            "fleet.advertise"
        );
        assert_eq!(refused_key(&with("lease_ttl = \"1s\"")), "fleet.lease_ttl");
        assert_eq!(
            refused_key(&with("lease_ttl = \"2500ms\"")),
            "fleet.lease_ttl"
        );
        assert_eq!(refused_key(&with("prefix = \"prescale\"")), "fleet.prefix");
        assert_eq!(
            refused_key(&with("model_store = \"gs://bucket/models\"")),
            "fleet.model_store"
        );
        assert_eq!(
            refused_key(&with(
                "model_store = \"file:///srv/models\"\nmodel_store_region = \"eu-west-1\""
            )),
            "fleet.model_store"
        );
        assert_eq!(
            refused_key(&with("model_store_endpoint = \"http://127.0.0.1:9000\"")),
            "fleet.model_store"
        );
        assert_eq!(
            refused_key(&with(
                "model_store = \"s3://models\"\nmodel_store_endpoint = \"127.0.0.1:9000\""
            )),
            "fleet.model_store"
        );
        let s3 = parse(&with(
            "model_store = \"s3://models/fleet-a\"\nmodel_store_endpoint = \"https://minio:9000\"\nmodel_store_region = \"eu-west-1\"",
        ))
        .unwrap()
        .fleet
        .unwrap()
        .model_store;
        assert_eq!(
            s3,
            Some(crate::registry::ModelStoreLocation::S3(
                crate::registry::S3Location {
                    bucket: "models".to_owned(),
                    prefix: "fleet-a".to_owned(),
                    endpoint: Some("https://minio:9000".to_owned()),
                    region: Some("eu-west-1".to_owned()),
                }
            ))
        );
        let azure = parse(&with(
            "model_store = \"az://models/fleet-a\"\nmodel_store_endpoint = \"http://127.0.0.1:10000/devstoreaccount1\"",
        ))
        .unwrap()
        .fleet
        .unwrap()
        .model_store;
        assert_eq!(
            azure,
            Some(crate::registry::ModelStoreLocation::Azure(
                crate::registry::AzureLocation {
                    container: "models".to_owned(),
                    prefix: "fleet-a".to_owned(),
                    endpoint: Some("http://127.0.0.1:10000/devstoreaccount1".to_owned()),
                }
            ))
        );
        assert_eq!(
            refused_key(&with(
                "model_store = \"az://models\"\nmodel_store_region = \"westeurope\""
            )),
            "fleet.model_store"
        );
        assert_eq!(
            parse(&with("model_store = \"file:///srv/models\""))
                .unwrap()
                .fleet
                .unwrap()
                .model_store,
            Some(crate::registry::ModelStoreLocation::Directory(
                "/srv/models".into()
            ))
        );
        assert_eq!(
            refused_key(&with("join_timeout = \"2h\"")),
            "fleet.join_timeout"
        );
        for forward_timeout in ["\"50ms\"", "\"10m\"", "\"0s\"", "\"soon\""] {
            assert_eq!(
                refused_key(&with(&format!("forward_timeout = {forward_timeout}"))),
                "fleet.forward_timeout"
            );
        }
        // Every listener forwards within it.
        let scaler = "scaler_advertise = \"a:9\"\n[scaler]\nlisten = \"127.0.0.1:0\"\n";
        let config = parse(&format!("{FLEET}forward_timeout = \"3s\"\n{scaler}")).unwrap();
        assert_eq!(
            config.fleet.unwrap().forward_timeout,
            Duration::from_secs(3)
        );
        assert_eq!(
            config.server.options.forward_timeout,
            Duration::from_secs(3)
        );
        assert_eq!(
            config.scaler.unwrap().options.forward_timeout,
            Duration::from_secs(3)
        );
        assert_eq!(
            refused_key(&with("scaler_advertise = \"a:1\"")),
            "fleet.scaler_advertise"
        );
        let scaler = "[scaler]\nlisten = \"127.0.0.1:0\"\n";
        assert_eq!(
            refused_key(&format!("{FLEET}{scaler}")),
            "fleet.scaler_advertise"
        );
        let both = format!("{FLEET}scaler_advertise = \"a:9\"\n{scaler}");
        assert_eq!(
            parse(&both)
                .unwrap()
                .fleet
                .unwrap()
                .member
                .unwrap()
                .scaler_advertise
                .as_deref(),
            Some("a:9")
        );
        let scaler_tls = format!(
            "{FLEET}scaler_advertise = \"a:9\"\n{scaler}[scaler.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n"
        );
        assert_eq!(refused_key(&scaler_tls), "fleet.peer_ca_file");
    }

    #[test]
    fn etcd_over_tls_needs_https_everywhere_and_its_ca() {
        let directory = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = directory.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let ca = file(
            "ca.pem",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        );
        let (cert, key) = (file("c.pem", "cert"), file("c.key", "key"));
        let https = FLEET.replace("http://127.0.0.1:2379", "https://127.0.0.1:2379");
        let keys = |keys: &[(&str, &str)]| -> String {
            keys.iter()
                .map(|(name, value)| format!("{name} = \"{value}\"\n"))
                .collect()
        };
        assert_eq!(refused_key(&https), "fleet.etcd_ca_file");
        let mixed = FLEET.replace(
            "\"http://127.0.0.1:2379\"",
            "\"http://127.0.0.1:2379\", \"https://127.0.0.1:2380\"",
        );
        assert_eq!(refused_key(&mixed), "fleet.etcd_endpoints");
        assert_eq!(
            refused_key(&format!("{FLEET}{}", keys(&[("etcd_ca_file", &ca)]))),
            "fleet.etcd_ca_file"
        );
        assert_eq!(
            refused_key(&format!(
                "{https}{}",
                keys(&[("etcd_ca_file", &ca), ("etcd_cert_file", &cert)])
            )),
            "fleet.etcd_cert_file"
        );
        let tls = |extra: &[(&str, &str)]| {
            let mut all = vec![("etcd_ca_file", ca.as_str())];
            all.extend_from_slice(extra);
            parse(&format!("{https}{}", keys(&all)))
                .unwrap()
                .fleet
                .unwrap()
                .etcd_tls
                .unwrap()
        };
        assert_eq!(tls(&[]).identity, None);
        assert_eq!(
            tls(&[("etcd_cert_file", &cert), ("etcd_key_file", &key)]).identity,
            Some((b"cert".to_vec(), b"key".to_vec()))
        );
        assert_eq!(parse(FLEET).unwrap().fleet.unwrap().etcd_tls, None);
    }

    #[test]
    fn tls_between_replicas_needs_the_fleets_ca_and_only_with_tls() {
        let directory = tempfile::tempdir().unwrap();
        let ca = directory.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let not_pem = directory.path().join("ca.txt");
        std::fs::write(&not_pem, "a CA").unwrap();
        let tls = "[server.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n";
        let with_ca = |path: &Path| format!("{FLEET}peer_ca_file = \"{}\"\n", path.display());
        assert_eq!(refused_key(&format!("{FLEET}{tls}")), "fleet.peer_ca_file");
        assert_eq!(refused_key(&with_ca(&ca)), "fleet.peer_ca_file");
        assert_eq!(
            refused_key(&format!("{}{tls}", with_ca(&not_pem))),
            "fleet.peer_ca_file"
        );
        let config = parse(&format!("{}{tls}", with_ca(&ca))).unwrap();
        let pem = std::fs::read(&ca).unwrap();
        assert_eq!(config.fleet.unwrap().peer_ca.as_deref(), Some(&pem[..]));
        assert_eq!(config.server.options.peer_ca, Some(pem.clone()));
        // Alone, a server with TLS needs no peer CA.
        assert_eq!(parse(tls).unwrap().server.options.peer_ca, None);
        // A scaler with TLS gets it, and the API only when it serves TLS as well.
        let scaler = "scaler_advertise = \"a:9\"\n[scaler]\nlisten = \"127.0.0.1:0\"\n\
                      [scaler.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n";
        let config = parse(&format!("{}{scaler}", with_ca(&ca))).unwrap();
        assert_eq!(
            config.scaler.unwrap().options.peer_ca.as_deref(),
            Some(&pem[..])
        );
        assert_eq!(config.server.options.peer_ca, None);
    }

    #[test]
    fn only_serve_needs_the_per_replica_keys() {
        let shared = "[fleet]\netcd_endpoints = [\"http://127.0.0.1:2379\"]\nmodel_store = \"file:///srv/models\"\n";
        assert_eq!(refused_key(shared), "fleet.member_id");
        let scaler = format!("{FLEET}[scaler]\nlisten = \"127.0.0.1:0\"\n");
        assert_eq!(refused_key(&scaler), "fleet.scaler_advertise");
        // Another command (`models rollback` in a pod of the fleet) uses the fleet as no member.
        for text in [shared, &scaler] {
            let fleet = Config::from_toml(text, Path::new("test.toml"), &Overrides::default())
                .unwrap()
                .fleet
                .expect("fleet mode");
            assert_eq!(fleet.member, None);
            assert_eq!(fleet.etcd_endpoints, ["http://127.0.0.1:2379"]);
        }
    }

    #[test]
    fn flags_replace_the_per_replica_keys_and_are_checked_alike() {
        let load = |text: &str, overrides: &Overrides| {
            Config::from_toml(text, Path::new("test.toml"), overrides)
        };
        let pod = Overrides {
            member_id: Some("prescale-2".to_owned()),
            advertise: Some("prescale-2.prescale-peers.prescale.svc:50051".to_owned()),
            ..serving()
        };
        let member = |config: Config| config.fleet.expect("fleet mode").member.unwrap();
        let fleet = member(load(FLEET, &pod).unwrap());
        assert_eq!(fleet.member_id, "prescale-2");
        assert_eq!(
            fleet.advertise,
            "prescale-2.prescale-peers.prescale.svc:50051"
        );
        // A table without the per-replica keys takes them from the flags alone.
        let shared = "[fleet]\netcd_endpoints = [\"http://127.0.0.1:2379\"]\n";
        assert_eq!(member(load(shared, &pod).unwrap()).member_id, "prescale-2");
        let bad = Overrides {
            member_id: Some("prescale 2".to_owned()),
            ..pod.clone()
        };
        assert!(matches!(
            load(FLEET, &bad),
            Err(ConfigError::Invalid {
                key: "fleet.member_id",
                ..
            })
        ));
        assert!(matches!(
            load("", &pod),
            Err(ConfigError::Invalid {
                key: "fleet.member_id",
                ..
            })
        ));
    }
}
