// Shape fidelity (issue 16, messages-api.md §4): every JSON body and SSE event the gateway sends
// is walked, and a `null` is allowed only on the fields the Anthropic API itself sends as null.
// Anything else the API omits when it has no value (`citations` first: the Vercel AI SDK rejects
// a whole response over `"citations": null`) must be left out.
//
// Use: pass `shapeFetch` as the SDK's `fetch`; the suite's last test awaits `shapeViolations()`.

import assert from 'node:assert/strict';

// Where the API (and so the SDKs' types) has `T | null` rather than an optional field.
const NULLABLE = new Set([
  'stop_reason', // message, message_start, message_delta
  'stop_sequence',
  'cache_creation_input_tokens', // usage
  'cache_read_input_tokens',
  'cache_creation',
  'server_tool_use',
  'service_tier',
  'page_age', // web_search_result
  'title', // web_search_result_location, web fetch document
  'document_title', // char / page location citations
  'container',
  'stop_details',
  'revised_prompt', // the gateway's image_generation_result (gateway.md §5.9)
]);

const pending = [];
const violations = [];
let walked = 0;

/** Every `null` at a key the API omits, and every `citations` that is not a non-empty array. */
export function nullViolations(value, path = '$') {
  const out = [];
  const walk = (v, p) => {
    if (Array.isArray(v)) {
      v.forEach((item, i) => walk(item, `${p}[${i}]`));
    } else if (v !== null && typeof v === 'object') {
      for (const [key, item] of Object.entries(v)) {
        const at = `${p}.${key}`;
        if (item === null && !NULLABLE.has(key)) out.push(`${at} is null`);
        if (key === 'citations' && item !== undefined && v.type === 'text') {
          if (!Array.isArray(item) || item.length === 0) {
            out.push(`${at} must be a non-empty array or absent, got ${JSON.stringify(item)}`);
          }
        }
        walk(item, at);
      }
    }
  };
  walk(value, path);
  return out;
}

async function inspect(what, contentType, body) {
  // What arrived before a deliberate abort or reset is still walked.
  let text = '';
  const decoder = new TextDecoder();
  try {
    for await (const chunk of body) text += decoder.decode(chunk, { stream: true });
  } catch {
    text = text.slice(0, Math.max(0, text.lastIndexOf('\n\n')));
  }
  const check = (value, where) => {
    walked += 1;
    for (const v of nullViolations(value)) violations.push(`${what} ${where}: ${v}`);
  };
  if (contentType?.includes('text/event-stream')) {
    for (const frame of text.split(/\r?\n\r?\n/)) {
      const data = frame
        .split(/\r?\n/)
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).trimStart())
        .join('\n');
      if (!data) continue;
      const event = JSON.parse(data);
      check(event, `event ${event.type}`);
    }
  } else if (contentType?.includes('json') && text.length > 0) {
    check(JSON.parse(text), 'body');
  }
}

/** A `fetch` that hands the SDK the response as it is and walks a copy of its body. */
export async function shapeFetch(url, init) {
  const res = await fetch(url, init);
  if (!res.body) return res;
  const [mine, theirs] = res.body.tee();
  const what = `${init?.method ?? 'GET'} ${new URL(url).pathname} → ${res.status}`;
  pending.push(
    inspect(what, res.headers.get('content-type'), mine).catch((e) =>
      violations.push(`${what}: not JSON: ${e}`),
    ),
  );
  return new Response(theirs, { status: res.status, statusText: res.statusText, headers: res.headers });
}

/** Awaits every walk started so far and fails on any violation. */
export async function assertShapes() {
  await Promise.all(pending);
  assert.ok(walked > 0, 'no response was walked');
  assert.deepEqual(violations, [], violations.join('\n'));
}

// The walker must catch what it is for.
assert.deepEqual(nullViolations({ content: [{ type: 'text', text: 'a', citations: null }] }), [
  '$.content[0].citations is null',
  '$.content[0].citations must be a non-empty array or absent, got null',
]);
assert.deepEqual(nullViolations({ content: [{ type: 'text', text: 'a', citations: [] }] }).length, 1);
assert.deepEqual(nullViolations({ stop_sequence: null, usage: { service_tier: null } }), []);
