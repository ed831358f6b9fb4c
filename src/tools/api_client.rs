//! The HTTP client that search engines and image APIs share: a leaf, so the tools need not
//! reach into their actor for it.

use std::time::Duration;

/// The HTTP client for engines and image APIs: no redirects, no overall timeout (each call has
/// its own), our `User-Agent`.
pub(crate) fn api_client() -> awc::Client {
    let connector = awc::Connector::new()
        .timeout(Duration::from_secs(10))
        .handshake_timeout(Duration::from_secs(10));
    awc::Client::builder()
        .connector(connector)
        .disable_redirects()
        .disable_timeout()
        .no_default_headers()
        .add_default_header((
            actix_web::http::header::USER_AGENT,
            crate::providers::identity::USER_AGENT,
        ))
        .finish()
}
