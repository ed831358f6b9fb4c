//! Google application default credentials as bearer tokens: a service account (an RS256 JWT
//! assertion exchanged at its `token_uri`), an authorized user (a refresh token), or the
//! metadata server. Tokens are cached until 60 s before their expiry and refreshed
//! single-flight, shared by every worker.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::config::{CloudCredentials, Secret};
use crate::providers::token_cache::TokenCache;
use crate::providers::{FailureClass, UpstreamError, MAX_ERROR_BODY};

const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

pub struct GoogleAuth {
    source: Source,
    cache: TokenCache<Secret>,
}

enum Source {
    ServiceAccount {
        client_email: String,
        key_id: Option<String>,
        key: Option<EncodingKey>,
        token_uri: String,
    },
    AuthorizedUser {
        client_id: String,
        client_secret: Secret,
        refresh_token: Secret,
        token_uri: String,
    },
    Metadata {
        url: String,
    },
}

impl fmt::Debug for GoogleAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::ServiceAccount { client_email, .. } => {
                format!("service account {client_email}")
            }
            Source::AuthorizedUser { .. } => "authorized user".to_string(),
            Source::Metadata { url } => format!("metadata server {url}"),
        };
        write!(f, "GoogleAuth({source})")
    }
}

/// What a token endpoint answers (OAuth 2.0 and the metadata server alike).
#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

impl GoogleAuth {
    pub fn new(creds: &CloudCredentials) -> Self {
        let source = match creds {
            CloudCredentials::GoogleServiceAccount {
                client_email,
                private_key_id,
                private_key,
                token_uri,
            } => Source::ServiceAccount {
                client_email: client_email.clone(),
                key_id: private_key_id.clone(),
                key: EncodingKey::from_rsa_pem(private_key.expose().as_bytes()).ok(),
                token_uri: token_uri.clone(),
            },
            CloudCredentials::GoogleAuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                token_uri,
            } => Source::AuthorizedUser {
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                refresh_token: refresh_token.clone(),
                token_uri: token_uri.clone(),
            },
            CloudCredentials::GoogleMetadata { host } => Source::Metadata {
                url: format!(
                    "http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
                ),
            },
            // Not a Google credential: the metadata server is the last resort of ADC too.
            _ => Source::Metadata {
                url: "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token".into(),
            },
        };
        Self {
            source,
            cache: TokenCache::new(REFRESH_MARGIN),
        }
    }

    /// A live access token: cached, or fetched with `client` (one fetch at a time).
    pub async fn token(&self, client: &awc::Client) -> Result<Secret, UpstreamError> {
        self.cache.get(|| self.fetch(client)).await
    }

    /// Vertex refused the cached token (revoked, rotated): the next request fetches another.
    pub fn forget(&self) {
        self.cache.clear();
    }

    async fn fetch(
        &self,
        client: &awc::Client,
    ) -> Result<(Secret, Option<SystemTime>), UpstreamError> {
        let now = SystemTime::now();
        let req = match &self.source {
            Source::ServiceAccount {
                client_email,
                key_id,
                key,
                token_uri,
            } => {
                let key = key.as_ref().ok_or_else(|| {
                    auth_error("the service account's private_key is not an RSA key")
                })?;
                let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
                let claims = Claims {
                    iss: client_email,
                    scope: SCOPE,
                    aud: token_uri,
                    iat,
                    exp: iat + 3600,
                };
                let mut header = Header::new(Algorithm::RS256);
                header.kid = key_id.clone();
                let assertion = jsonwebtoken::encode(&header, &claims, key)
                    .map_err(|_| auth_error("cannot sign the service account's JWT assertion"))?;
                client.post(token_uri).timeout(TOKEN_TIMEOUT).send_form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", assertion.as_str()),
                ])
            }
            Source::AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                token_uri,
            } => client.post(token_uri).timeout(TOKEN_TIMEOUT).send_form(&[
                ("grant_type", "refresh_token"),
                ("client_id", client_id.as_str()),
                ("client_secret", client_secret.expose()),
                ("refresh_token", refresh_token.expose()),
            ]),
            Source::Metadata { url } => client
                .get(format!("{url}?scopes={SCOPE}"))
                .timeout(TOKEN_TIMEOUT)
                .insert_header(("metadata-flavor", "Google"))
                .send(),
        };
        let mut res = req.await.map_err(|e| {
            // The error names the endpoint, never the form it was sent.
            UpstreamError::transient(format!("Google token endpoint unreachable: {e}"))
        })?;
        let status = res.status().as_u16();
        let body = res.body().limit(MAX_ERROR_BODY).await.unwrap_or_default();
        if !(200..300).contains(&status) {
            #[derive(Deserialize)]
            struct OAuthError {
                error: Option<String>,
            }
            let code = serde_json::from_slice::<OAuthError>(&body)
                .ok()
                .and_then(|e| e.error)
                .map(|e| super::super::truncate_chars(&e, 100))
                .unwrap_or_default();
            let mut err = UpstreamError::from_status(
                status,
                format!("Google token endpoint answered {status} {code}"),
            );
            // A refused credential is the deployment's fault; an endpoint in trouble is not.
            if (400..500).contains(&status) && status != 429 {
                err.class = FailureClass::DeploymentFault;
            }
            return Err(err);
        }
        let reply: TokenReply = serde_json::from_slice(&body)
            .map_err(|_| UpstreamError::transient("Google token endpoint answered no token"))?;
        let expiry = now + Duration::from_secs(reply.expires_in.unwrap_or(3600));
        Ok((Secret::new(reply.access_token), Some(expiry)))
    }
}

fn auth_error(message: &str) -> UpstreamError {
    let mut e = UpstreamError::from_status(401, message);
    e.class = FailureClass::DeploymentFault;
    e
}
