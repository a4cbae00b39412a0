//! Bearer-token authentication, compared in constant time.

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
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.tokens.is_empty() {
            return Ok(request);
        }
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer token"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer TOKEN`"))?;
        if self.accepts(token.trim().as_bytes()) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("invalid bearer token"))
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
