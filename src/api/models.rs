//! `GET /v1/models` and `GET /v1/models/{model_id}` (messages-api.md §9): the configured public
//! models the key may use, in config order, paginated like Anthropic's list.

use std::time::{Instant, SystemTime};

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{request_id, CurrentState};
use crate::api::auth::ApiKey;
use crate::error::GatewayError;
use crate::observability::{Endpoint, RequestRecord};
use crate::routing::Model;
use crate::state::AppState;

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 1000;
/// Unset `created_at`: Anthropic documents the epoch for unknown dates.
const EPOCH: &str = "1970-01-01T00:00:00Z";

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    after_id: Option<String>,
    before_id: Option<String>,
}

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    First,
    /// The items after this index.
    After(usize),
    /// The items before this index.
    Before(usize),
}

/// The index range of one page of `len` items and whether more lie beyond it, in the direction
/// of travel (`has_more`).
pub fn page(len: usize, cursor: Cursor, limit: usize) -> (std::ops::Range<usize>, bool) {
    match cursor {
        Cursor::First => (0..limit.min(len), len > limit),
        Cursor::After(i) => {
            let start = (i + 1).min(len);
            let end = (start + limit).min(len);
            (start..end, end < len)
        }
        Cursor::Before(i) => {
            let end = i.min(len);
            let start = end.saturating_sub(limit);
            (start..end, start > 0)
        }
    }
}

fn model_object(m: &Model) -> Value {
    let c = &m.config;
    let created_at = c
        .created_at
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
        .unwrap_or_else(|| EPOCH.to_string());
    let mut o = Map::new();
    o.insert("type".into(), json!("model"));
    o.insert("id".into(), json!(c.id));
    o.insert(
        "display_name".into(),
        json!(c.display_name.as_deref().unwrap_or(&c.id)),
    );
    o.insert("created_at".into(), json!(created_at));
    if let Some(n) = c.max_input_tokens {
        o.insert("max_input_tokens".into(), json!(n));
    }
    if let Some(n) = c.max_tokens {
        o.insert("max_tokens".into(), json!(n));
    }
    Value::Object(o)
}

fn visible(key: &ApiKey, m: &Model) -> bool {
    let names = std::iter::once(m.id()).chain(m.config.aliases.iter().map(String::as_str));
    key.may_use(names)
}

/// Accounts for the request and answers with `result`.
fn respond(
    req: &HttpRequest,
    state: &AppState,
    mut record: RequestRecord,
    started: Instant,
    result: Result<Value, GatewayError>,
) -> HttpResponse {
    record.total = started.elapsed();
    let response = match result {
        Ok(body) => HttpResponse::Ok()
            .content_type("application/json")
            .body(body.to_string()),
        Err(e) => {
            record.status = e.status().as_u16();
            record.error_type = Some(e.error_type().to_string());
            e.to_response(&request_id(req), None)
        }
    };
    record.ttft = Some(started.elapsed());
    state.record(record);
    response
}

pub async fn list(
    req: HttpRequest,
    query: web::Query<ListQuery>,
    CurrentState(state): CurrentState,
) -> HttpResponse {
    let started = Instant::now();
    let mut record = RequestRecord::new(Endpoint::Models, &request_id(&req), SystemTime::now());
    let result = list_body(&req, &query, &state, &mut record);
    respond(&req, &state, record, started, result)
}

fn list_body(
    req: &HttpRequest,
    query: &ListQuery,
    state: &AppState,
    record: &mut RequestRecord,
) -> Result<Value, GatewayError> {
    let key = state.keys.authenticate(req.headers())?;
    record.key_name = Some(key.name.clone());
    let limit = match &query.limit {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| GatewayError::invalid("limit: must be an integer between 1 and 1000"))?,
    };
    let models: Vec<&Model> = state
        .models
        .ordered
        .iter()
        .map(|m| &**m)
        .filter(|m| visible(&key, m))
        .collect();
    let position = |param: &str, id: &str| -> Result<usize, GatewayError> {
        let canonical = state.models.resolve(id).map(|m| m.id()).unwrap_or(id);
        models
            .iter()
            .position(|m| m.id() == canonical)
            .ok_or_else(|| GatewayError::invalid(format!("{param}: unknown model id \"{id}\"")))
    };
    let cursor = match (&query.after_id, &query.before_id) {
        (Some(_), Some(_)) => {
            return Err(GatewayError::invalid(
                "after_id, before_id: send at most one of them",
            ))
        }
        (Some(a), None) => Cursor::After(position("after_id", a)?),
        (None, Some(b)) => Cursor::Before(position("before_id", b)?),
        (None, None) => Cursor::First,
    };
    let (range, has_more) = page(models.len(), cursor, limit);
    let shown = &models[range];
    let data: Vec<Value> = shown.iter().map(|m| model_object(m)).collect();
    Ok(json!({
        "data": data,
        "has_more": has_more,
        "first_id": shown.first().map(|m| m.id()),
        "last_id": shown.last().map(|m| m.id()),
    }))
}

pub async fn retrieve(
    req: HttpRequest,
    path: web::Path<String>,
    CurrentState(state): CurrentState,
) -> HttpResponse {
    let started = Instant::now();
    let mut record = RequestRecord::new(Endpoint::Models, &request_id(&req), SystemTime::now());
    let result = (|| {
        let key = state.keys.authenticate(req.headers())?;
        record.key_name = Some(key.name.clone());
        let id = path.into_inner();
        let model = state
            .models
            .resolve(&id)
            .filter(|m| visible(&key, m))
            .ok_or_else(|| GatewayError::NotFound(format!("model: unknown model \"{id}\"")))?;
        record.model = Some(model.id().to_string());
        Ok(model_object(model))
    })();
    respond(&req, &state, record, started, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages() {
        // (len, cursor, limit) → (range, has_more)
        let cases = [
            (5, Cursor::First, 20, 0..5, false),
            (5, Cursor::First, 2, 0..2, true),
            (5, Cursor::First, 5, 0..5, false),
            (5, Cursor::After(1), 2, 2..4, true),
            (5, Cursor::After(2), 2, 3..5, false),
            (5, Cursor::After(4), 2, 5..5, false),
            (5, Cursor::Before(4), 2, 2..4, true),
            (5, Cursor::Before(2), 2, 0..2, false),
            (5, Cursor::Before(0), 2, 0..0, false),
            (0, Cursor::First, 20, 0..0, false),
        ];
        for (len, cursor, limit, range, more) in cases {
            assert_eq!(
                page(len, cursor, limit),
                (range, more),
                "{len} {cursor:?} {limit}"
            );
        }
    }
}
