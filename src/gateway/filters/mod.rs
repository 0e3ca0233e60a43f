//! Request and response filters, configured per route (or as global defaults).
//!
//! They run in one fixed, documented order (see `proxy.rs`):
//! request id → CORS preflight → key_auth → jwt → rate_limit → max_body →
//! request_headers → (upstream) → response_headers → CORS response headers → request id.

pub mod cors;
pub mod headers;
pub mod jwt;
pub mod key_auth;
pub mod rate_limit;
pub mod request_id;

use std::borrow::Cow;

use http::{HeaderMap, StatusCode};

/// A request stopped by a filter; the proxy turns it into a JSON error response.
#[derive(Debug)]
pub struct Reject {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: Cow<'static, str>,
    /// Boxed: rejections are rare, and a small `Result` keeps the happy path lean.
    pub headers: Box<HeaderMap>,
}

impl Reject {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            headers: Box::default(),
        }
    }
}
