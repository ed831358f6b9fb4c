// The official Anthropic TypeScript SDK against the gateway, unchanged but for its base URL.
//
// Run by `tests/it/sdk.rs` once per target, which sets (environment only):
//   GATEWAY_URL, GATEWAY_KEY, GATEWAY_LIMITED_KEY (requests_per_minute = 1, unused elsewhere),
//   MODEL_TEXT (a plain text reply), MODEL_TOOL (answers with a `get_weather` tool call),
//   MODEL_500 (the upstream fails with 500), MODEL_MIDSTREAM (the stream fails after its first
//   text delta), EXPECT_TOOL_INPUT (JSON the tool call's input must equal),
//   MODEL_IDS (comma-separated: every model GATEWAY_KEY sees, in order), MODEL_ALIAS and
//   MODEL_ALIAS_ID (an alias and its model), EXPECT_COUNT_TOKENS (count_tokens of HELLO on
//   MODEL_TEXT), EXPECT_TOKEN_ESTIMATE ("true" when that count is the gateway's local estimate).
// The same cases live in `tests/sdk/python/test_sdk.py`; keep the two files in step.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import Anthropic, {
  APIError,
  AuthenticationError,
  BadRequestError,
  ContentTooLargeError,
  InternalServerError,
  NotFoundError,
  RateLimitError,
} from '@anthropic-ai/sdk';

import { assertShapes, shapeFetch } from '../shape.mjs';

function env(name) {
  const value = process.env[name];
  assert.ok(value, `environment variable ${name} is not set`);
  return value;
}

const URL = env('GATEWAY_URL');
const KEY = env('GATEWAY_KEY');
const LIMITED_KEY = env('GATEWAY_LIMITED_KEY');
const MODEL_TEXT = env('MODEL_TEXT');
const MODEL_TOOL = env('MODEL_TOOL');
const MODEL_500 = env('MODEL_500');
const MODEL_MIDSTREAM = env('MODEL_MIDSTREAM');
const EXPECT_TOOL_INPUT = JSON.parse(env('EXPECT_TOOL_INPUT'));
const MODEL_LOOP = env('MODEL_LOOP');
const MODEL_LOOP_ALL = env('MODEL_LOOP_ALL');
const FETCH_URL = env('FETCH_URL');
const MISSING_URL = env('MISSING_URL');
const ALL_TOOLS = [
  { type: 'gateway:datetime' },
  { type: 'gateway:web_search' },
  { type: 'gateway:web_fetch' },
  { type: 'ai-stats:advisor' },
  { type: 'gateway:image_generation' },
];
const ALL_RESULTS = [
  'datetime_tool_result',
  'web_search_tool_result',
  'web_fetch_tool_result',
  'advisor_tool_result',
  'image_generation_tool_result',
];
const DATETIME_TOOL = { type: 'gateway:datetime', timezone: 'Europe/Paris' };
const WHAT_TIME = [{ role: 'user', content: 'What time is it in Paris?' }];
const MODEL_IDS = env('MODEL_IDS').split(',');
const MODEL_ALIAS = env('MODEL_ALIAS');
const MODEL_ALIAS_ID = env('MODEL_ALIAS_ID');
const EXPECT_COUNT_TOKENS = Number(env('EXPECT_COUNT_TOKENS'));
const EXPECT_TOKEN_ESTIMATE = env('EXPECT_TOKEN_ESTIMATE') === 'true';

// `req_` + a 26-char ULID (Crockford base32), messages-api.md §2.3.
const REQUEST_ID = /^req_[0-9A-HJKMNP-TV-Z]{26}$/;

const HELLO = [{ role: 'user', content: 'Hello there' }];
const MESSAGE_FIELDS = ['id', 'type', 'role', 'model', 'content', 'stop_reason', 'stop_sequence', 'usage'];
const USAGE_FIELDS = [
  'input_tokens',
  'output_tokens',
  'cache_creation_input_tokens',
  'cache_read_input_tokens',
  'cache_creation',
  'server_tool_use',
  'service_tier',
];
const WEATHER_QUESTION = [{ role: 'user', content: 'What is the weather in Lyon?' }];

// The mock provider fills required properties (strings "mock", enums their first value, arrays
// []), so this schema decides the mock target's EXPECT_TOOL_INPUT.
const WEATHER_TOOL = {
  name: 'get_weather',
  description: 'Current weather for a city',
  input_schema: {
    type: 'object',
    properties: {
      city: { type: 'string' },
      unit: { type: 'string', enum: ['célsius', 'fahrenheit'] },
      days: { type: 'array', items: { type: 'integer' } },
    },
    required: ['city', 'unit', 'days'],
  },
};

/** A client that records the headers of every request it sends in `sent`. */
function client(options = {}) {
  const sent = [];
  const c = new Anthropic({
    baseURL: URL,
    apiKey: KEY,
    maxRetries: 0,
    timeout: 30_000,
    fetch: (url, init) => {
      sent.push(new Headers(init?.headers));
      return shapeFetch(url, init);
    },
    ...options,
  });
  c.sent = sent;
  return c;
}

function assertRequestId(value) {
  assert.match(String(value), REQUEST_ID);
}

function assertUsage(usage) {
  for (const field of ['input_tokens', 'output_tokens']) {
    assert.ok(Number.isInteger(usage[field]) && usage[field] >= 0, `usage.${field} = ${usage[field]}`);
  }
  assert.ok(usage.output_tokens > 0, JSON.stringify(usage));
}

function assertErrorRequestId(err) {
  assertRequestId(err.requestID);
  assert.equal(err.error?.request_id, err.requestID, JSON.stringify(err.error));
}

function toolUseBlock(message) {
  const blocks = message.content.filter((b) => b.type === 'tool_use');
  assert.equal(blocks.length, 1, JSON.stringify(message.content));
  return blocks[0];
}

/** Awaits `promise`, asserts it rejects with an instance of `cls`, and returns the error. */
async function rejection(promise, cls) {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof cls, `expected ${cls.name}, got ${err?.constructor?.name}: ${err}`);
    return err;
  }
  assert.fail(`expected ${cls.name}, but the call succeeded`);
}

test('messages.create: text', async () => {
  const { data: message, response } = await client()
    .messages.create({ model: MODEL_TEXT, max_tokens: 64, messages: HELLO })
    .withResponse();
  assert.ok(message.id.startsWith('msg_'), message.id);
  assert.equal(message.type, 'message');
  assert.equal(message.role, 'assistant');
  assert.equal(message.content[0]?.type, 'text', JSON.stringify(message.content));
  assert.ok(message.content[0].text.length > 0);
  assert.equal(message.stop_reason, 'end_turn');
  assert.equal(message.stop_sequence, null);
  assertUsage(message.usage);
  // messages-api.md §4: every field is on the wire (null where unknown).
  for (const field of MESSAGE_FIELDS) assert.ok(field in message, `message.${field} is missing`);
  for (const field of USAGE_FIELDS) assert.ok(field in message.usage, `usage.${field} is missing`);
  assertRequestId(message._request_id);
  assert.equal(message._request_id, response.headers.get('request-id'));
});

test('messages.stream: text', async () => {
  const stream = client().messages.stream({ model: MODEL_TEXT, max_tokens: 64, messages: HELLO });
  const pieces = [];
  stream.on('text', (delta) => pieces.push(delta));
  const final = await stream.finalMessage();
  assert.ok(pieces.length >= 1 && pieces.every((p) => p.length > 0), JSON.stringify(pieces));
  assertRequestId(stream.request_id);
  assert.ok(final.id.startsWith('msg_'), final.id);
  assert.equal(final.role, 'assistant');
  assert.deepEqual(
    final.content.map((b) => b.type),
    ['text'],
  );
  assert.equal(final.content[0].text, pieces.join(''));
  assert.equal(await stream.finalText(), pieces.join(''));
  assert.equal(final.stop_reason, 'end_turn');
  assertUsage(final.usage);
  // Both targets are deterministic: the stream carries the same text as the JSON reply.
  const message = await client().messages.create({ model: MODEL_TEXT, max_tokens: 64, messages: HELLO });
  assert.equal(final.content[0].text, message.content[0].text);
});

test('messages.stream: tool_use', async () => {
  const stream = client().messages.stream({
    model: MODEL_TOOL,
    max_tokens: 256,
    messages: WEATHER_QUESTION,
    tools: [WEATHER_TOOL],
  });
  const fragments = [];
  stream.on('inputJson', (partialJson, snapshot) => {
    // The snapshot is the accumulated fragments parsed as partial JSON.
    assert.equal(typeof snapshot, 'object', `snapshot ${snapshot}`);
    assert.ok(snapshot !== null);
    fragments.push(partialJson);
  });
  const final = await stream.finalMessage();
  assert.ok(fragments.length >= 2, `the input should arrive in several fragments: ${fragments}`);
  assert.deepEqual(JSON.parse(fragments.join('')), EXPECT_TOOL_INPUT);
  const block = toolUseBlock(final);
  assert.equal(block.name, 'get_weather');
  assert.ok(block.id.startsWith('toolu_'), block.id);
  assert.deepEqual(block.input, EXPECT_TOOL_INPUT);
  assert.equal(final.stop_reason, 'tool_use');
  assertUsage(final.usage);
});

test('messages.create: tool_use', async () => {
  const message = await client().messages.create({
    model: MODEL_TOOL,
    max_tokens: 256,
    messages: WEATHER_QUESTION,
    tools: [WEATHER_TOOL],
  });
  const block = toolUseBlock(message);
  assert.equal(block.name, 'get_weather');
  assert.deepEqual(block.input, EXPECT_TOOL_INPUT);
  assert.equal(message.stop_reason, 'tool_use');
  assertUsage(message.usage);
});

test('auth: apiKey', async () => {
  // Whatever header this SDK major sends for `apiKey` (1.x: Authorization: Bearer).
  const c = client({ apiKey: KEY });
  const message = await c.messages.create({ model: MODEL_TEXT, max_tokens: 16, messages: HELLO });
  assert.ok(message.content.length > 0);
  const [headers] = c.sent;
  assert.ok(
    headers.get('x-api-key') === KEY || headers.get('authorization') === `Bearer ${KEY}`,
    JSON.stringify([...headers]),
  );
});

test('auth: x-api-key header alone', async () => {
  const c = client({ apiKey: 'sk-not-sent', defaultHeaders: { 'X-Api-Key': KEY, Authorization: null } });
  const message = await c.messages.create({ model: MODEL_TEXT, max_tokens: 16, messages: HELLO });
  assert.ok(message.content.length > 0);
  const [headers] = c.sent;
  assert.equal(headers.get('x-api-key'), KEY);
  assert.equal(headers.get('authorization'), null);
});

test('auth: authToken (Authorization: Bearer)', async () => {
  const c = client({ apiKey: null, authToken: KEY });
  const message = await c.messages.create({ model: MODEL_TEXT, max_tokens: 16, messages: HELLO });
  assert.ok(message.content.length > 0);
  const [headers] = c.sent;
  assert.equal(headers.get('x-api-key'), null);
  assert.equal(headers.get('authorization'), `Bearer ${KEY}`);
});

test('errors: 400 → BadRequestError', async () => {
  const err = await rejection(
    client().messages.create({ model: MODEL_TEXT, max_tokens: 0, messages: HELLO }),
    BadRequestError,
  );
  assert.equal(err.status, 400);
  assert.equal(err.type, 'invalid_request_error');
  assertErrorRequestId(err);
});

test('errors: 401 → AuthenticationError', async () => {
  const err = await rejection(
    client({ apiKey: 'sk-wrong-key' }).messages.create({ model: MODEL_TEXT, max_tokens: 16, messages: HELLO }),
    AuthenticationError,
  );
  assert.equal(err.status, 401);
  assert.equal(err.type, 'authentication_error');
  assertErrorRequestId(err);
});

test('errors: 404 → NotFoundError', async () => {
  const err = await rejection(
    client().messages.create({ model: 'no-such-model', max_tokens: 16, messages: HELLO }),
    NotFoundError,
  );
  assert.equal(err.status, 404);
  assert.equal(err.type, 'not_found_error');
  assertErrorRequestId(err);
});

test('errors: 413 → ContentTooLargeError', async () => {
  // The gateway under test is configured with max_body_bytes = 65536.
  const err = await rejection(
    client().messages.create({
      model: MODEL_TEXT,
      max_tokens: 16,
      messages: [{ role: 'user', content: 'x'.repeat(100_000) }],
    }),
    ContentTooLargeError,
  );
  assert.equal(err.status, 413);
  assert.equal(err.type, 'request_too_large');
  assertErrorRequestId(err);
});

test('errors: 429 → RateLimitError', async () => {
  const c = client({ apiKey: LIMITED_KEY });
  const first = await c.messages.create({ model: MODEL_TEXT, max_tokens: 16, messages: HELLO });
  assert.ok(first.content.length > 0);
  const err = await rejection(
    c.messages.create({ model: MODEL_TEXT, max_tokens: 16, messages: HELLO }),
    RateLimitError,
  );
  assert.equal(err.status, 429);
  assert.equal(err.type, 'rate_limit_error');
  assert.ok(Number(err.headers.get('retry-after')) >= 1, err.headers.get('retry-after'));
  assertErrorRequestId(err);
});

test('errors: upstream 500 → InternalServerError 502', async () => {
  const err = await rejection(
    client().messages.create({ model: MODEL_500, max_tokens: 16, messages: HELLO }),
    InternalServerError,
  );
  assert.equal(err.status, 502);
  assert.equal(err.type, 'api_error');
  assertErrorRequestId(err);
  // A stream that fails before its first byte is a plain HTTP error too.
  const stream = client().messages.stream({ model: MODEL_500, max_tokens: 16, messages: HELLO });
  const streamErr = await rejection(stream.finalMessage(), InternalServerError);
  assert.equal(streamErr.status, 502);
  assertErrorRequestId(streamErr);
});

test('mid-stream failure throws while iterating', async () => {
  const stream = client().messages.stream({ model: MODEL_MIDSTREAM, max_tokens: 64, messages: HELLO });
  const texts = [];
  const iterate = async () => {
    for await (const event of stream) {
      if (event.type === 'content_block_delta' && event.delta.type === 'text_delta') {
        texts.push(event.delta.text);
      }
    }
  };
  const err = await rejection(iterate(), APIError);
  assert.ok(texts.length > 0, 'the failure comes after the first text delta');
  assert.equal(err.status, undefined, 'the 200 head was already sent');
  assert.equal(err.type, 'api_error');
  assertRequestId(err.requestID);
  assert.equal(err.error?.request_id, err.requestID, JSON.stringify(err.error));
  await rejection(stream.finalMessage(), APIError);
});

/** A gateway datetime call, its result, then the answer; the counter says one call. */
function assertToolLoop(message) {
  const types = message.content.map((b) => b.type);
  assert.deepEqual(types.slice(-3), ['server_tool_use', 'datetime_tool_result', 'text'], JSON.stringify(types));
  const [call, result] = message.content.slice(-3);
  assert.ok(call.id.startsWith('srvtoolu_gw_'), call.id);
  assert.equal(call.name, 'datetime');
  assert.equal(result.tool_use_id, call.id);
  assert.equal(result.content.times[0].timezone, 'Europe/Paris', JSON.stringify(result));
  assert.equal(message.stop_reason, 'end_turn');
  assert.deepEqual(message.usage.server_tool_use, {
    web_search_requests: 0,
    web_fetch_requests: 0,
    datetime_requests: 1,
    advisor_requests: 0,
    image_generation_requests: 0,
  });
  assertUsage(message.usage);
}

test('gateway tool loop: create', async () => {
  const message = await client().messages.create({
    model: MODEL_LOOP,
    max_tokens: 256,
    messages: WHAT_TIME,
    tools: [DATETIME_TOOL],
  });
  assertToolLoop(message);
});

test('gateway tool loop: stream, then the conversation continues', async () => {
  const stream = client().messages.stream({
    model: MODEL_LOOP,
    max_tokens: 256,
    messages: WHAT_TIME,
    tools: [DATETIME_TOOL],
  });
  const final = await stream.finalMessage();
  assertToolLoop(final);
  const reply = await client().messages.create({
    model: MODEL_LOOP,
    max_tokens: 256,
    messages: [...WHAT_TIME, { role: 'assistant', content: final.content }, { role: 'user', content: 'Thanks!' }],
    tools: [DATETIME_TOOL],
  });
  assert.ok(reply.content.length > 0);
});

function assertAllTools(message) {
  const types = message.content.map((b) => b.type);
  const expected = ['text', ...ALL_RESULTS.flatMap((r) => ['server_tool_use', r]), 'text'];
  assert.deepEqual(types, expected);
  for (let i = 1; i < message.content.length - 1; i += 2) {
    assert.equal(message.content[i + 1].tool_use_id, message.content[i].id);
    assert.ok(!JSON.stringify(message.content[i + 1].content).includes('error_code'), JSON.stringify(message.content[i + 1]));
  }
  assert.equal(message.content[4].content[0].url, 'https://example.org/lyon');
  assert.equal(message.content[6].content.content.title, 'Lyon page');
  assert.equal(message.content[10].content.source.media_type, 'image/png');
  assert.deepEqual(new Set(Object.values(message.usage.server_tool_use)), new Set([1]));
  assert.equal(message.stop_reason, 'end_turn');
}

test('every gateway tool: create and stream', async () => {
  const params = {
    model: MODEL_LOOP_ALL,
    max_tokens: 256,
    system: `Fetch ${FETCH_URL} when useful.`,
    messages: WHAT_TIME,
    tools: ALL_TOOLS,
  };
  assertAllTools(await client().messages.create(params));
  assertAllTools(await client().messages.stream(params).finalMessage());
});

test('a tool error result block', async () => {
  const final = await client()
    .messages.stream({
      model: MODEL_LOOP_ALL,
      max_tokens: 256,
      system: `Fetch ${MISSING_URL}`,
      messages: WHAT_TIME,
      tools: [{ type: 'gateway:web_fetch' }],
    })
    .finalMessage();
  const result = final.content.find((b) => b.type === 'web_fetch_tool_result');
  assert.deepEqual(result.content, { type: 'web_fetch_tool_result_error', error_code: 'url_not_accessible' });
  assert.equal(final.usage.server_tool_use.web_fetch_requests, 1);
});

test('models: list paginates with limit and after_id', async () => {
  const page = await client().models.list({ limit: 2 });
  assert.deepEqual(
    page.data.map((m) => m.id),
    MODEL_IDS.slice(0, 2),
  );
  assert.equal(page.has_more, MODEL_IDS.length > 2);
  assert.equal(page.data[0].type, 'model');
  assert.ok(page.data[0].display_name);
  assert.ok(!Number.isNaN(Date.parse(page.data[0].created_at)), page.data[0].created_at);
  // Auto-pagination follows `after_id` = `last_id` to the end.
  const ids = [];
  for await (const model of client().models.list({ limit: 2 })) {
    ids.push(model.id);
  }
  assert.deepEqual(ids, MODEL_IDS);
});

test('models: retrieve resolves aliases; unknown → NotFoundError', async () => {
  const model = await client().models.retrieve(MODEL_ALIAS);
  assert.equal(model.id, MODEL_ALIAS_ID);
  assert.equal(model.type, 'model');
  const err = await rejection(client().models.retrieve('no-such-model'), NotFoundError);
  assert.equal(err.type, 'not_found_error');
  assertErrorRequestId(err);
});

test('count_tokens', async () => {
  const { data, response } = await client()
    .messages.countTokens({ model: MODEL_TEXT, messages: HELLO })
    .withResponse();
  assert.equal(data.input_tokens, EXPECT_COUNT_TOKENS);
  assert.equal(response.headers.get('x-gateway-token-estimate') === 'true', EXPECT_TOKEN_ESTIMATE);
  assertRequestId(response.headers.get('request-id'));
  await rejection(
    client().messages.countTokens({ model: 'no-such-model', messages: HELLO }),
    NotFoundError,
  );
});

test('shapes: no null where the API omits the field, in every response above', async () => {
  await assertShapes();
});
