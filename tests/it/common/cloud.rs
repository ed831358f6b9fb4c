//! In-process stand-ins for the clouds, on [`MockUpstream`]: a Bedrock runtime that recomputes
//! every request's SigV4 signature with the test's known keys (through the AWS signer, not the
//! gateway's code), answers JSON and streams real eventstream frames split at awkward points; a
//! Vertex endpoint that takes only live tokens; and a Google token endpoint that verifies each
//! JWT assertion's RS256 signature with the test service account's public key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};

use super::upstream::{self, End, MockUpstream, Recorded, Reply};

pub const AWS_REGION: &str = "us-east-1";
pub const AWS_KEY_ID: &str = "AKIDTESTGATEWAY0001";
pub const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYTESTSECRET";
pub const AWS_SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjTESTSESSIONTOKEN";

/// The test service account (a key pair generated once, in fixtures/, for tests only).
pub const SA_PRIVATE_KEY: &str = include_str!("fixtures/test-only-service-account.key.pem");
pub const SA_PUBLIC_KEY: &str = include_str!("fixtures/test-only-service-account.pub.pem");
pub const SA_EMAIL: &str = "aigw-test@test-project.iam.gserviceaccount.com";

/// Keys the Bedrock stand-in accepts: access key id → (secret, session token).
pub type AwsKeys = Arc<Mutex<HashMap<String, (String, Option<String>)>>>;

pub fn aws_keys(entries: &[(&str, &str, Option<&str>)]) -> AwsKeys {
    Arc::new(Mutex::new(
        entries
            .iter()
            .map(|(id, s, t)| (id.to_string(), (s.to_string(), t.map(str::to_string))))
            .collect(),
    ))
}

pub struct BedrockMock {
    pub up: MockUpstream,
    pub bad_signatures: Arc<AtomicUsize>,
    pub keys: AwsKeys,
}

impl BedrockMock {
    pub fn start(keys: AwsKeys) -> Self {
        let bad = Arc::new(AtomicUsize::new(0));
        let (k, b) = (keys.clone(), bad.clone());
        let up = MockUpstream::start(Arc::new(move |rec: &Recorded| {
            match verify_sigv4(rec, &k) {
                Ok(()) => bedrock_reply(rec),
                Err(why) => {
                    b.fetch_add(1, Ordering::SeqCst);
                    Reply::Json(
                        403,
                        json!({ "message": why }),
                        vec![(
                            "x-amzn-errortype".into(),
                            "InvalidSignatureException".into(),
                        )],
                    )
                }
            }
        }));
        Self {
            up,
            bad_signatures: bad,
            keys,
        }
    }

    pub fn url(&self) -> &str {
        &self.up.url
    }
}

/// Recomputes the request's signature with the key its `Credential=` names and the AWS signer,
/// over the headers it lists as signed, and compares the whole `authorization` header.
pub fn verify_sigv4(rec: &Recorded, keys: &AwsKeys) -> Result<(), String> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;
    let auth = rec.header("authorization").ok_or("no authorization")?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 Credential=")
        .ok_or("not SigV4")?;
    let key_id = rest.split('/').next().unwrap_or_default();
    let scope: Vec<&str> = rest
        .split(',')
        .next()
        .unwrap_or_default()
        .split('/')
        .collect();
    if scope.get(2) != Some(&AWS_REGION) || scope.get(3) != Some(&"bedrock") {
        return Err(format!("wrong scope {scope:?}"));
    }
    let signed_list = auth
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .ok_or("no SignedHeaders")?;
    let (secret, token) = keys
        .lock()
        .unwrap()
        .get(key_id)
        .cloned()
        .ok_or_else(|| format!("unknown key {key_id}"))?;
    if rec.header("x-amz-security-token") != token.as_deref() {
        return Err("wrong session token".into());
    }
    let date = rec.header("x-amz-date").ok_or("no x-amz-date")?;
    let time: SystemTime = chrono::NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ")
        .map_err(|e| e.to_string())?
        .and_utc()
        .into();
    let skew = SystemTime::now()
        .duration_since(time)
        .unwrap_or_else(|e| e.duration());
    if skew > Duration::from_secs(300) {
        return Err("request time too far from now".into());
    }
    let host = rec.header("host").ok_or("no host")?;
    let uri = if rec.query.is_empty() {
        format!("http://{host}{}", rec.path)
    } else {
        format!("http://{host}{}?{}", rec.path, rec.query)
    };
    // The signer adds host, x-amz-date and the token itself.
    let headers: Vec<(&str, &str)> = signed_list
        .split(';')
        .filter(|h| !matches!(*h, "host" | "x-amz-date" | "x-amz-security-token"))
        .map(|h| (h, rec.header(h).unwrap_or("")))
        .collect();
    let identity =
        aws_credential_types::Credentials::new(key_id, secret, token, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(AWS_REGION)
        .name("bedrock")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        "POST",
        uri,
        headers.into_iter(),
        SignableBody::Bytes(&rec.body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let expected = instructions
        .headers()
        .find(|(k, _)| *k == "authorization")
        .map(|(_, v)| v.to_string())
        .unwrap();
    if expected != auth {
        return Err("signature mismatch".into());
    }
    Ok(())
}

/// One eventstream frame, built with the AWS eventstream crate.
pub fn es_frame(headers: &[(&str, &str)], payload: Vec<u8>) -> Vec<u8> {
    let headers = headers
        .iter()
        .map(|(k, v)| Header::new(k.to_string(), HeaderValue::String(v.to_string().into())))
        .collect();
    let mut out = Vec::new();
    write_message_to(&Message::new_from_parts(headers, payload), &mut out).unwrap();
    out
}

pub fn es_chunk(event: &Value) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(event.to_string());
    es_frame(
        &[
            (":event-type", "chunk"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        json!({"bytes": b64, "p": "abcdefghijklmnopqrstuvwxyzABCDEFG"})
            .to_string()
            .into_bytes(),
    )
}

pub fn es_exception(name: &str, message: &str) -> Vec<u8> {
    es_frame(
        &[
            (":exception-type", name),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        json!({ "message": message }).to_string().into_bytes(),
    )
}

/// The data of each SSE frame the Anthropic fixtures build, as Bedrock carries them (its
/// `message_stop` has its invocation metrics).
pub fn bedrock_events(frames: &[String]) -> Vec<Value> {
    frames
        .iter()
        .map(|f| {
            let data = f.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            let mut v: Value = serde_json::from_str(data).unwrap();
            if v["type"] == "message_stop" {
                v["amazon-bedrock-invocationMetrics"] = json!({"inputTokenCount": 21,
                    "outputTokenCount": 9, "invocationLatency": 400, "firstByteLatency": 100});
            }
            v
        })
        .collect()
}

/// Bytes cut at awkward points: inside preludes, headers and CRCs, 1 to 13 bytes at a time.
pub fn awkward_pieces(bytes: Vec<u8>) -> Vec<Bytes> {
    let sizes = [1usize, 3, 13, 2, 7, 11, 5, 64];
    let mut out = Vec::new();
    let mut i = 0;
    let mut n = 0;
    while i < bytes.len() {
        let end = (i + sizes[n % sizes.len()]).min(bytes.len());
        out.push(Bytes::copy_from_slice(&bytes[i..end]));
        i = end;
        n += 1;
    }
    out
}

const EVENTSTREAM: &str = "application/vnd.amazon.eventstream";

/// HTTP statuses Bedrock really uses for each exception.
pub const EXCEPTIONS: [(&str, u16); 10] = [
    ("ThrottlingException", 429),
    ("ServiceUnavailableException", 503),
    ("InternalServerException", 500),
    ("ModelNotReadyException", 429),
    ("AccessDeniedException", 403),
    ("ResourceNotFoundException", 404),
    ("UnrecognizedClientException", 403),
    ("ValidationException", 400),
    ("ModelTimeoutException", 408),
    ("ModelStreamErrorException", 424),
];

/// The model id from a Bedrock path (`/model/{percent-encoded id}/{op}`) and the op.
pub fn bedrock_target(path: &str) -> (String, String) {
    let rest = path.strip_prefix("/model/").unwrap_or_default();
    let (id, op) = rest.split_once('/').unwrap_or((rest, ""));
    let id = percent_encoding::percent_decode_str(id)
        .decode_utf8_lossy()
        .to_string();
    (id, op.to_string())
}

/// Behaviour by model id: `http-<Exception>`, `mid-<Exception>` (one delta, then the exception
/// frame), `first-<Exception>` (the exception as the stream's first frame), `cut` (the stream
/// ends inside a frame), else the scripted Anthropic upstream's [`upstream::by_model`] in
/// Bedrock's envelope ([`as_bedrock`]). A `:0`-style suffix is ignored.
pub fn bedrock_reply(rec: &Recorded) -> Reply {
    let (id, op) = bedrock_target(&rec.path);
    let name = id.split(":").next().unwrap_or_default().to_string();
    if op == "count-tokens" {
        return Reply::Json(200, json!({"inputTokens": upstream::COUNT_TOKENS}), vec![]);
    }
    if let Some(exc) = name.strip_prefix("http-") {
        let status = EXCEPTIONS.iter().find(|(n, _)| *n == exc).unwrap().1;
        return Reply::Json(
            status,
            json!({"message": format!("scripted {exc}")}),
            vec![(
                "x-amzn-errortype".into(),
                format!("{exc}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            )],
        );
    }
    let stream = op == "invoke-with-response-stream";
    let special = ["first-", "mid-"].iter().any(|p| name.starts_with(p)) || name == "cut";
    if !special {
        // Everything else is the scripted Anthropic upstream, in Bedrock's envelope.
        let mut body = rec.json();
        body["model"] = json!(name);
        body["stream"] = json!(stream);
        let anthropic = Recorded {
            body: Bytes::from(body.to_string()),
            ..rec.clone()
        };
        return as_bedrock(upstream::by_model(&anthropic));
    }
    let frames = upstream::text_stream(&name, &["Hello", " from", " Bedrock"]);
    let events = bedrock_events(&frames);
    let mut bytes: Vec<u8> = Vec::new();
    if let Some(exc) = name.strip_prefix("first-") {
        bytes.extend(es_exception(exc, &format!("scripted {exc}")));
    } else if let Some(exc) = name.strip_prefix("mid-") {
        for e in &events[..4] {
            bytes.extend(es_chunk(e));
        }
        bytes.extend(es_exception(exc, &format!("scripted {exc}")));
    } else {
        for e in &events {
            bytes.extend(es_chunk(e));
        }
    }
    if name == "cut" {
        let n = bytes.len() - 5;
        return Reply::Partial(EVENTSTREAM, Bytes::from(bytes[..n].to_vec()), End::Close);
    }
    Reply::Trickle(EVENTSTREAM, awkward_pieces(bytes), Duration::ZERO)
}

/// The exception Bedrock reports for an Anthropic error type, with its HTTP status.
fn exception_for(error_type: &str) -> (&'static str, u16) {
    match error_type {
        "rate_limit_error" => ("ThrottlingException", 429),
        "overloaded_error" => ("ServiceUnavailableException", 503),
        "invalid_request_error" | "request_too_large" => ("ValidationException", 400),
        "not_found_error" => ("ResourceNotFoundException", 404),
        "authentication_error" => ("UnrecognizedClientException", 403),
        "permission_error" => ("AccessDeniedException", 403),
        "timeout_error" => ("ModelTimeoutException", 408),
        _ => ("InternalServerException", 500),
    }
}

/// An Anthropic upstream's answer as Bedrock gives it: errors as exceptions (over HTTP, or
/// in-band for an `error` event), stream events as eventstream `chunk` frames split awkwardly.
pub fn as_bedrock(reply: Reply) -> Reply {
    match reply {
        Reply::Json(status, body, _) if status >= 400 => {
            let (exc, bedrock_status) = exception_for(body["error"]["type"].as_str().unwrap_or(""));
            Reply::Json(
                bedrock_status,
                json!({"message": body["error"]["message"]}),
                vec![("x-amzn-errortype".into(), exc.into())],
            )
        }
        Reply::Sse { chunks, end, .. } => {
            let text: String = chunks
                .iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            let mut bytes = Vec::new();
            for frame in text.split("\n\n").filter(|f| !f.trim().is_empty()) {
                let data = frame
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .expect("a data line");
                let v: Value = serde_json::from_str(data).unwrap();
                if v["type"] == "error" {
                    let (exc, _) = exception_for(v["error"]["type"].as_str().unwrap_or(""));
                    bytes.extend(es_exception(
                        exc,
                        v["error"]["message"].as_str().unwrap_or(""),
                    ));
                } else {
                    bytes.extend(es_chunk(&v));
                }
            }
            match end {
                End::Close => Reply::Trickle(EVENTSTREAM, awkward_pieces(bytes), Duration::ZERO),
                end => Reply::Partial(EVENTSTREAM, Bytes::from(bytes), end),
            }
        }
        other => other,
    }
}

/// A Google token endpoint, metadata server and Vertex endpoint in one server.
pub struct VertexMock {
    pub up: MockUpstream,
    /// Tokens issued, by any grant.
    pub refreshes: Arc<AtomicUsize>,
    /// Requests refused for a bad assertion or a dead token.
    pub refused: Arc<AtomicUsize>,
    issued: Arc<Mutex<Vec<Issued>>>,
}

pub const VERTEX_PROJECT: &str = "test-project";
pub const VERTEX_REGION: &str = "us-east5";
pub const REFRESH_TOKEN: &str = "1//test-refresh-token-hidden";
pub const CLIENT_SECRET: &str = "test-client-secret-hidden";

struct Issued {
    token: String,
    until: Instant,
}

impl VertexMock {
    /// Tokens live `lifetime` seconds.
    pub fn start(lifetime: u64) -> Self {
        let refreshes = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let issued: Arc<Mutex<Vec<Issued>>> = Arc::default();
        let (r, x, tokens) = (refreshes.clone(), refused.clone(), issued.clone());
        let url = Arc::new(Mutex::new(String::new()));
        let u = url.clone();
        let up = MockUpstream::start(Arc::new(move |rec: &Recorded| {
            let refuse = |status: u16, body: Value| {
                x.fetch_add(1, Ordering::SeqCst);
                Reply::Json(status, body, vec![])
            };
            let issue = || {
                let n = r.fetch_add(1, Ordering::SeqCst) + 1;
                let token = format!("ya29.test-token-{n}");
                issued.lock().unwrap().push(Issued {
                    token: token.clone(),
                    until: Instant::now() + Duration::from_secs(lifetime),
                });
                Reply::Json(
                    200,
                    json!({"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}),
                    vec![],
                )
            };
            if rec.path == "/token" {
                let form: HashMap<String, String> = url::form_urlencoded::parse(&rec.body)
                    .into_owned()
                    .collect();
                return match form.get("grant_type").map(String::as_str) {
                    Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
                        let aud = format!("{}/token", u.lock().unwrap());
                        match verify_assertion(form.get("assertion").map_or("", |s| s), &aud) {
                            Ok(()) => issue(),
                            Err(_) => refuse(400, json!({"error": "invalid_grant"})),
                        }
                    }
                    Some("refresh_token")
                        if form.get("refresh_token").map(String::as_str) == Some(REFRESH_TOKEN)
                            && form.get("client_secret").map(String::as_str)
                                == Some(CLIENT_SECRET) =>
                    {
                        issue()
                    }
                    _ => refuse(400, json!({"error": "invalid_grant"})),
                };
            }
            if rec.path == "/computeMetadata/v1/instance/service-accounts/default/token" {
                if rec.header("metadata-flavor") != Some("Google") {
                    return refuse(403, json!({"error": "missing Metadata-Flavor"}));
                }
                return issue();
            }
            // Vertex: only a live token.
            let live = rec
                .header("authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
                .is_some_and(|t| {
                    issued
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|i| i.token == t && Instant::now() < i.until)
                });
            if !live {
                return refuse(
                    401,
                    json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}),
                );
            }
            vertex_reply(rec)
        }));
        *url.lock().unwrap() = up.url.clone();
        Self {
            up,
            refreshes,
            refused,
            issued: tokens,
        }
    }

    /// Every token issued so far stops working, before its expiry.
    pub fn revoke_all(&self) {
        self.issued.lock().unwrap().clear();
    }

    pub fn url(&self) -> &str {
        &self.up.url
    }

    /// A service-account JSON whose `token_uri` is this server.
    pub fn service_account_json(&self) -> String {
        json!({"type": "service_account", "project_id": VERTEX_PROJECT,
            "private_key_id": "test-key-1", "private_key": SA_PRIVATE_KEY,
            "client_email": SA_EMAIL, "client_id": "1234",
            "token_uri": format!("{}/token", self.up.url)})
        .to_string()
    }

    pub fn authorized_user_json(&self) -> String {
        json!({"type": "authorized_user", "client_id": "test-client.apps.googleusercontent.com",
            "client_secret": CLIENT_SECRET, "refresh_token": REFRESH_TOKEN,
            "token_uri": format!("{}/token", self.up.url)})
        .to_string()
    }
}

/// The assertion is an RS256 JWT signed by the test service account, for this token endpoint,
/// asking for the cloud-platform scope, and not expired.
pub fn verify_assertion(jwt: &str, aud: &str) -> Result<(), String> {
    use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
    let header = decode_header(jwt).map_err(|e| e.to_string())?;
    if header.alg != Algorithm::RS256 || header.kid.as_deref() != Some("test-key-1") {
        return Err("wrong header".into());
    }
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[aud]);
    v.set_issuer(&[SA_EMAIL]);
    let key = DecodingKey::from_rsa_pem(SA_PUBLIC_KEY.as_bytes()).unwrap();
    let data = decode::<Value>(jwt, &key, &v).map_err(|e| e.to_string())?;
    if data.claims["scope"] != "https://www.googleapis.com/auth/cloud-platform" {
        return Err("wrong scope".into());
    }
    Ok(())
}

/// Vertex's answers: the Anthropic fixtures chosen by the model in the path
/// (see [`upstream::by_model`]); count-tokens answers [`upstream::COUNT_TOKENS`].
pub fn vertex_reply(rec: &Recorded) -> Reply {
    let prefix = format!(
        "/v1/projects/{VERTEX_PROJECT}/locations/{VERTEX_REGION}/publishers/anthropic/models/"
    );
    let Some(rest) = rec.path.strip_prefix(&prefix) else {
        return Reply::Json(
            404,
            json!({"error": {"code": 404, "message": "not found"}}),
            vec![],
        );
    };
    let (model, method) = rest.rsplit_once(':').unwrap_or((rest, ""));
    if model == "count-tokens" && method == "rawPredict" {
        return Reply::Json(200, json!({"input_tokens": upstream::COUNT_TOKENS}), vec![]);
    }
    let body = rec.json();
    if body.get("model").is_some() || body["anthropic_version"] != "vertex-2023-10-16" {
        return Reply::Json(
            400,
            json!({"error": {"code": 400, "message": "bad body"}}),
            vec![],
        );
    }
    let stream = body["stream"].as_bool().unwrap_or(false);
    if (method == "streamRawPredict") != stream {
        return Reply::Json(
            400,
            json!({"error": {"code": 400, "message": "method and stream disagree"}}),
            vec![],
        );
    }
    upstream::by_model(&rec.clone_with_model(model))
}
