//! The cloud kinds' own keys (`region`, `project`, credentials), checked at start. Credentials are
//! named by where they come from; a missing one is reported by that name, never by its value.

use serde_json::Value;

use super::{ConfigError, ProviderConfig, ProviderKind, Secret};

/// Where a cloud provider's credentials come from, resolved at start.
#[derive(Debug, Clone, PartialEq)]
pub enum CloudCredentials {
    /// bedrock: the AWS default chain (environment, shared files with `profile`, web identity,
    /// ECS container endpoint, IMDSv2), resolved on first use and refreshed before expiry.
    AwsChain { profile: Option<String> },
    /// bedrock: keys read from the variables the config names.
    AwsStatic {
        access_key_id: Secret,
        secret_access_key: Secret,
        session_token: Option<Secret>,
    },
    /// vertex: a service-account JSON (an RS256 JWT assertion is exchanged for tokens).
    GoogleServiceAccount {
        client_email: String,
        private_key_id: Option<String>,
        private_key: Secret,
        token_uri: String,
    },
    /// vertex: an authorized-user JSON (a refresh token, as `gcloud auth application-default
    /// login` writes it).
    GoogleAuthorizedUser {
        client_id: String,
        client_secret: Secret,
        refresh_token: Secret,
        token_uri: String,
    },
    /// vertex: the metadata server of GCE, GKE or Cloud Run.
    GoogleMetadata { host: String },
}

impl CloudCredentials {
    /// Where the credentials come from, for `--check-config` and the start log: names and
    /// paths, never a value.
    pub fn source(&self) -> String {
        match self {
            Self::AwsChain { profile: None } => "the AWS default credential chain (environment, \
                shared config files, web identity, ECS container endpoint, IMDSv2)"
                .into(),
            Self::AwsChain { profile: Some(p) } => format!(
                "the AWS default credential chain with profile \"{p}\" (environment, shared \
                 config files, web identity, ECS container endpoint, IMDSv2)"
            ),
            Self::AwsStatic { session_token, .. } => format!(
                "static AWS keys from aws_access_key_id_env and aws_secret_access_key_env{}",
                if session_token.is_some() {
                    " (with aws_session_token_env)"
                } else {
                    ""
                }
            ),
            Self::GoogleServiceAccount { client_email, .. } => {
                format!("the Google service account {client_email}")
            }
            Self::GoogleAuthorizedUser { .. } => "a Google authorized-user refresh token".into(),
            Self::GoogleMetadata { host } => format!("the Google metadata server at {host}"),
        }
    }
}

const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const GOOGLE_METADATA_HOST: &str = "metadata.google.internal";

/// Checks the keys only the cloud kinds take, fills `base_url` from the region, and resolves the
/// credentials (`None` for the other kinds).
pub(super) fn validate(
    p: &mut ProviderConfig,
    i: usize,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<CloudCredentials>, ConfigError> {
    let at = |k: &str| format!("providers[{i}].{k}");
    let aws_only = [
        ("aws_access_key_id_env", p.aws_access_key_id_env.is_some()),
        (
            "aws_secret_access_key_env",
            p.aws_secret_access_key_env.is_some(),
        ),
        ("aws_session_token_env", p.aws_session_token_env.is_some()),
        ("profile", p.profile.is_some()),
    ];
    let vertex_only = [
        ("project", p.project.is_some()),
        ("credentials_file_env", p.credentials_file_env.is_some()),
    ];
    let refuse = |keys: &[(&str, bool)], kinds: &str| -> Result<(), ConfigError> {
        match keys.iter().find(|(_, set)| *set) {
            Some((k, _)) => Err(ConfigError::new(
                at(k),
                format!("applies to {kinds} providers only"),
            )),
            None => Ok(()),
        }
    };
    if p.kind != ProviderKind::Bedrock {
        refuse(&aws_only, "bedrock")?;
    }
    if p.kind != ProviderKind::Vertex {
        refuse(&vertex_only, "vertex")?;
    }
    if !p.kind.is_cloud() {
        refuse(&[("region", p.region.is_some())], "bedrock and vertex")?;
        return Ok(None);
    }
    if p.api_key_env.is_some() {
        return Err(ConfigError::new(
            at("api_key_env"),
            format!(
                "{} providers authenticate with their cloud's credentials",
                p.kind.as_str()
            ),
        ));
    }
    let region = match p.region.as_deref() {
        Some(r) if valid_label(r) => r.to_string(),
        Some(_) => {
            return Err(ConfigError::new(
                at("region"),
                "must be a region name like us-east-1",
            ))
        }
        None => {
            return Err(ConfigError::new(
                at("region"),
                format!("is required for {} providers", p.kind.as_str()),
            ))
        }
    };
    let default_base = match p.kind {
        ProviderKind::Bedrock => format!("https://bedrock-runtime.{region}.amazonaws.com"),
        _ if region == "global" => "https://aiplatform.googleapis.com".to_string(),
        _ => format!("https://{region}-aiplatform.googleapis.com"),
    };
    super::providers::check_base_url(p.base_url.get_or_insert(default_base), at("base_url"))?;
    let creds = match p.kind {
        ProviderKind::Bedrock => aws_credentials(p, &at, env)?,
        _ => {
            match p.project.as_deref() {
                Some(pr) if valid_label(pr) => {}
                Some(_) => {
                    return Err(ConfigError::new(
                        at("project"),
                        "must be a project id like my-project",
                    ))
                }
                None => {
                    return Err(ConfigError::new(
                        at("project"),
                        "is required for vertex providers",
                    ))
                }
            }
            google_credentials(p, &at, env)?
        }
    };
    Ok(Some(creds))
}

/// Lowercase letters, digits and `-` (regions and project ids; they go into host names and paths).
fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn read_required(
    env: &dyn Fn(&str) -> Option<String>,
    path: String,
    var: &str,
) -> Result<Secret, ConfigError> {
    match env(var) {
        Some(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim().to_string())),
        _ => Err(ConfigError::new(
            path,
            format!("environment variable {var} is not set"),
        )),
    }
}

fn aws_credentials(
    p: &ProviderConfig,
    at: &dyn Fn(&str) -> String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<CloudCredentials, ConfigError> {
    match (&p.aws_access_key_id_env, &p.aws_secret_access_key_env) {
        (Some(id), Some(secret)) => {
            if p.profile.is_some() {
                return Err(ConfigError::new(
                    at("profile"),
                    "cannot be combined with aws_access_key_id_env",
                ));
            }
            let session_token = match &p.aws_session_token_env {
                Some(var) => Some(read_required(env, at("aws_session_token_env"), var)?),
                None => None,
            };
            Ok(CloudCredentials::AwsStatic {
                access_key_id: read_required(env, at("aws_access_key_id_env"), id)?,
                secret_access_key: read_required(env, at("aws_secret_access_key_env"), secret)?,
                session_token,
            })
        }
        (None, None) if p.aws_session_token_env.is_some() => Err(ConfigError::new(
            at("aws_session_token_env"),
            "needs aws_access_key_id_env and aws_secret_access_key_env",
        )),
        (None, None) => Ok(CloudCredentials::AwsChain {
            profile: p.profile.clone(),
        }),
        (Some(_), None) => Err(ConfigError::new(
            at("aws_secret_access_key_env"),
            "is required with aws_access_key_id_env",
        )),
        (None, Some(_)) => Err(ConfigError::new(
            at("aws_access_key_id_env"),
            "is required with aws_secret_access_key_env",
        )),
    }
}

/// Google's application default credentials, in their documented order: the file named by
/// `credentials_file_env` (or `GOOGLE_APPLICATION_CREDENTIALS`), gcloud's well-known file, then the
/// metadata server (`GCE_METADATA_HOST` overrides its host).
fn google_credentials(
    p: &ProviderConfig,
    at: &dyn Fn(&str) -> String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<CloudCredentials, ConfigError> {
    let set = |var: &str| env(var).filter(|v| !v.trim().is_empty());
    let (key, file) = match &p.credentials_file_env {
        Some(var) => (
            at("credentials_file_env"),
            Some(
                read_required(env, at("credentials_file_env"), var)?
                    .expose()
                    .to_string(),
            ),
        ),
        None => (
            at("kind"),
            set("GOOGLE_APPLICATION_CREDENTIALS").or_else(|| {
                let home = set("HOME")?;
                let path = format!("{home}/.config/gcloud/application_default_credentials.json");
                std::path::Path::new(&path).exists().then_some(path)
            }),
        ),
    };
    match file {
        Some(path) => read_google_file(&path)
            .map_err(|why| ConfigError::new(key, format!("Google credentials file {path}: {why}"))),
        None => Ok(CloudCredentials::GoogleMetadata {
            host: set("GCE_METADATA_HOST").unwrap_or_else(|| GOOGLE_METADATA_HOST.to_string()),
        }),
    }
}

/// Parses a credentials JSON. Reasons name fields, never their values.
pub fn read_google_file(path: &str) -> Result<CloudCredentials, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot be read ({e})"))?;
    parse_google_json(&text)
}

pub fn parse_google_json(text: &str) -> Result<CloudCredentials, String> {
    let v: Value = serde_json::from_str(text).map_err(|_| "is not JSON".to_string())?;
    let field = |k: &str| -> Result<String, String> {
        match v.get(k).and_then(Value::as_str) {
            Some(s) if !s.is_empty() => Ok(s.to_string()),
            _ => Err(format!("has no \"{k}\"")),
        }
    };
    let token_uri = field("token_uri").unwrap_or_else(|_| GOOGLE_TOKEN_URI.to_string());
    if !token_uri.starts_with("https://") && !token_uri.starts_with("http://") {
        return Err("\"token_uri\" is not an http(s) URL".into());
    }
    match v.get("type").and_then(Value::as_str) {
        Some("service_account") => {
            let private_key = field("private_key")?;
            if jsonwebtoken::EncodingKey::from_rsa_pem(private_key.as_bytes()).is_err() {
                return Err("\"private_key\" is not an RSA private key in PEM".into());
            }
            Ok(CloudCredentials::GoogleServiceAccount {
                client_email: field("client_email")?,
                private_key_id: field("private_key_id").ok(),
                private_key: Secret::new(private_key),
                token_uri,
            })
        }
        Some("authorized_user") => Ok(CloudCredentials::GoogleAuthorizedUser {
            client_id: field("client_id")?,
            client_secret: Secret::new(field("client_secret")?),
            refresh_token: Secret::new(field("refresh_token")?),
            token_uri,
        }),
        _ => Err("\"type\" must be service_account or authorized_user".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn load(provider: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let text = format!(
            "[auth]\ndisabled = true\n[[providers]]\nname = \"c\"\n{provider}\n[[models]]\nid = \"m\"\ndeployments = [{{ provider = \"c\", model = \"x\" }}]\n"
        );
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_toml_with_env(&text, &|k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    fn err(provider: &str, env: &[(&str, &str)]) -> ConfigError {
        load(provider, env).expect_err("the config is refused")
    }

    #[test]
    fn bedrock_defaults_and_requirements() {
        let c = load("kind = \"bedrock\"\nregion = \"us-east-1\"", &[]).unwrap();
        assert_eq!(
            c.providers[0].base_url.as_deref(),
            Some("https://bedrock-runtime.us-east-1.amazonaws.com")
        );
        assert!(matches!(
            c.secrets.cloud.get("c"),
            Some(CloudCredentials::AwsChain { profile: None })
        ));
        assert_eq!(err("kind = \"bedrock\"", &[]).path, "providers[0].region");
        let e = err(
            "kind = \"bedrock\"\nregion = \"us-east-1\"\nproject = \"p\"",
            &[],
        );
        assert_eq!(e.path, "providers[0].project");
        let e = err("kind = \"anthropic\"\nregion = \"us-east-1\"", &[]);
        assert_eq!(e.path, "providers[0].region");
        let e = err("kind = \"openai\"\nprofile = \"dev\"", &[]);
        assert_eq!(e.path, "providers[0].profile");
        let e = err(
            "kind = \"bedrock\"\nregion = \"us-east-1\"\napi_key_env = \"K\"",
            &[("K", "v")],
        );
        assert_eq!(e.path, "providers[0].api_key_env");
    }

    #[test]
    fn static_aws_keys_are_named_not_shown() {
        let provider = "kind = \"bedrock\"\nregion = \"eu-west-3\"\naws_access_key_id_env = \"MY_ID\"\naws_secret_access_key_env = \"MY_SECRET\"";
        let e = err(provider, &[("MY_ID", "AKIDSHOWNNOWHERE")]);
        assert_eq!(e.path, "providers[0].aws_secret_access_key_env");
        assert!(e.reason.contains("MY_SECRET"), "{e}");
        let c = load(
            provider,
            &[("MY_ID", "AKIDSHOWNNOWHERE"), ("MY_SECRET", "wJalrSECRET")],
        )
        .unwrap();
        let shown = format!("{:?} {:?}", c.secrets.cloud, c.providers);
        assert!(!shown.contains("AKIDSHOWNNOWHERE") && !shown.contains("wJalrSECRET"));
        let e = err(
            "kind = \"bedrock\"\nregion = \"eu-west-3\"\naws_access_key_id_env = \"MY_ID\"",
            &[],
        );
        assert_eq!(e.path, "providers[0].aws_secret_access_key_env");
    }

    #[test]
    fn vertex_defaults_and_credentials() {
        let e = err("kind = \"vertex\"\nregion = \"us-east5\"", &[]);
        assert_eq!(e.path, "providers[0].project");
        let c = load(
            "kind = \"vertex\"\nregion = \"global\"\nproject = \"my-project\"",
            &[("GCE_METADATA_HOST", "127.0.0.1:9")],
        )
        .unwrap();
        assert_eq!(
            c.providers[0].base_url.as_deref(),
            Some("https://aiplatform.googleapis.com")
        );
        assert!(matches!(
            c.secrets.cloud.get("c"),
            Some(CloudCredentials::GoogleMetadata { host }) if host == "127.0.0.1:9"
        ));
        let c = load(
            "kind = \"vertex\"\nregion = \"us-east5\"\nproject = \"my-project\"",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.providers[0].base_url.as_deref(),
            Some("https://us-east5-aiplatform.googleapis.com")
        );
        let e = err(
            "kind = \"vertex\"\nregion = \"us-east5\"\nproject = \"p\"\ncredentials_file_env = \"VX\"",
            &[],
        );
        assert_eq!(e.path, "providers[0].credentials_file_env");
        assert!(e.reason.contains("VX"));
        let e = err(
            "kind = \"vertex\"\nregion = \"us-east5\"\nproject = \"p\"",
            &[("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/adc.json")],
        );
        assert!(e.reason.contains("/nonexistent/adc.json"), "{e}");
    }

    #[test]
    fn google_json_kinds() {
        let user = r#"{"type":"authorized_user","client_id":"cid","client_secret":"cs-hidden","refresh_token":"rt-hidden"}"#;
        let c = parse_google_json(user).unwrap();
        assert!(
            matches!(&c, CloudCredentials::GoogleAuthorizedUser { token_uri, .. } if token_uri == GOOGLE_TOKEN_URI)
        );
        let shown = format!("{c:?}");
        assert!(!shown.contains("cs-hidden") && !shown.contains("rt-hidden"));
        let e = parse_google_json(
            r#"{"type":"service_account","client_email":"a@b","private_key":"not-a-key-hidden"}"#,
        )
        .unwrap_err();
        assert!(
            e.contains("private_key") && !e.contains("not-a-key-hidden"),
            "{e}"
        );
        assert!(parse_google_json(r#"{"type":"external_account"}"#).is_err());
        assert!(parse_google_json("nope").is_err());
    }
}
