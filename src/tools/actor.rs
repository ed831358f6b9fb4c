//! The [`ToolActor`]s: one per tool kind per worker, messaged by sessions. HTTP stays on the
//! worker that owns the actor (awc is `!Send`); each call runs as a local future with its own
//! timeout, so calls of one round run concurrently.

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde_json::Value;
use tokio::sync::watch;

use super::advisor::{self, AdvisorCaller, ADVISOR_TIMEOUT};
use super::declare::{GatewayTool, ToolOptions};
use super::image_generation::{ImageGeneration, IMAGE_TIMEOUT};
use super::ssrf::FetchNet;
use super::web_fetch::WebFetch;
use super::web_search::WebSearch;
use super::{datetime, ToolErrorCode, ToolKind, ToolOutcome};
use crate::config::Config;
use crate::providers::Provider;

/// One call of a gateway tool.
#[derive(Debug, Clone)]
pub struct ToolCall {
    /// The client-visible id (`srvtoolu_gw_…`, from `ids::gateway_tool_use_id`).
    pub id: String,
    pub tool: Arc<GatewayTool>,
    /// The arguments the model gave.
    pub input: Value,
}

/// What a call may need from its session.
#[derive(Clone, Default)]
pub struct CallContext {
    /// The conversation text (`replay::prior_context_text`), for `web_fetch` with
    /// `require_url_in_context`.
    pub prior_context: Option<Arc<str>>,
    /// The conversation so far (Anthropic messages), for an advisor with `forward_transcript`.
    pub transcript: Option<Arc<[Value]>>,
    /// Makes the advisor's nested call.
    pub advisor: Option<AdvisorCaller>,
    /// Cancels the call when every sender is dropped (the session stopped). `None`: runs to its
    /// timeout regardless.
    pub cancel: Option<watch::Receiver<()>>,
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field(
                "prior_context",
                &self.prior_context.as_ref().map(|c| c.len()),
            )
            .field("transcript", &self.transcript.as_ref().map(|t| t.len()))
            .field("advisor", &self.advisor.is_some())
            .finish()
    }
}

/// Runs one call; the answer is always an outcome, failures included.
#[derive(Message)]
#[rtype(result = "ToolOutcome")]
pub struct Execute {
    pub call: ToolCall,
    pub context: CallContext,
}

enum Executor {
    Datetime,
    WebSearch(WebSearch),
    WebFetch(WebFetch),
    Advisor { timeout: Duration },
    ImageGeneration(ImageGeneration),
}

/// A tool actor: one kind's executor, shared by the calls it runs.
pub struct ToolActor {
    kind: ToolKind,
    executor: Rc<Executor>,
}

impl ToolActor {
    pub fn datetime() -> Self {
        Self::new(ToolKind::Datetime, Executor::Datetime)
    }

    pub fn web_search(search: WebSearch) -> Self {
        Self::new(ToolKind::WebSearch, Executor::WebSearch(search))
    }

    pub fn web_fetch(fetch: WebFetch) -> Self {
        Self::new(ToolKind::WebFetch, Executor::WebFetch(fetch))
    }

    pub fn advisor(timeout: Duration) -> Self {
        Self::new(ToolKind::Advisor, Executor::Advisor { timeout })
    }

    pub fn image_generation(images: ImageGeneration) -> Self {
        Self::new(ToolKind::ImageGeneration, Executor::ImageGeneration(images))
    }

    fn new(kind: ToolKind, executor: Executor) -> Self {
        Self {
            kind,
            executor: Rc::new(executor),
        }
    }
}

impl Actor for ToolActor {
    type Context = Context<Self>;
}

impl Handler<Execute> for ToolActor {
    type Result = ResponseFuture<ToolOutcome>;

    fn handle(&mut self, msg: Execute, _ctx: &mut Context<Self>) -> Self::Result {
        let executor = self.executor.clone();
        let kind = self.kind;
        Box::pin(async move {
            let Execute { call, context } = msg;
            if call.tool.kind != kind {
                return ToolOutcome::error(
                    call.tool.kind,
                    &call.id,
                    ToolErrorCode::Unavailable,
                    "wrong tool actor",
                );
            }
            let mut cancel = context.cancel.clone();
            let work = run(&executor, &call, &context);
            match cancel.as_mut() {
                None => work.await,
                Some(rx) => {
                    tokio::select! {
                        out = work => out,
                        _ = cancelled(rx) => {
                            ToolOutcome::error(kind, &call.id, ToolErrorCode::Unavailable, "cancelled")
                        }
                    }
                }
            }
        })
    }
}

async fn cancelled(rx: &mut watch::Receiver<()>) {
    while rx.changed().await.is_ok() {}
}

async fn run(executor: &Executor, call: &ToolCall, ctx: &CallContext) -> ToolOutcome {
    let id = call.id.as_str();
    match (executor, &call.tool.options) {
        (Executor::Datetime, ToolOptions::Datetime(o)) => {
            datetime::execute(id, o, &call.input, chrono::Utc::now())
        }
        (Executor::WebSearch(s), ToolOptions::WebSearch(o)) => s.execute(id, o, &call.input).await,
        (Executor::WebFetch(f), ToolOptions::WebFetch(o)) => {
            f.execute(id, o, &call.input, ctx.prior_context.as_deref())
                .await
        }
        (Executor::Advisor { timeout }, ToolOptions::Advisor(o)) => {
            advisor::execute(
                id,
                o,
                &call.input,
                ctx.transcript.as_deref(),
                ctx.advisor.as_ref(),
                *timeout,
            )
            .await
        }
        (Executor::ImageGeneration(g), ToolOptions::ImageGeneration(o)) => {
            g.execute(id, o, &call.input).await
        }
        _ => ToolOutcome::error(
            call.tool.kind,
            id,
            ToolErrorCode::Unavailable,
            "mismatched tool options",
        ),
    }
}

/// One worker's tool actors.
pub struct ToolActors {
    actors: Vec<(ToolKind, Addr<ToolActor>)>,
}

impl ToolActors {
    /// Must run on the worker's thread (actors start on the current arbiter).
    pub fn start(config: &Config, providers: &[Arc<Provider>]) -> Self {
        let tools = &config.tools;
        let image_provider = tools
            .image_generation
            .provider
            .as_ref()
            .and_then(|name| providers.iter().find(|p| p.name() == name).cloned());
        Self::from_actors(vec![
            ToolActor::datetime(),
            ToolActor::web_search(WebSearch::new(
                &tools.web_search,
                &config.secrets.engine_keys,
            )),
            ToolActor::web_fetch(WebFetch::new(
                &tools.web_fetch,
                FetchNet::system(tools.web_fetch.allow_private_networks),
            )),
            ToolActor::advisor(ADVISOR_TIMEOUT),
            ToolActor::image_generation(ImageGeneration::new(image_provider, IMAGE_TIMEOUT)),
        ])
    }

    /// Starts the given actors (tests use this to inject resolvers, policies and timeouts).
    pub fn from_actors(actors: Vec<ToolActor>) -> Self {
        Self {
            actors: actors.into_iter().map(|a| (a.kind, a.start())).collect(),
        }
    }

    pub fn addr(&self, kind: ToolKind) -> Option<&Addr<ToolActor>> {
        self.actors.iter().find(|(k, _)| *k == kind).map(|(_, a)| a)
    }

    /// Runs one call on its kind's actor; a missing or stopped actor gives `unavailable`.
    pub fn execute(&self, msg: Execute) -> impl Future<Output = ToolOutcome> + 'static {
        let kind = msg.call.tool.kind;
        let id = msg.call.id.clone();
        let sent = self.addr(kind).map(|a| a.send(msg));
        async move {
            match sent {
                Some(f) => match f.await {
                    Ok(outcome) => outcome,
                    Err(_) => ToolOutcome::error(
                        kind,
                        &id,
                        ToolErrorCode::Unavailable,
                        "the tool is not running",
                    ),
                },
                None => ToolOutcome::error(
                    kind,
                    &id,
                    ToolErrorCode::Unavailable,
                    "the tool is not running",
                ),
            }
        }
    }
}
