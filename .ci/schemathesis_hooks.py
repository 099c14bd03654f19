"""Schemathesis hooks for .ci/schemathesis: how a JSONL (application/x-ndjson) body is sent.

The OpenAPI document describes an import body as an array of records, one JSON object a
line; schemathesis generates the array (or, for negative cases, something else) and this
writes each item as one line. A value that is not an array goes as one line of its JSON.
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def jsonl(_context, value):
    items = value if isinstance(value, list) else [value]
    return "\n".join(json.dumps(item) for item in items).encode()
