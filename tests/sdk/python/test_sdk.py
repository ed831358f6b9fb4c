"""The official Anthropic Python SDK against the gateway, unchanged but for its base URL.

Run by `tests/it/sdk.rs` once per target, which sets (environment only):
  GATEWAY_URL, GATEWAY_KEY, GATEWAY_LIMITED_KEY (requests_per_minute = 1, unused elsewhere),
  MODEL_TEXT (a plain text reply), MODEL_TOOL (answers with a `get_weather` tool call),
  MODEL_500 (the upstream fails with 500), MODEL_MIDSTREAM (the stream fails after its first
  text delta), EXPECT_TOOL_INPUT (JSON the tool call's input must equal), MODEL_LOOP (calls the
  gateway's datetime tool when offered it, then answers with text), MODEL_LOOP_ALL (calls every
  gateway tool offered, fetching the first http:// URL of the system prompt), FETCH_URL (a page
  that exists), MISSING_URL (one that answers 404),
  MODEL_IDS (comma-separated: every model GATEWAY_KEY sees, in order), MODEL_ALIAS and
  MODEL_ALIAS_ID (an alias and its model), EXPECT_COUNT_TOKENS (count_tokens of HELLO on
  MODEL_TEXT), EXPECT_TOKEN_ESTIMATE ("true" when that count is the gateway's local estimate).
The same cases live in `tests/sdk/ts/sdk.test.mjs`; keep the two files in step.
"""

import json
import os
import re

import anthropic
import pytest

from shape import assert_shapes, shape_client

URL = os.environ["GATEWAY_URL"]
KEY = os.environ["GATEWAY_KEY"]
LIMITED_KEY = os.environ["GATEWAY_LIMITED_KEY"]
MODEL_TEXT = os.environ["MODEL_TEXT"]
MODEL_TOOL = os.environ["MODEL_TOOL"]
MODEL_500 = os.environ["MODEL_500"]
MODEL_MIDSTREAM = os.environ["MODEL_MIDSTREAM"]
EXPECT_TOOL_INPUT = json.loads(os.environ["EXPECT_TOOL_INPUT"])
MODEL_LOOP = os.environ["MODEL_LOOP"]
MODEL_LOOP_ALL = os.environ["MODEL_LOOP_ALL"]
FETCH_URL = os.environ["FETCH_URL"]
MISSING_URL = os.environ["MISSING_URL"]
ALL_TOOLS = [
    {"type": "gateway:datetime"},
    {"type": "gateway:web_search"},
    {"type": "gateway:web_fetch"},
    {"type": "ai-stats:advisor"},
    {"type": "gateway:image_generation"},
]
ALL_RESULTS = [
    "datetime_tool_result",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "advisor_tool_result",
    "image_generation_tool_result",
]
DATETIME_TOOL = {"type": "gateway:datetime", "timezone": "Europe/Paris"}
WHAT_TIME = [{"role": "user", "content": "What time is it in Paris?"}]
MODEL_IDS = os.environ["MODEL_IDS"].split(",")
MODEL_ALIAS = os.environ["MODEL_ALIAS"]
MODEL_ALIAS_ID = os.environ["MODEL_ALIAS_ID"]
EXPECT_COUNT_TOKENS = int(os.environ["EXPECT_COUNT_TOKENS"])
EXPECT_TOKEN_ESTIMATE = os.environ["EXPECT_TOKEN_ESTIMATE"] == "true"

# `req_` + a 26-char ULID (Crockford base32), messages-api.md §2.3.
REQUEST_ID = re.compile(r"^req_[0-9A-HJKMNP-TV-Z]{26}$")

HELLO = [{"role": "user", "content": "Hello there"}]

MESSAGE_FIELDS = {"id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"}
USAGE_FIELDS = {
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cache_creation",
    "server_tool_use",
    "service_tier",
}

# The mock provider fills required properties (strings "mock", enums their first value, arrays
# []), so this schema decides the mock target's EXPECT_TOOL_INPUT.
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["célsius", "fahrenheit"]},
            "days": {"type": "array", "items": {"type": "integer"}},
        },
        "required": ["city", "unit", "days"],
    },
}


def client(**kwargs) -> anthropic.Anthropic:
    options = {"api_key": KEY, "max_retries": 0, "timeout": 30.0, "http_client": shape_client()}
    options.update(kwargs)
    return anthropic.Anthropic(base_url=URL, **options)


def assert_request_id(value):
    assert isinstance(value, str) and REQUEST_ID.match(value), f"request id {value!r}"


def assert_usage(usage):
    for field in ("input_tokens", "output_tokens"):
        value = getattr(usage, field)
        assert isinstance(value, int) and value >= 0, f"usage.{field} = {value!r}"
    assert usage.output_tokens > 0, usage


def assert_error_request_id(err: anthropic.APIStatusError):
    assert_request_id(err.request_id)
    assert isinstance(err.body, dict), err.body
    assert err.body.get("request_id") == err.request_id, err.body


def tool_use_block(message):
    blocks = [b for b in message.content if b.type == "tool_use"]
    assert len(blocks) == 1, message.content
    return blocks[0]


def test_create_text():
    raw = client().messages.with_raw_response.create(
        model=MODEL_TEXT, max_tokens=64, messages=HELLO
    )
    message = raw.parse()
    assert message.id.startswith("msg_"), message.id
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.content and message.content[0].type == "text", message.content
    assert message.content[0].text, message.content
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert_usage(message.usage)
    # messages-api.md §4: every field is on the wire (null where unknown).
    assert MESSAGE_FIELDS <= message.to_dict().keys(), message.to_dict()
    assert USAGE_FIELDS <= message.usage.to_dict().keys(), message.usage.to_dict()
    assert_request_id(message._request_id)
    assert message._request_id == raw.headers["request-id"]


def test_stream_text():
    with client().messages.stream(model=MODEL_TEXT, max_tokens=64, messages=HELLO) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
        assert_request_id(stream.request_id)
    assert len(pieces) >= 1 and all(pieces), pieces
    assert final.id.startswith("msg_"), final.id
    assert final.role == "assistant"
    assert [b.type for b in final.content] == ["text"], final.content
    assert final.content[0].text == "".join(pieces)
    assert final.stop_reason == "end_turn"
    assert_usage(final.usage)
    # Both targets are deterministic: the stream carries the same text as the JSON reply.
    message = client().messages.create(model=MODEL_TEXT, max_tokens=64, messages=HELLO)
    assert final.content[0].text == message.content[0].text


def test_stream_tool_use():
    snapshots = []
    with client().messages.stream(
        model=MODEL_TOOL,
        max_tokens=256,
        messages=[{"role": "user", "content": "What is the weather in Lyon?"}],
        tools=[WEATHER_TOOL],
    ) as stream:
        for event in stream:
            if event.type == "input_json":
                # The SDK re-parses the accumulated fragments as partial JSON on every delta.
                assert isinstance(event.snapshot, dict), event.snapshot
                snapshots.append(event.partial_json)
        final = stream.get_final_message()
    assert len(snapshots) >= 2, f"the input should arrive in several fragments: {snapshots}"
    assert json.loads("".join(snapshots)) == EXPECT_TOOL_INPUT
    block = tool_use_block(final)
    assert block.name == "get_weather"
    assert block.id.startswith("toolu_"), block.id
    assert block.input == EXPECT_TOOL_INPUT
    assert final.stop_reason == "tool_use"
    assert_usage(final.usage)


def test_create_tool_use():
    message = client().messages.create(
        model=MODEL_TOOL,
        max_tokens=256,
        messages=[{"role": "user", "content": "What is the weather in Lyon?"}],
        tools=[WEATHER_TOOL],
    )
    block = tool_use_block(message)
    assert block.name == "get_weather"
    assert block.input == EXPECT_TOOL_INPUT
    assert message.stop_reason == "tool_use"
    assert_usage(message.usage)


def sent_auth_headers(raw):
    headers = raw.http_request.headers
    return headers.get("x-api-key"), headers.get("authorization")


def test_auth_api_key():
    # Whatever header this SDK major sends for `api_key` (2.x: Authorization: Bearer).
    raw = client(api_key=KEY).messages.with_raw_response.create(
        model=MODEL_TEXT, max_tokens=16, messages=HELLO
    )
    x_api_key, authorization = sent_auth_headers(raw)
    assert x_api_key == KEY or authorization == f"Bearer {KEY}", (x_api_key, authorization)
    assert raw.parse().content


def test_auth_x_api_key_header():
    c = client(
        api_key="sk-not-sent",
        default_headers={"x-api-key": KEY, "Authorization": anthropic.omit},
    )
    raw = c.messages.with_raw_response.create(model=MODEL_TEXT, max_tokens=16, messages=HELLO)
    assert sent_auth_headers(raw) == (KEY, None)
    assert raw.parse().content


def test_auth_bearer_token():
    c = anthropic.Anthropic(base_url=URL, auth_token=KEY, max_retries=0, timeout=30.0)
    raw = c.messages.with_raw_response.create(model=MODEL_TEXT, max_tokens=16, messages=HELLO)
    assert sent_auth_headers(raw) == (None, f"Bearer {KEY}")
    assert raw.parse().content


def test_error_400_bad_request():
    with pytest.raises(anthropic.BadRequestError) as e:
        client().messages.create(model=MODEL_TEXT, max_tokens=0, messages=HELLO)
    assert e.value.status_code == 400
    assert e.value.type == "invalid_request_error"
    assert_error_request_id(e.value)


def test_error_401_authentication():
    with pytest.raises(anthropic.AuthenticationError) as e:
        client(api_key="sk-wrong-key").messages.create(
            model=MODEL_TEXT, max_tokens=16, messages=HELLO
        )
    assert e.value.status_code == 401
    assert e.value.type == "authentication_error"
    assert_error_request_id(e.value)


def test_error_404_not_found():
    with pytest.raises(anthropic.NotFoundError) as e:
        client().messages.create(model="no-such-model", max_tokens=16, messages=HELLO)
    assert e.value.status_code == 404
    assert e.value.type == "not_found_error"
    assert_error_request_id(e.value)


def test_error_413_request_too_large():
    # The gateway under test is configured with max_body_bytes = 65536.
    # ContentTooLargeError is the 2.x name; RequestTooLargeError is its deprecated alias.
    with pytest.raises(anthropic.ContentTooLargeError) as e:
        client().messages.create(
            model=MODEL_TEXT,
            max_tokens=16,
            messages=[{"role": "user", "content": "x" * 100_000}],
        )
    assert e.value.status_code == 413
    assert e.value.type == "request_too_large"
    assert_error_request_id(e.value)


def test_error_429_rate_limit():
    c = client(api_key=LIMITED_KEY)
    first = c.messages.create(model=MODEL_TEXT, max_tokens=16, messages=HELLO)
    assert first.content
    with pytest.raises(anthropic.RateLimitError) as e:
        c.messages.create(model=MODEL_TEXT, max_tokens=16, messages=HELLO)
    assert e.value.status_code == 429
    assert e.value.type == "rate_limit_error"
    assert int(e.value.response.headers["retry-after"]) >= 1
    assert_error_request_id(e.value)


def test_error_5xx_upstream_failure():
    with pytest.raises(anthropic.InternalServerError) as e:
        client().messages.create(model=MODEL_500, max_tokens=16, messages=HELLO)
    assert e.value.status_code == 502
    assert e.value.type == "api_error"
    assert_error_request_id(e.value)
    # A stream that fails before its first byte is a plain HTTP error too.
    with pytest.raises(anthropic.InternalServerError) as e:
        with client().messages.stream(model=MODEL_500, max_tokens=16, messages=HELLO) as stream:
            stream.until_done()
    assert e.value.status_code == 502
    assert_error_request_id(e.value)


def test_midstream_failure_raises_while_iterating():
    texts = []
    with pytest.raises(anthropic.APIStatusError) as e:
        with client().messages.stream(
            model=MODEL_MIDSTREAM, max_tokens=64, messages=HELLO
        ) as stream:
            for text in stream.text_stream:
                texts.append(text)
    assert texts, "the failure comes after the first text delta"
    err = e.value
    assert err.status_code == 200, "the 200 head was already sent"
    assert err.type == "api_error"
    assert_request_id(err.request_id)
    assert err.body["request_id"] == err.request_id, err.body


def assert_tool_loop(message):
    """A gateway datetime call, its result, then the answer; the counter says one call."""
    types = [b.type for b in message.content]
    assert types[-3:] == ["server_tool_use", "datetime_tool_result", "text"], types
    call, result = message.content[-3], message.content[-2]
    assert call.id.startswith("srvtoolu_gw_"), call.id
    assert call.name == "datetime"
    data = message.to_dict()
    assert data["content"][-2]["tool_use_id"] == call.id
    assert data["content"][-2]["content"]["times"][0]["timezone"] == "Europe/Paris", data["content"][-2]
    assert message.stop_reason == "end_turn"
    counters = data["usage"]["server_tool_use"]
    assert counters == {
        "web_search_requests": 0,
        "web_fetch_requests": 0,
        "datetime_requests": 1,
        "advisor_requests": 0,
        "image_generation_requests": 0,
    }, counters
    assert_usage(message.usage)


def test_gateway_tool_loop_create():
    message = client().messages.create(model=MODEL_LOOP, max_tokens=256, messages=WHAT_TIME, tools=[DATETIME_TOOL])
    assert_tool_loop(message)


def test_gateway_tool_loop_stream_and_continuation():
    with client().messages.stream(
        model=MODEL_LOOP, max_tokens=256, messages=WHAT_TIME, tools=[DATETIME_TOOL]
    ) as stream:
        final = stream.get_final_message()
    assert_tool_loop(final)
    # The SDK's own message goes back as history and the conversation continues.
    history = WHAT_TIME + [
        {"role": "assistant", "content": final.to_dict()["content"]},
        {"role": "user", "content": "Thanks!"},
    ]
    reply = client().messages.create(model=MODEL_LOOP, max_tokens=256, messages=history, tools=[DATETIME_TOOL])
    assert reply.content, reply


def assert_all_tools(message):
    data = message.to_dict()
    types = [b["type"] for b in data["content"]]
    expected = ["text"]
    for result in ALL_RESULTS:
        expected += ["server_tool_use", result]
    assert types == expected + ["text"], types
    for call, result in zip(data["content"][1:-1:2], data["content"][2:-1:2]):
        assert result["tool_use_id"] == call["id"], (call, result)
        assert "error_code" not in json.dumps(result["content"]), result
    assert data["content"][4]["content"][0]["url"] == "https://example.org/lyon"
    assert data["content"][6]["content"]["content"]["title"] == "Lyon page"
    assert data["content"][10]["content"]["source"]["media_type"] == "image/png"
    assert set(data["usage"]["server_tool_use"].values()) == {1}, data["usage"]
    assert message.stop_reason == "end_turn"


def test_every_gateway_tool_create_and_stream():
    system = f"Fetch {FETCH_URL} when useful."
    message = client().messages.create(
        model=MODEL_LOOP_ALL, max_tokens=256, system=system, messages=WHAT_TIME, tools=ALL_TOOLS
    )
    assert_all_tools(message)
    with client().messages.stream(
        model=MODEL_LOOP_ALL, max_tokens=256, system=system, messages=WHAT_TIME, tools=ALL_TOOLS
    ) as stream:
        final = stream.get_final_message()
    assert_all_tools(final)


def test_tool_error_result_block():
    with client().messages.stream(
        model=MODEL_LOOP_ALL,
        max_tokens=256,
        system=f"Fetch {MISSING_URL}",
        messages=WHAT_TIME,
        tools=[{"type": "gateway:web_fetch"}],
    ) as stream:
        final = stream.get_final_message()
    data = final.to_dict()
    result = next(b for b in data["content"] if b["type"] == "web_fetch_tool_result")
    assert result["content"] == {"type": "web_fetch_tool_result_error", "error_code": "url_not_accessible"}, result
    assert data["usage"]["server_tool_use"]["web_fetch_requests"] == 1


def test_models_list_paginates():
    page = client().models.list(limit=2)
    assert [m.id for m in page.data] == MODEL_IDS[:2]
    assert page.has_more == (len(MODEL_IDS) > 2)
    first = page.data[0]
    assert first.type == "model"
    assert first.display_name
    assert first.created_at.year >= 1970
    # Auto-pagination follows `after_id` = `last_id` to the end.
    assert [m.id for m in client().models.list(limit=2)] == MODEL_IDS


def test_models_retrieve_resolves_aliases():
    model = client().models.retrieve(MODEL_ALIAS)
    assert model.id == MODEL_ALIAS_ID
    assert model.type == "model"
    with pytest.raises(anthropic.NotFoundError) as e:
        client().models.retrieve("no-such-model")
    assert e.value.type == "not_found_error"
    assert_error_request_id(e.value)


def test_count_tokens():
    raw = client().messages.with_raw_response.count_tokens(model=MODEL_TEXT, messages=HELLO)
    assert raw.parse().input_tokens == EXPECT_COUNT_TOKENS
    assert (raw.headers.get("x-gateway-token-estimate") == "true") == EXPECT_TOKEN_ESTIMATE
    assert_request_id(raw.headers["request-id"])
    with pytest.raises(anthropic.NotFoundError):
        client().messages.count_tokens(model="no-such-model", messages=HELLO)


def test_zz_shapes_no_null_where_the_api_omits_the_field():
    """Last in the file: every response the tests above received was walked (shape.py)."""
    assert_shapes()
