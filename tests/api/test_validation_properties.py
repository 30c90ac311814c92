"""Property tests of the pure validators: whatever JSON arrives, the answer is a clean value or
an ApiError with a 4xx status and the offending field -- never another exception."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nixflex_engine.api.errors import ApiError
from nixflex_engine.api.fields import AGENT_FIELD_NAMES, validate_agent_fields
from nixflex_engine.api.routing import parse_json_body
from nixflex_engine.calls.outbound import OUTBOUND_FIELDS, validate_outbound

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
phones = st.sampled_from(
    ["+447386172392", "+15005550006", "0738", "", "+1", "+4477 1", "x"]
) | st.text(max_size=20)


def bodies(known: frozenset[str]) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.sampled_from(sorted(known)) | st.text(max_size=12)
    return st.dictionaries(keys, json_values | phones, max_size=8)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(bodies(OUTBOUND_FIELDS))
def test_outbound_validation_never_crashes(body: dict[str, Any]) -> None:
    try:
        req = validate_outbound(body)
    except ApiError as error:
        assert 400 <= error.status < 500
        assert error.code in {
            "missing_field",
            "invalid_phone_format",
            "invalid_request",
            "prompt_too_long",
        }
        assert "field" in error.details
        return
    assert req.to_number == body["to_number"] and req.agent_id == body["agent_id"]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(bodies(AGENT_FIELD_NAMES), st.booleans())
def test_agent_validation_never_crashes(body: dict[str, Any], creating: bool) -> None:
    try:
        clean = validate_agent_fields(body, creating=creating, allow_private_webhooks=False)
    except ApiError as error:
        assert error.status == 400 and "field" in error.details
        return
    assert set(clean) == set(body)  # all-or-nothing: every given field validated


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_json_parsing_never_crashes(raw: bytes) -> None:
    try:
        parse_json_body(raw)
    except ApiError as error:
        assert error.status == 400
