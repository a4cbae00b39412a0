//! The fleet's id: made once, by the first replica or tool that asks for it, and kept in etcd as
//! record `id` of the table `fleet`; every replica and tool of the fleet reads the same one after.
//! A fleet writes it into the model store it uses, so that two fleets never share one store
//! (docs/decisions.md, "Fleet mode: models in an object store").

use ring::rand::{SecureRandom, SystemRandom};

use super::etcd::{Compare, Etcd, Op};
use super::{FleetError, record_key};

/// The table of the fleet's own records.
const TABLE: &str = "fleet";

/// The record of its id in [`TABLE`].
const ID: &str = "id";

/// The id of the fleet under `prefix` in `etcd`; made if it has none yet (128 random bits in
/// hex). When several make one at once, etcd keeps the first and every one reads it back.
pub async fn fleet_id(etcd: &Etcd, prefix: &str) -> Result<String, FleetError> {
    let key = record_key(prefix, TABLE, ID);
    if let Some(id) = read_id(etcd, &key).await? {
        return Ok(id);
    }
    let mut bits = [0_u8; 16];
    SystemRandom::new()
        .fill(&mut bits)
        .map_err(|_| FleetError::Random)?;
    let made: String = bits.iter().map(|byte| format!("{byte:02x}")).collect();
    etcd.txn(
        &[Compare::CreateRevisionEquals {
            key: key.clone(),
            revision: 0,
        }],
        &[Op::Put {
            key: key.clone(),
            value: made.into_bytes(),
            lease: 0,
        }],
        &[],
    )
    .await?;
    read_id(etcd, &key).await?.ok_or(FleetError::Decode {
        what: key,
        reason: "the fleet id written is not there".to_owned(),
    })
}

/// The id at `key`, if there is one.
async fn read_id(etcd: &Etcd, key: &str) -> Result<Option<String>, FleetError> {
    etcd.get(key)
        .await?
        .map(|entry| {
            String::from_utf8(entry.value).map_err(|error| FleetError::Decode {
                what: key.to_owned(),
                reason: error.to_string(),
            })
        })
        .transpose()
}
