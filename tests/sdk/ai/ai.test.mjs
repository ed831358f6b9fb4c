// The Vercel AI SDK (`ai` + `@ai-sdk/anthropic`) against the gateway, unchanged but for its base
// URL: the provider validates every response and stream event with strict schemas, so a shape
// the real API never sends (`"citations": null`) fails the whole call (issue 16).
//
// Run by `tests/it/sdk.rs` once per target (`cargo nextest run --test it sdk::ai_sdk_suite`),
// which sets (environment only):
//   GATEWAY_URL, GATEWAY_KEY, MODEL_TEXT (a plain text reply), MODEL_CLIENT_LOOP (calls the first
//   client tool offered, then answers with text naming its result), MODEL_SEARCH (runs the
//   `web_search` tool once, then answers with text).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { createAnthropic } from '@ai-sdk/anthropic';
import { APICallError, generateText, jsonSchema, stepCountIs, streamText, tool } from 'ai';

import { assertShapes, shapeFetch } from '../shape.mjs';

function env(name) {
  const value = process.env[name];
  assert.ok(value, `environment variable ${name} is not set`);
  return value;
}

const URL = env('GATEWAY_URL');
const MODEL_TEXT = env('MODEL_TEXT');
const MODEL_CLIENT_LOOP = env('MODEL_CLIENT_LOOP');
const MODEL_SEARCH = env('MODEL_SEARCH');

const anthropic = createAnthropic({ baseURL: `${URL}/v1`, apiKey: env('GATEWAY_KEY'), fetch: shapeFetch });
const CALL = { maxRetries: 0, maxOutputTokens: 256 };

// The weather tool the client runs itself; no required properties, so every scripted model's
// input (`{}` or filled) is valid.
const weather = tool({
  description: 'Current weather for a city',
  inputSchema: jsonSchema({
    type: 'object',
    properties: { city: { type: 'string' } },
    additionalProperties: false,
  }),
  execute: async ({ city }) => `sunny in ${city ?? 'Lyon'}`,
});

function assertUsage(usage) {
  for (const field of ['inputTokens', 'outputTokens', 'totalTokens']) {
    assert.ok(Number.isInteger(usage[field]) && usage[field] >= 0, `usage.${field}: ${JSON.stringify(usage)}`);
  }
  assert.ok(usage.outputTokens > 0, JSON.stringify(usage));
  assert.equal(usage.totalTokens, usage.inputTokens + usage.outputTokens, JSON.stringify(usage));
}

test('generateText: text, usage and finishReason', async () => {
  const result = await generateText({ ...CALL, model: anthropic(MODEL_TEXT), prompt: 'Hello there' });
  assert.ok(result.text.length > 0, JSON.stringify(result.content));
  assert.equal(result.finishReason, 'stop');
  assert.equal(result.steps.length, 1);
  assertUsage(result.usage);
  assert.ok(result.response.id.startsWith('msg_'), result.response.id);
});

test('streamText: text, usage and finishReason', async () => {
  const result = streamText({ ...CALL, model: anthropic(MODEL_TEXT), prompt: 'Hello there' });
  const pieces = [];
  for await (const delta of result.textStream) pieces.push(delta);
  assert.ok(pieces.length >= 1 && pieces.every((p) => p.length > 0), JSON.stringify(pieces));
  assert.equal(await result.text, pieces.join(''));
  assert.equal(await result.finishReason, 'stop');
  assertUsage(await result.usage);
});

/** The two steps of a client tool loop: the call, then the answer that read its result. */
function assertClientLoop(steps, text, totalUsage) {
  assert.equal(steps.length, 2, JSON.stringify(steps.map((s) => s.content)));
  const [call, answer] = steps;
  assert.equal(call.finishReason, 'tool-calls');
  assert.equal(call.toolCalls.length, 1, JSON.stringify(call.content));
  assert.equal(call.toolCalls[0].toolName, 'get_weather');
  assert.equal(call.toolResults.length, 1);
  assert.match(call.toolResults[0].output, /^sunny in /);
  assert.equal(answer.finishReason, 'stop');
  assert.match(text, /sunny in /, 'the answer reads the tool result');
  assertUsage(totalUsage);
}

test('generateText: multi-step function tool loop (stopWhen)', async () => {
  const result = await generateText({
    ...CALL,
    model: anthropic(MODEL_CLIENT_LOOP),
    prompt: 'What is the weather in Lyon?',
    tools: { get_weather: weather },
    stopWhen: stepCountIs(5),
  });
  assertClientLoop(result.steps, result.text, result.totalUsage);
  assert.equal(result.finishReason, 'stop');
});

test('streamText: multi-step function tool loop (stopWhen)', async () => {
  const result = streamText({
    ...CALL,
    model: anthropic(MODEL_CLIENT_LOOP),
    prompt: 'What is the weather in Lyon?',
    tools: { get_weather: weather },
    stopWhen: stepCountIs(5),
  });
  const kinds = new Set();
  for await (const part of result.fullStream) {
    assert.notEqual(part.type, 'error', JSON.stringify(part));
    kinds.add(part.type);
  }
  for (const kind of ['tool-call', 'tool-result', 'text-delta', 'finish-step', 'finish']) {
    assert.ok(kinds.has(kind), `no ${kind} part in ${[...kinds]}`);
  }
  assertClientLoop(await result.steps, await result.text, await result.totalUsage);
  assert.equal(await result.finishReason, 'stop');
});

/** The gateway-run search: one call, its results as sources, then the answer. */
function assertSearch(content, sources, text) {
  const call = content.find((p) => p.type === 'tool-call');
  assert.ok(call, JSON.stringify(content));
  assert.equal(call.toolName, 'web_search');
  assert.equal(call.providerExecuted, true);
  const result = content.find((p) => p.type === 'tool-result');
  assert.ok(result && !result.isError, JSON.stringify(content));
  assert.equal(result.output[0]?.url, 'https://example.org/lyon', JSON.stringify(result.output));
  assert.ok(sources.length >= 1, JSON.stringify(content));
  assert.equal(sources[0].sourceType, 'url');
  assert.equal(sources[0].url, 'https://example.org/lyon');
  assert.equal(sources[0].title, 'Lyon forecast');
  assert.ok(text.length > 0);
}

test('generateText: provider-defined web_search_20250305 with sources', async () => {
  const result = await generateText({
    ...CALL,
    model: anthropic(MODEL_SEARCH),
    prompt: 'Weather in Lyon today?',
    tools: { web_search: anthropic.tools.webSearch_20250305({ maxUses: 2 }) },
  });
  assertSearch(result.content, result.sources, result.text);
  assert.equal(result.finishReason, 'stop');
  assertUsage(result.usage);
});

test('streamText: provider-defined web_search_20250305 with sources', async () => {
  const result = streamText({
    ...CALL,
    model: anthropic(MODEL_SEARCH),
    prompt: 'Weather in Lyon today?',
    tools: { web_search: anthropic.tools.webSearch_20250305({ maxUses: 2 }) },
  });
  for await (const part of result.fullStream) assert.notEqual(part.type, 'error', JSON.stringify(part));
  assertSearch(await result.content, await result.sources, await result.text);
  assert.equal(await result.finishReason, 'stop');
  assertUsage(await result.usage);
});

test('errors: unknown model → APICallError 404', async () => {
  try {
    await generateText({ ...CALL, model: anthropic('no-such-model'), prompt: 'Hello there' });
  } catch (err) {
    assert.ok(APICallError.isInstance(err), `expected APICallError, got ${err?.constructor?.name}: ${err}`);
    assert.equal(err.statusCode, 404);
    assert.equal(err.isRetryable, false);
    assert.equal(JSON.parse(err.responseBody).error.type, 'not_found_error');
    return;
  }
  assert.fail('expected APICallError, but the call succeeded');
});

test('errors: unknown model while streaming → APICallError 404 as an error part', async () => {
  let reported;
  const result = streamText({
    ...CALL,
    model: anthropic('no-such-model'),
    prompt: 'Hello there',
    onError: ({ error }) => {
      reported = error;
    },
  });
  const errors = [];
  for await (const part of result.fullStream) if (part.type === 'error') errors.push(part.error);
  assert.equal(errors.length, 1);
  for (const err of [errors[0], reported]) {
    assert.ok(APICallError.isInstance(err), `expected APICallError, got ${err?.constructor?.name}: ${err}`);
    assert.equal(err.statusCode, 404);
  }
});

test('shapes: no null where the API omits the field, in every response above', async () => {
  await assertShapes();
});
