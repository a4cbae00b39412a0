//! How a replica dials another member's listener for a forwarded call: over TCP as tonic's own
//! connector would (no delay, the endpoint's timeout and TLS on top), except that a failure to
//! connect names the member and its address. Without it a forwarded call to an owner that is gone
//! or advertises a wrong address fails with a bare "tcp connect error", which tells the caller
//! nothing of where the call went.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;

/// Connects to one member's `host:port`.
#[derive(Debug, Clone)]
pub(super) struct MemberConnector {
    /// The `host:port` dialled (resolved on each connection, as a pod's DNS name may move).
    address: Arc<str>,
    /// The member, for errors.
    member: Arc<str>,
}

impl MemberConnector {
    /// Dials `address`, member `member`'s listener.
    pub(super) fn new(member: &str, address: &str) -> Self {
        Self {
            address: address.into(),
            member: member.into(),
        }
    }
}

impl tower::Service<Uri> for MemberConnector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (address, member) = (Arc::clone(&self.address), Arc::clone(&self.member));
        Box::pin(async move {
            let stream = TcpStream::connect(&*address).await.map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("cannot connect to member {member} at {address}: {error}"),
                )
            })?;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(stream))
        })
    }
}
