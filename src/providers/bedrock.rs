//! The `bedrock` kind: Claude on AWS Bedrock. `POST {base}/model/{id}/invoke` (JSON) and
//! `/invoke-with-response-stream` (eventstream frames, decoded as they arrive into the Anthropic
//! events the client gets), SigV4-signed with credentials from the AWS SDK's own chain. The
//! wire format is `protocol::{cloud, bedrock}`; this file is the I/O.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::provider_config::ProviderConfig as AwsProviderConfig;
use aws_config::Region;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::token_cache::TokenCache;
use super::{
    accepted, report_sent, retry_after, truncate_chars, Call, CountCall, FailureClass, Provider,
    ProviderEvent, UpstreamError, MAX_ERROR_BODY,
};
use crate::config::CloudCredentials;
use crate::protocol::bedrock::{http_error, BedrockError, EventStreamDecoder, StreamItem};
use crate::protocol::cloud::{
    bedrock_body, bedrock_count_body, bedrock_count_reply, bedrock_path, cloud_supports_beta,
    split_betas,
};

/// Largest non-stream body read from Bedrock.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Credentials are refreshed this long before they expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
const EVENTSTREAM: &str = "application/vnd.amazon.eventstream";

/// AWS credentials for one provider, shared by every worker.
pub struct AwsAuth {
    region: String,
    source: Source,
    cache: TokenCache<Credentials>,
}

enum Source {
    Static(Credentials),
    /// The SDK's default chain, built on first use (building it is async).
    Chain {
        profile: Option<String>,
        chain: tokio::sync::OnceCell<SharedCredentialsProvider>,
    },
}

impl fmt::Debug for AwsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Static(_) => "static keys",
            Source::Chain { .. } => "default chain",
        };
        write!(f, "AwsAuth({}, {source})", self.region)
    }
}

impl AwsAuth {
    pub fn new(region: &str, creds: &CloudCredentials) -> Self {
        let source = match creds {
            CloudCredentials::AwsStatic {
                access_key_id,
                secret_access_key,
                session_token,
            } => Source::Static(Credentials::new(
                access_key_id.expose(),
                secret_access_key.expose(),
                session_token.as_ref().map(|t| t.expose().to_string()),
                None,
                "aigw-config",
            )),
            _ => Source::Chain {
                profile: match creds {
                    CloudCredentials::AwsChain { profile } => profile.clone(),
                    _ => None,
                },
                chain: tokio::sync::OnceCell::new(),
            },
        };
        Self {
            region: region.to_string(),
            source,
            cache: TokenCache::new(REFRESH_MARGIN),
        }
    }

    /// Current credentials: cached, or fetched from the chain (one fetch at a time) when they are
    /// missing or within a minute of their expiry.
    pub async fn credentials(&self) -> Result<Credentials, UpstreamError> {
        let chain = match &self.source {
            Source::Static(c) => return Ok(c.clone()),
            Source::Chain { profile, chain } => {
                chain
                    .get_or_init(|| build_chain(&self.region, profile.as_deref()))
                    .await
            }
        };
        self.cache
            .get(|| async {
                let c = chain.provide_credentials().await.map_err(|e| {
                    UpstreamError::from_status(401, format!("no AWS credentials: {e}"))
                })?;
                let expiry = c.expiry();
                Ok((c, expiry))
            })
            .await
    }
}

/// The SDK's default chain over an HTTP client on rustls with ring (the gateway's one TLS
/// provider) for STS, the ECS endpoint and IMDS.
async fn build_chain(region: &str, profile: Option<&str>) -> SharedCredentialsProvider {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let conf = AwsProviderConfig::without_region()
        .with_http_client(http)
        .with_region(Some(Region::new(region.to_string())));
    let mut builder = DefaultCredentialsChain::builder()
        .configure(conf)
        .region(Region::new(region.to_string()));
    if let Some(p) = profile {
        builder = builder.profile_name(p);
    }
    SharedCredentialsProvider::new(builder.build().await)
}

fn auth(provider: &Provider) -> Result<&AwsAuth, UpstreamError> {
    match &provider.cloud {
        Some(super::CloudAuth::Aws(a)) => Ok(a),
        _ => Err(UpstreamError::transient(
            "bedrock provider without AWS credentials",
        )),
    }
}

/// The SigV4 headers (`authorization`, `x-amz-date`, `x-amz-security-token`) for a request.
pub fn sign_headers(
    creds: &Credentials,
    region: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    time: SystemTime,
) -> Result<Vec<(&'static str, String)>, String> {
    let identity: Identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("bedrock")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("signing parameters: {e}"))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("signing: {e}"))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| format!("signing: {e}"))?
        .into_parts();
    let (headers, _) = instructions.into_parts();
    Ok(headers
        .into_iter()
        .map(|h| (h.name(), h.value().to_string()))
        .collect())
}

/// Values that must never leave the gateway, whatever an upstream echoes.
fn redact(text: &str, creds: &Credentials) -> String {
    let mut out = text.to_string();
    for s in [
        Some(creds.access_key_id()),
        Some(creds.secret_access_key()),
        creds.session_token(),
    ]
    .into_iter()
    .flatten()
    {
        if !s.is_empty() {
            out = out.replace(s, "[redacted]");
        }
    }
    out
}

/// Builds and signs `POST {base}{path}`.
async fn signed_post(
    client: &awc::Client,
    provider: &Provider,
    path: &str,
    accept: &str,
    body: &[u8],
) -> Result<(awc::ClientRequest, Credentials), UpstreamError> {
    let auth = auth(provider)?;
    let creds = auth.credentials().await?;
    let base = provider.config.base_url.as_deref().unwrap_or_default();
    let url = format!("{base}{path}");
    let mut headers: Vec<(&str, &str)> =
        vec![("content-type", "application/json"), ("accept", accept)];
    for (k, v) in &provider.config.headers {
        headers.push((k.as_str(), v.as_str()));
    }
    let signed = sign_headers(
        &creds,
        &auth.region,
        &url,
        &headers,
        body,
        SystemTime::now(),
    )
    .map_err(|e| UpstreamError::transient(redact(&e, &creds)))?;
    let mut req = client.post(&url);
    for (k, v) in headers.iter().copied() {
        req = req.insert_header((k, v));
    }
    for (k, v) in signed {
        req = req.insert_header((k, v));
    }
    Ok((req, creds))
}

/// Sends; a non-2xx answer becomes an [`UpstreamError`] classed by its exception.
async fn send(
    req: awc::ClientRequest,
    body: Bytes,
    creds: &Credentials,
) -> Result<awc::ClientResponse, UpstreamError> {
    let mut res = req.send_body(body).await.map_err(|e| {
        let mut err =
            UpstreamError::transient(redact(&format!("upstream request failed: {e}"), creds));
        err.timeout = matches!(e, awc::error::SendRequestError::Timeout);
        err
    })?;
    let status = res.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(res);
    }
    let body = res.body().limit(MAX_ERROR_BODY).await.unwrap_or_default();
    let kind = res
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok());
    let mut err = upstream_error(http_error(kind, &body), Some(status), creds);
    err.retry_after = retry_after(res.headers());
    Err(err)
}

/// A Bedrock exception as an attempt failure: the exception decides the class, else the status.
fn upstream_error(e: BedrockError, status: Option<u16>, creds: &Credentials) -> UpstreamError {
    let status = e.exception.map(|x| x.status()).or(status);
    let message = truncate_chars(&redact(&e.message, creds), 1000);
    let message = if e.name.is_empty() {
        message
    } else {
        format!("{}: {message}", e.name)
    };
    UpstreamError {
        class: status.map_or(FailureClass::Transient, FailureClass::from_status),
        status,
        message,
        retry_after: None,
        error_type: e.exception.map(|x| x.error_type().to_string()),
        timeout: e.exception == Some(crate::protocol::bedrock::Exception::ModelTimeout),
    }
}

/// The client's betas Bedrock accepts (the rest were reported as dropped by strictness) and the
/// provider's `extra_betas`, for the body's `anthropic_beta`.
fn betas<'a>(provider: &'a Provider, client: Option<&'a str>) -> Vec<&'a str> {
    split_betas(client)
        .filter(|b| cloud_supports_beta(b))
        .chain(provider.config.extra_betas.iter().map(String::as_str))
        .collect()
}

pub async fn run(
    client: awc::Client,
    provider: Arc<Provider>,
    call: Call,
    sink: mpsc::Sender<ProviderEvent>,
) {
    let event = match attempt(&client, &provider, &call, &sink).await {
        Ok(None) => return,
        Ok(Some(event)) => event,
        Err(e) => ProviderEvent::failed(e),
    };
    let _ = sink.send(event).await;
}

/// One attempt; `Ok(None)` when the stream was pumped to its end (or the session left).
async fn attempt(
    client: &awc::Client,
    provider: &Provider,
    call: &Call,
    sink: &mpsc::Sender<ProviderEvent>,
) -> Result<Option<ProviderEvent>, UpstreamError> {
    let skip: Vec<&str> = call
        .drops
        .iter()
        .filter(|w| w.is_top_level())
        .map(|w| w.param.as_str())
        .collect();
    let anthropic = call.request.anthropic_body(&call.upstream_model, &skip);
    let body = bedrock_body(&anthropic, &betas(provider, call.anthropic_beta.as_deref()))
        .map_err(UpstreamError::transient)?;
    let body = Bytes::from(body);
    let (op, accept) = if call.stream {
        ("invoke-with-response-stream", EVENTSTREAM)
    } else {
        ("invoke", "application/json")
    };
    let path = bedrock_path(&call.upstream_model, op);
    let (req, creds) = signed_post(client, provider, &path, accept, &body).await?;
    report_sent(call, &req, &body, sink).await;
    let mut res = send(req, body, &creds).await?;
    if call.stream {
        let ct = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ct.starts_with(EVENTSTREAM) {
            return Err(UpstreamError::transient(format!(
                "Bedrock answered a stream request with content-type \"{}\"",
                truncate_chars(ct, 100)
            )));
        }
    }
    if sink.send(accepted_bedrock(&res)).await.is_err() {
        return Ok(None);
    }
    if call.stream {
        pump(res, call.capture_response, &creds, sink).await;
        return Ok(None);
    }
    let body = res
        .body()
        .limit(MAX_BODY)
        .await
        .map_err(|e| UpstreamError::transient(format!("upstream body: {e}")))?;
    if call.capture_response {
        let _ = sink.send(ProviderEvent::Raw(body.clone())).await;
    }
    Ok(Some(super::anthropic::read_message(body)))
}

/// Bedrock names its request id `x-amzn-requestid`.
fn accepted_bedrock(res: &awc::ClientResponse) -> ProviderEvent {
    match res
        .headers()
        .get("x-amzn-requestid")
        .and_then(|v| v.to_str().ok())
    {
        Some(id) => ProviderEvent::Accepted {
            upstream_request_id: Some(id.to_string()),
        },
        None => accepted(res),
    }
}

/// Decodes frames as each read completes and forwards their events; an exception frame ends the
/// attempt with its class.
async fn pump(
    mut res: awc::ClientResponse,
    capture: bool,
    creds: &Credentials,
    sink: &mpsc::Sender<ProviderEvent>,
) {
    let mut decoder = EventStreamDecoder::new();
    let mut items = Vec::new();
    loop {
        let (failure, done) = match res.next().await {
            Some(Ok(bytes)) => match decoder.push(&bytes, &mut items) {
                Ok(()) => (None, false),
                Err(why) => (Some(UpstreamError::transient(why)), true),
            },
            Some(Err(e)) => (
                Some(UpstreamError::transient(format!(
                    "upstream stream broke: {e}"
                ))),
                true,
            ),
            None if decoder.has_partial() => (
                Some(UpstreamError::transient(
                    "upstream stream ended inside a frame",
                )),
                true,
            ),
            None => (None, true),
        };
        let mut frames = Vec::with_capacity(items.len());
        let mut exception = None;
        for item in items.drain(..) {
            match item {
                StreamItem::Frame(f) => frames.push(f),
                StreamItem::Exception(e) => {
                    exception = Some(upstream_error(e, None, creds));
                    break;
                }
            }
        }
        if capture {
            for f in &frames {
                let _ = sink.send(ProviderEvent::Raw(f.data.clone())).await;
            }
        }
        if !frames.is_empty() && sink.send(ProviderEvent::Frames(frames)).await.is_err() {
            return;
        }
        if let Some(err) = exception.or(failure) {
            let _ = sink.send(ProviderEvent::failed(err)).await;
            return;
        }
        if done {
            let _ = sink.send(ProviderEvent::End).await;
            return;
        }
    }
}

/// `POST {base}/model/{id}/count-tokens`, answered as Anthropic's `{"input_tokens": n}`.
pub async fn count_tokens(
    client: awc::Client,
    provider: Arc<Provider>,
    call: CountCall,
) -> Result<Bytes, UpstreamError> {
    #[derive(serde::Deserialize)]
    struct Model {
        model: String,
    }
    let model: Model = serde_json::from_slice(&call.body)
        .map_err(|_| UpstreamError::transient("count_tokens body without a model"))?;
    let body = bedrock_count_body(
        &call.body,
        &betas(&provider, call.anthropic_beta.as_deref()),
    )
    .map_err(UpstreamError::transient)?;
    let path = bedrock_path(&model.model, "count-tokens");
    let (req, creds) = signed_post(&client, &provider, &path, "application/json", &body).await?;
    let mut res = send(req, Bytes::from(body), &creds).await?;
    let body = res
        .body()
        .limit(MAX_ERROR_BODY)
        .await
        .map_err(|e| UpstreamError::transient(format!("upstream body: {e}")))?;
    bedrock_count_reply(&body).map_err(UpstreamError::transient)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_is_the_sdk_signature() {
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG",
            Some("tok".into()),
            None,
            "t",
        );
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let h = sign_headers(
            &creds,
            "us-east-1",
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/a%3A0/invoke",
            &[("content-type", "application/json")],
            b"{}",
            t,
        )
        .unwrap();
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        let auth = get("authorization").unwrap();
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-east-1/bedrock/aws4_request"
        ));
        assert_eq!(get("x-amz-date"), Some("20231114T221320Z"));
        assert_eq!(get("x-amz-security-token"), Some("tok"));
        assert_eq!(
            redact("key AKIDEXAMPLE tok", &creds),
            "key [redacted] [redacted]"
        );
    }
}
