"""Shape fidelity (issue 16), as tests/sdk/shape.mjs does for the JavaScript suites: every JSON
body and SSE event the gateway sends is walked, and a null is allowed only where the Anthropic
API itself sends null. Keep NULLABLE in step with tests/sdk/shape.mjs.

Use: pass ``http_client=shape_client()`` to the SDK; the suite's last test calls ``assert_shapes()``.
"""

import json

import anthropic
import httpx2

NULLABLE = {
    "stop_reason", "stop_sequence", "cache_creation_input_tokens", "cache_read_input_tokens",
    "cache_creation", "server_tool_use", "service_tier", "page_age", "title", "document_title",
    "container", "stop_details", "revised_prompt",
}

violations: list[str] = []
walked = 0


def null_violations(value, path="$"):
    """Every null at a key the API omits, and every text `citations` not a non-empty array."""
    out = []
    if isinstance(value, list):
        for i, item in enumerate(value):
            out += null_violations(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            at = f"{path}.{key}"
            if item is None and key not in NULLABLE:
                out.append(f"{at} is null")
            if key == "citations" and value.get("type") == "text" and not (isinstance(item, list) and item):
                out.append(f"{at} must be a non-empty array or absent, got {json.dumps(item)}")
            out += null_violations(item, at)
    return out


def _inspect(what: str, content_type: str, body: bytes):
    global walked
    text = body.decode("utf-8", "replace")
    values = []
    if content_type.startswith("text/event-stream"):
        for frame in text.replace("\r\n", "\n").split("\n\n"):
            data = "\n".join(l[5:].lstrip() for l in frame.split("\n") if l.startswith("data:"))
            if data:
                values.append(json.loads(data))
    elif "json" in content_type and text:
        values.append(json.loads(text))
    for v in values:
        walked += 1
        violations.extend(f"{what}: {p}" for p in null_violations(v))


class _Walked(httpx2.SyncByteStream):
    """The response body as it is, walked once it has been read to the end."""

    def __init__(self, inner, what, content_type):
        self.inner, self.what, self.content_type = inner, what, content_type

    def __iter__(self):
        body = b""
        for chunk in self.inner:
            body += chunk
            yield chunk
        _inspect(self.what, self.content_type, body)

    def close(self):
        self.inner.close()


class _Transport(httpx2.BaseTransport):
    def __init__(self):
        self.inner = httpx2.HTTPTransport()

    def handle_request(self, request):
        res = self.inner.handle_request(request)
        what = f"{request.method} {request.url.path} -> {res.status_code}"
        ctype = res.headers.get("content-type", "")
        return httpx2.Response(
            status_code=res.status_code,
            headers=res.headers,
            stream=_Walked(res.stream, what, ctype),
            extensions=res.extensions,
        )

    def close(self):
        self.inner.close()


def shape_client() -> httpx2.Client:
    return anthropic.DefaultHttpxClient(transport=_Transport())


def assert_shapes():
    assert walked > 0, "no response was walked"
    assert not violations, "\n".join(violations)


assert null_violations({"content": [{"type": "text", "text": "a", "citations": None}]}) == [
    "$.content[0].citations is null",
    "$.content[0].citations must be a non-empty array or absent, got null",
]
assert null_violations({"stop_sequence": None, "usage": {"service_tier": None}}) == []
