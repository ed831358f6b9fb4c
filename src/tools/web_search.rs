//! `web_search` (gateway.md §5.5): one configured engine per call, each spoken in its own public
//! HTTP API — SearXNG (`GET /search?format=json`), Exa (`POST /search`, `x-api-key`), Tavily
//! (`POST /search`, Bearer) and Brave (`GET /res/v1/web/search`, `X-Subscription-Token`).
//! Request building and response parsing are pure; [`WebSearch`] sends them.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::declare::WebSearchOptions;
use super::{cut_chars, ToolErrorCode, ToolKind, ToolOutcome};
use crate::config::{SearchEngineConfig, SearchEngineKind, Secret, WebSearchConfig};

const KIND: ToolKind = ToolKind::WebSearch;
pub const MAX_QUERY_CHARS: usize = 500;
/// Engine responses larger than this are refused.
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// One search result, before it is shown to anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    pub url: String,
    pub title: String,
    pub page_age: Option<String>,
    pub content: String,
}

impl SearchHit {
    /// The client-visible `web_search_result` (messages-api.md §7.2); `encrypted_content` is
    /// base64 of `{"v":1,"url","title","page_age","content"}` (gateway.md §5.3).
    pub fn result_item(&self) -> Value {
        let payload = json!({"v": 1, "url": self.url, "title": self.title, "page_age": self.page_age, "content": self.content});
        let encrypted = base64::engine::general_purpose::STANDARD.encode(payload.to_string());
        json!({"type": "web_search_result", "url": self.url, "title": self.title,
               "encrypted_content": encrypted, "page_age": self.page_age})
    }

    fn model_item(&self) -> Value {
        json!({"title": self.title, "url": self.url, "page_age": self.page_age, "content": self.content})
    }

    /// Decodes a gateway `encrypted_content`; `None` for anything else (e.g. Anthropic's).
    pub fn decode(encrypted: &str) -> Option<Self> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encrypted)
            .ok()?;
        let v: Value = serde_json::from_slice(&bytes).ok()?;
        if v.get("v")?.as_u64()? != 1 {
            return None;
        }
        Some(Self {
            url: v.get("url")?.as_str()?.to_string(),
            title: v.get("title")?.as_str().unwrap_or_default().to_string(),
            page_age: v
                .get("page_age")
                .and_then(Value::as_str)
                .map(str::to_string),
            content: v.get("content")?.as_str()?.to_string(),
        })
    }
}

fn model_content(hits: &[SearchHit]) -> String {
    json!({"results": hits.iter().map(SearchHit::model_item).collect::<Vec<_>>()}).to_string()
}

/// The model's view of a `web_search_tool_result` list found in history: gateway results are
/// rebuilt whole from `encrypted_content`; native ones give title and URL only.
pub fn model_content_from_block(content: &Value) -> Option<String> {
    let items = content.as_array()?;
    let results: Vec<Value> = items
        .iter()
        .filter_map(|item| {
            let hit = item
                .get("encrypted_content")
                .and_then(Value::as_str)
                .and_then(SearchHit::decode);
            match hit {
                Some(h) => Some(h.model_item()),
                None => Some(json!({"title": item.get("title")?, "url": item.get("url")?})),
            }
        })
        .collect();
    Some(json!({"results": results}).to_string())
}

/// An HTTP request to an engine, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineRequest {
    pub method: &'static str,
    pub url: String,
    pub query: Vec<(&'static str, String)>,
    /// Header values may hold the engine key: never log them.
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Value>,
}

/// What the engine supports besides the query.
fn supports_domain_filters(kind: SearchEngineKind) -> bool {
    matches!(kind, SearchEngineKind::Exa | SearchEngineKind::Tavily)
}

/// Builds the request for one engine. `count` is how many results to ask for.
pub fn build_request(
    engine: &SearchEngineConfig,
    key: Option<&Secret>,
    query: &str,
    options: &WebSearchOptions,
    max_content_chars: usize,
) -> EngineRequest {
    let base = |default: &str| {
        engine
            .base_url
            .as_deref()
            .unwrap_or(default)
            .trim_end_matches('/')
            .to_string()
    };
    let key = key.map(|k| k.expose().to_string()).unwrap_or_default();
    // Engines that cannot filter by domain are asked for more, since the filter is re-applied.
    let count = if !options.domains.is_empty() && !supports_domain_filters(engine.kind) {
        20
    } else {
        options.max_results.min(20)
    };
    match engine.kind {
        SearchEngineKind::Searxng => EngineRequest {
            method: "GET",
            url: format!("{}/search", base("http://127.0.0.1:8888")),
            query: vec![("q", query.to_string()), ("format", "json".into())],
            headers: vec![("accept", "application/json".into())],
            body: None,
        },
        SearchEngineKind::Exa => {
            let mut body = json!({"query": query, "numResults": options.max_results,
                                  "contents": {"text": {"maxCharacters": max_content_chars}}});
            if !options.domains.allowed.is_empty() {
                body["includeDomains"] = json!(options.domains.allowed_hosts());
            }
            if !options.domains.blocked.is_empty() {
                body["excludeDomains"] = json!(options.domains.blocked_hosts());
            }
            if let Some(c) = options
                .user_location
                .as_ref()
                .and_then(|l| l.country.as_ref())
            {
                body["userLocation"] = json!(c);
            }
            EngineRequest {
                method: "POST",
                url: format!("{}/search", base("https://api.exa.ai")),
                query: Vec::new(),
                headers: vec![("x-api-key", key), ("accept", "application/json".into())],
                body: Some(body),
            }
        }
        SearchEngineKind::Tavily => {
            let mut body = json!({"query": query, "max_results": count, "search_depth": "basic"});
            if !options.domains.allowed.is_empty() {
                body["include_domains"] = json!(options.domains.allowed_hosts());
            }
            if !options.domains.blocked.is_empty() {
                body["exclude_domains"] = json!(options.domains.blocked_hosts());
            }
            EngineRequest {
                method: "POST",
                url: format!("{}/search", base("https://api.tavily.com")),
                query: Vec::new(),
                headers: vec![
                    ("authorization", format!("Bearer {key}")),
                    ("accept", "application/json".into()),
                ],
                body: Some(body),
            }
        }
        SearchEngineKind::Brave => {
            let mut q = vec![("q", query.to_string()), ("count", count.to_string())];
            if let Some(c) = options
                .user_location
                .as_ref()
                .and_then(|l| l.country.as_ref())
            {
                q.push(("country", c.clone()));
            }
            EngineRequest {
                method: "GET",
                url: format!("{}/res/v1/web/search", base("https://api.search.brave.com")),
                query: q,
                headers: vec![
                    ("x-subscription-token", key),
                    ("accept", "application/json".into()),
                ],
                body: None,
            }
        }
    }
}

/// Reads an engine's JSON answer into hits (unfiltered, uncut).
pub fn parse_response(kind: SearchEngineKind, body: &[u8]) -> Result<Vec<SearchHit>, String> {
    #[derive(Deserialize)]
    struct Searx {
        #[serde(default)]
        results: Vec<SearxHit>,
    }
    #[derive(Deserialize)]
    struct SearxHit {
        url: Option<String>,
        title: Option<String>,
        content: Option<String>,
        #[serde(rename = "publishedDate")]
        published_date: Option<String>,
    }
    #[derive(Deserialize)]
    struct Exa {
        #[serde(default)]
        results: Vec<ExaHit>,
    }
    #[derive(Deserialize)]
    struct ExaHit {
        url: Option<String>,
        title: Option<String>,
        text: Option<String>,
        #[serde(default)]
        highlights: Vec<String>,
        #[serde(rename = "publishedDate")]
        published_date: Option<String>,
    }
    #[derive(Deserialize)]
    struct Tavily {
        #[serde(default)]
        results: Vec<TavilyHit>,
    }
    #[derive(Deserialize)]
    struct TavilyHit {
        url: Option<String>,
        title: Option<String>,
        content: Option<String>,
        published_date: Option<String>,
    }
    #[derive(Deserialize)]
    struct Brave {
        web: Option<BraveWeb>,
    }
    #[derive(Deserialize)]
    struct BraveWeb {
        #[serde(default)]
        results: Vec<BraveHit>,
    }
    #[derive(Deserialize)]
    struct BraveHit {
        url: Option<String>,
        title: Option<String>,
        description: Option<String>,
        #[serde(default)]
        extra_snippets: Vec<String>,
        age: Option<String>,
        page_age: Option<String>,
    }

    let bad = |e: serde_json::Error| format!("unexpected engine response: {e}");
    let hit = |url: Option<String>, title: Option<String>, content: String, age: Option<String>| {
        let url = url.filter(|u| !u.is_empty())?;
        Some(SearchHit {
            title: title
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| url.clone()),
            url,
            page_age: age.filter(|a| !a.is_empty()),
            content,
        })
    };
    let hits = match kind {
        SearchEngineKind::Searxng => serde_json::from_slice::<Searx>(body)
            .map_err(bad)?
            .results
            .into_iter()
            .filter_map(|r| {
                hit(
                    r.url,
                    r.title,
                    r.content.unwrap_or_default(),
                    r.published_date,
                )
            })
            .collect(),
        SearchEngineKind::Exa => serde_json::from_slice::<Exa>(body)
            .map_err(bad)?
            .results
            .into_iter()
            .filter_map(|r| {
                let text = r
                    .text
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| r.highlights.join(" … "));
                hit(r.url, r.title, text, r.published_date)
            })
            .collect(),
        SearchEngineKind::Tavily => serde_json::from_slice::<Tavily>(body)
            .map_err(bad)?
            .results
            .into_iter()
            .filter_map(|r| {
                hit(
                    r.url,
                    r.title,
                    r.content.unwrap_or_default(),
                    r.published_date,
                )
            })
            .collect(),
        SearchEngineKind::Brave => serde_json::from_slice::<Brave>(body)
            .map_err(bad)?
            .web
            .map(|w| w.results)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| {
                // Brave marks matches with <strong> and escapes entities: render as text.
                let mut parts: Vec<String> = r.description.into_iter().collect();
                parts.extend(r.extra_snippets);
                let text = parts
                    .iter()
                    .map(|p| htmd::convert(p).unwrap_or_else(|_| p.clone()))
                    .collect::<Vec<_>>()
                    .join("\n");
                hit(r.url, r.title, text, r.age.or(r.page_age))
            })
            .collect(),
    };
    Ok(hits)
}

/// Re-applies the domain filter, keeps `max_results` and cuts each text (§5.5).
pub fn select_hits(
    hits: Vec<SearchHit>,
    options: &WebSearchOptions,
    max_content_chars: usize,
) -> Vec<SearchHit> {
    hits.into_iter()
        .filter(|h| options.domains.permits_url(&h.url))
        .take(options.max_results)
        .map(|mut h| {
            h.content = cut_chars(&h.content, max_content_chars).to_string();
            h
        })
        .collect()
}

/// The web search executor of one worker.
pub struct WebSearch {
    config: WebSearchConfig,
    keys: HashMap<String, Secret>,
    client: awc::Client,
}

enum EngineFailure {
    RateLimited,
    Failed(String),
}

impl WebSearch {
    pub fn new(config: &WebSearchConfig, keys: &HashMap<String, Secret>) -> Self {
        Self {
            config: config.clone(),
            keys: keys.clone(),
            client: super::api_client::api_client(),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    pub async fn execute(
        &self,
        tool_use_id: &str,
        options: &WebSearchOptions,
        input: &Value,
    ) -> ToolOutcome {
        let fail =
            |code: ToolErrorCode, msg: &str| ToolOutcome::error(KIND, tool_use_id, code, msg);
        let query = match input.get("query").and_then(Value::as_str).map(str::trim) {
            Some(q) if !q.is_empty() => q,
            _ => {
                return fail(
                    ToolErrorCode::InvalidToolInput,
                    "query must be a non-empty string",
                )
            }
        };
        if query.chars().count() > MAX_QUERY_CHARS {
            return fail(
                ToolErrorCode::QueryTooLong,
                ToolErrorCode::QueryTooLong.default_message(),
            );
        }
        let Some((name, engine)) = options
            .engine
            .as_ref()
            .and_then(|n| self.config.engines.get_key_value(n))
        else {
            return fail(ToolErrorCode::Unavailable, "no search engine is configured");
        };
        let request = build_request(
            engine,
            self.keys.get(name),
            query,
            options,
            self.config.max_content_chars,
        );
        let sent = tokio::time::timeout(self.timeout(), self.send(request)).await;
        // From here on the search was executed: failures count (§5.5).
        let body = match sent {
            Ok(Ok(body)) => body,
            Ok(Err(EngineFailure::RateLimited)) => {
                return fail(
                    ToolErrorCode::TooManyRequests,
                    "the search engine is rate limiting requests",
                )
                .counted(true)
            }
            Ok(Err(EngineFailure::Failed(why))) => {
                tracing::warn!(engine = %name, error = %why, "web search failed");
                return fail(ToolErrorCode::Unavailable, "the search engine failed").counted(true);
            }
            Err(_) => {
                tracing::warn!(engine = %name, "web search timed out");
                return fail(ToolErrorCode::Unavailable, "the search engine timed out")
                    .counted(true);
            }
        };
        let hits = match parse_response(engine.kind, &body) {
            Ok(h) => select_hits(h, options, self.config.max_content_chars),
            Err(why) => {
                tracing::warn!(engine = %name, error = %why, "web search answer unreadable");
                return fail(ToolErrorCode::Unavailable, "the search engine failed").counted(true);
            }
        };
        let items: Vec<Value> = hits.iter().map(SearchHit::result_item).collect();
        ToolOutcome::success(KIND, tool_use_id, Value::Array(items), model_content(&hits))
    }

    async fn send(&self, r: EngineRequest) -> Result<bytes::Bytes, EngineFailure> {
        let mut req = match r.method {
            "POST" => self.client.post(&r.url),
            _ => self.client.get(&r.url),
        };
        if !r.query.is_empty() {
            req = req
                .query(&r.query)
                .map_err(|e| EngineFailure::Failed(format!("query encoding: {e}")))?;
        }
        for (k, v) in &r.headers {
            req = req.insert_header((*k, v.as_str()));
        }
        let sent = match &r.body {
            Some(b) => req.send_json(b).await,
            None => req.send().await,
        };
        let mut res = sent.map_err(|e| EngineFailure::Failed(format!("request failed: {e}")))?;
        let status = res.status().as_u16();
        if status == 429 {
            return Err(EngineFailure::RateLimited);
        }
        if !(200..300).contains(&status) {
            return Err(EngineFailure::Failed(format!("status {status}")));
        }
        res.body()
            .limit(MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| EngineFailure::Failed(format!("reading the body: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::declare::UserLocation;
    use crate::tools::domains::{DomainFilter, DomainRule};

    fn engine(kind: SearchEngineKind) -> SearchEngineConfig {
        SearchEngineConfig {
            kind,
            base_url: Some("http://127.0.0.1:9/".into()),
            api_key_env: None,
        }
    }

    fn opts() -> WebSearchOptions {
        WebSearchOptions {
            engine: Some("e".into()),
            max_results: 3,
            domains: DomainFilter::default(),
            user_location: None,
        }
    }

    #[test]
    fn encrypted_content_round_trips() {
        let h = SearchHit {
            url: "https://ex.org".into(),
            title: "Ex".into(),
            page_age: None,
            content: "caf\u{e9}".into(),
        };
        let item = h.result_item();
        assert_eq!(item["type"], "web_search_result");
        assert_eq!(item["page_age"], Value::Null);
        let enc = item["encrypted_content"].as_str().unwrap();
        assert_eq!(SearchHit::decode(enc), Some(h));
        assert_eq!(SearchHit::decode("EqgfCioIARgB"), None);
        assert_eq!(SearchHit::decode("bm90IGpzb24="), None);
    }

    #[test]
    fn requests_follow_each_api() {
        let key = Secret::new("k-1".into());
        let mut o = opts();
        o.domains.allowed = vec![DomainRule::parse("ex.org").unwrap()];
        o.user_location = Some(UserLocation {
            country: Some("FR".into()),
            ..Default::default()
        });

        let s = build_request(&engine(SearchEngineKind::Searxng), None, "q w", &o, 100);
        assert_eq!(
            (s.method, s.url.as_str()),
            ("GET", "http://127.0.0.1:9/search")
        );
        assert_eq!(
            s.query,
            vec![("q", "q w".to_string()), ("format", "json".to_string())]
        );

        let e = build_request(&engine(SearchEngineKind::Exa), Some(&key), "q", &o, 100);
        assert_eq!(
            (e.method, e.url.as_str()),
            ("POST", "http://127.0.0.1:9/search")
        );
        assert!(e.headers.contains(&("x-api-key", "k-1".into())));
        assert_eq!(
            e.body.unwrap(),
            json!({"query":"q","numResults":3,"contents":{"text":{"maxCharacters":100}},
                   "includeDomains":["ex.org"],"userLocation":"FR"})
        );

        let t = build_request(&engine(SearchEngineKind::Tavily), Some(&key), "q", &o, 100);
        assert!(t.headers.contains(&("authorization", "Bearer k-1".into())));
        assert_eq!(
            t.body.unwrap(),
            json!({"query":"q","max_results":3,"search_depth":"basic","include_domains":["ex.org"]})
        );

        let b = build_request(&engine(SearchEngineKind::Brave), Some(&key), "q", &o, 100);
        assert_eq!(b.url, "http://127.0.0.1:9/res/v1/web/search");
        assert!(b.headers.contains(&("x-subscription-token", "k-1".into())));
        // Brave cannot filter by domain: it is asked for more, and the filter is re-applied.
        assert_eq!(
            b.query,
            vec![
                ("q", "q".into()),
                ("count", "20".into()),
                ("country", "FR".into())
            ]
        );
    }

    #[test]
    fn responses_are_read() {
        let searx = br#"{"query":"q","results":[{"url":"https://a.org","title":"A","content":"aa","publishedDate":"2026-07-01T00:00:00"},{"url":"","title":"skip"}]}"#;
        let h = parse_response(SearchEngineKind::Searxng, searx).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].page_age.as_deref(), Some("2026-07-01T00:00:00"));

        let exa = br#"{"requestId":"r","results":[{"id":"x","url":"https://b.org","title":null,"text":"bb","publishedDate":null}]}"#;
        let h = parse_response(SearchEngineKind::Exa, exa).unwrap();
        assert_eq!(h[0].title, "https://b.org");
        assert_eq!(h[0].content, "bb");

        let tavily = br#"{"query":"q","results":[{"title":"C","url":"https://c.org","content":"cc","score":0.9}],"response_time":0.5}"#;
        assert_eq!(
            parse_response(SearchEngineKind::Tavily, tavily).unwrap()[0].content,
            "cc"
        );

        let brave = br#"{"type":"search","web":{"type":"search","results":[{"title":"D","url":"https://d.org","description":"the <strong>d</strong> &amp; e","age":"July 8, 2026","extra_snippets":["more"]}]}}"#;
        let h = parse_response(SearchEngineKind::Brave, brave).unwrap();
        assert_eq!(h[0].content, "the **d** & e\nmore");
        assert_eq!(h[0].page_age.as_deref(), Some("July 8, 2026"));
        assert_eq!(
            parse_response(SearchEngineKind::Brave, br#"{"type":"search"}"#).unwrap(),
            vec![]
        );
        assert!(parse_response(SearchEngineKind::Exa, b"<html>").is_err());
    }

    #[test]
    fn selection_filters_limits_and_cuts() {
        let hit = |u: &str| SearchHit {
            url: u.into(),
            title: "t".into(),
            page_age: None,
            content: "0123456789".into(),
        };
        let mut o = opts();
        o.max_results = 2;
        o.domains.blocked = vec![DomainRule::parse("spam.org").unwrap()];
        let got = select_hits(
            vec![
                hit("https://www.spam.org/x"),
                hit("https://a.org"),
                hit("https://b.org"),
                hit("https://c.org"),
            ],
            &o,
            4,
        );
        assert_eq!(
            got.iter().map(|h| h.url.as_str()).collect::<Vec<_>>(),
            ["https://a.org", "https://b.org"]
        );
        assert_eq!(got[0].content, "0123");
    }

    #[test]
    fn history_view_matches_execution() {
        let hits = vec![SearchHit {
            url: "https://a.org".into(),
            title: "A".into(),
            page_age: Some("x".into()),
            content: "aa".into(),
        }];
        let items = Value::Array(hits.iter().map(SearchHit::result_item).collect());
        assert_eq!(
            model_content_from_block(&items).unwrap(),
            model_content(&hits)
        );
    }
}
