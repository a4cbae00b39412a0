//! Long-lived streams (`Push`, `WatchPlans`, the KEDA scaler's `StreamIsActive` and
//! `StreamMetricSpec`): their slots, and how a server stream ends.
//!
//! Slots: at most `server.max_streams` open at once in all, and at most
//! `server.max_streams_per_client` from one client address, so that one client cannot take every
//! slot and lock the others out. A client is its IP address: clients behind one proxy or load
//! balancer share a quota, and such a deployment raises `max_streams_per_client` toward
//! `max_streams`.
//!
//! Endings: a server stream ends when its client goes away, and on shutdown with `UNAVAILABLE`
//! ("shutting down") rather than OK, which reads as a normal end, so that an executor or KEDA opens
//! it again once a server is back ([`ended`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::app::AppError;

/// The stream slots of one server.
#[derive(Debug, Clone)]
pub(crate) struct StreamSlots {
    /// One permit per stream open, server-wide.
    total: Arc<Semaphore>,
    /// The size of `total`, for the error that says it is full.
    max_total: usize,
    /// Streams open per client address; an address leaves the map with its last stream.
    per_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// The most one address may hold.
    max_per_client: usize,
}

/// An open stream's slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    /// The server-wide permit.
    _permit: OwnedSemaphorePermit,
    /// The address counted, if the transport knew it.
    client: Option<IpAddr>,
    /// Where it is counted.
    per_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl StreamSlots {
    pub(crate) fn new(max_total: usize, max_per_client: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(max_total)),
            max_total,
            per_client: Arc::default(),
            max_per_client,
        }
    }

    /// A slot for a stream of `client`, or `ResourceExhausted` naming the limit reached.
    pub(crate) fn acquire(&self, client: Option<IpAddr>) -> Result<StreamSlot, Status> {
        let mut per_client = self.per_client.lock();
        if let Some(address) = client
            && per_client.get(&address).copied().unwrap_or(0) >= self.max_per_client
        {
            return Err(Status::resource_exhausted(format!(
                "client {address} already has {} streams open (server.max_streams_per_client)",
                self.max_per_client
            )));
        }
        let permit = Arc::clone(&self.total).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "the server already serves its maximum of {} streams (server.max_streams)",
                self.max_total
            ))
        })?;
        if let Some(address) = client {
            *per_client.entry(address).or_default() += 1;
        }
        Ok(StreamSlot {
            _permit: permit,
            client,
            per_client: Arc::clone(&self.per_client),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let Some(address) = self.client else {
            return;
        };
        let mut per_client = self.per_client.lock();
        if let Some(count) = per_client.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                per_client.remove(&address);
            }
        }
    }
}

/// Completes when the server stream fed by `sender` is to end without a message of its own: its
/// client went away, or the server shuts down (`shutdown` cancelled), and then only once the client
/// was sent `UNAVAILABLE` ("shutting down"). Meant as a `select!` branch beside the stream's own
/// messages: dropped while that status waits for room, it is sent again on the next pass.
pub(crate) async fn ended<T>(
    shutdown: &CancellationToken,
    sender: &mpsc::Sender<Result<T, Status>>,
) {
    tokio::select! {
        () = shutdown.cancelled() => {
            // A send fails only when the client went away: the stream ends all the same.
            let _ = sender.send(Err(AppError::ShuttingDown.into())).await;
        }
        () = sender.closed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_cannot_take_every_slot_and_slots_come_back() {
        let slots = StreamSlots::new(3, 2);
        let address = IpAddr::from([10, 0, 0, 1]);
        let greedy = Some(address);
        let other = Some(IpAddr::from([10, 0, 0, 2]));
        let first = slots.acquire(greedy).unwrap();
        let _second = slots.acquire(greedy).unwrap();
        let refused = slots.acquire(greedy).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("max_streams_per_client"));
        let _third = slots.acquire(other).unwrap();
        let full = slots.acquire(other).unwrap_err();
        assert!(full.message().contains("server.max_streams)"), "{full:?}");
        drop(first);
        let _again = slots.acquire(greedy).unwrap();
        assert_eq!(slots.per_client.lock().get(&address), Some(&2));
    }
}
