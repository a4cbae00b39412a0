//! Bearer-token authentication, compared in constant time: the gRPC interceptor, and the check the
//! HTTP remote-write endpoint shares.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Accepts a call when its `authorization: Bearer TOKEN` matches one of the configured tokens; with no
/// tokens configured, accepts every call.
#[derive(Clone)]
pub(crate) struct BearerAuth {
    /// The accepted tokens' bytes, shared by every clone of the interceptor; empty accepts all.
    tokens: Arc<[Vec<u8>]>,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl BearerAuth {
    pub(crate) fn new(tokens: &[String]) -> Self {
        Self {
            tokens: tokens
                .iter()
                .map(|token| token.as_bytes().to_vec())
                .collect(),
        }
    }

    /// Whether `presented` is a configured token. Every token is compared, each in time that does not
    /// depend on where the bytes differ (only on the lengths).
    fn accepts(&self, presented: &[u8]) -> bool {
        let mut matched = subtle::Choice::from(0);
        for token in self.tokens.iter() {
            matched |= token.as_slice().ct_eq(presented);
        }
        matched.into()
    }

    /// Checks an `authorization` header's value (`None` when absent): `Ok` when no tokens are
    /// configured or it is `Bearer TOKEN` with a configured token; otherwise why it was refused.
    pub(crate) fn check(&self, header: Option<&[u8]>) -> Result<(), &'static str> {
        if self.tokens.is_empty() {
            return Ok(());
        }
        let header = header.ok_or("missing authorization: Bearer token")?;
        let token = header
            .strip_prefix(b"Bearer ")
            .ok_or("authorization must be `Bearer TOKEN`")?;
        if self.accepts(token.trim_ascii()) {
            Ok(())
        } else {
            Err("invalid bearer token")
        }
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes());
        match self.check(header) {
            Ok(()) => Ok(request),
            Err(reason) => Err(Status::unauthenticated(reason)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(auth: &BearerAuth, header: Option<&str>) -> Result<(), tonic::Code> {
        let mut request = Request::new(());
        if let Some(header) = header {
            request
                .metadata_mut()
                .insert("authorization", header.parse().unwrap());
        }
        auth.clone()
            .call(request)
            .map(drop)
            .map_err(|status| status.code())
    }

    #[test]
    fn only_configured_tokens_pass() {
        let auth = BearerAuth::new(&["s3cret".to_owned(), "other".to_owned()]);
        assert_eq!(call(&auth, Some("Bearer s3cret")), Ok(()));
        assert_eq!(call(&auth, Some("Bearer other")), Ok(()));
        for refused in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cretx"),
            Some("s3cret"),
        ] {
            assert_eq!(call(&auth, refused), Err(tonic::Code::Unauthenticated));
        }
        assert_eq!(call(&BearerAuth::new(&[]), None), Ok(()));
    }
}
