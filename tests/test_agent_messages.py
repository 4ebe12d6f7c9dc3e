"""Reading service messages never raises anything but ValueError, whatever arrives."""

import json

import pytest

from agent.messages import (
    MAX_DEPTH,
    MAX_INT_DIGITS,
    cap_depth,
    first_duplicate_key,
    parse_message,
)


def test_plain_object_is_read():
    assert parse_message(b'{"a": [1, {"b": "c"}]}') == ({"a": [1, {"b": "c"}]}, False)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{", "not JSON"),
        (b"[1, 2]", "not a JSON object but list"),
        (b'"text"', "not a JSON object but str"),
    ],
    ids=["binary", "truncated", "array", "string"],
)
def test_what_is_not_a_json_object_raises_value_error_saying_why(data, why):
    with pytest.raises(ValueError, match=why):
        parse_message(data)


def _message_with_document_nested(levels: int) -> bytes:
    """A start-next reply whose job document holds arrays nested ``levels`` deep."""
    deep = '{"clientToken": "t", "execution": {"jobId": "j", "jobDocument": ' + "[" * levels
    return (deep + "]" * levels + '}, "timestamp": 1}').encode()


# 100 is read whole by every Python, 5,000 by 3.13 but not 3.9-3.12, 20,000 by none: the cut
# is the agent's, at MAX_DEPTH, whatever the interpreter could read.
@pytest.mark.parametrize("levels", [MAX_DEPTH - 1, 100, 5000, 9000, 20000])
def test_deep_nesting_is_cut_at_the_agents_depth_and_flagged_instead_of_raising(levels):
    message, cut = parse_message(_message_with_document_nested(levels))
    assert cut
    assert message["clientToken"] == "t"
    assert message["execution"]["jobId"] == "j"
    assert message["timestamp"] == 1
    document = message["execution"]["jobDocument"]
    depth = 2  # the message's object, then "execution"
    while isinstance(document, list):
        depth += 1
        document = document[0]
    assert document is None and depth == MAX_DEPTH


def test_nesting_up_to_the_agents_depth_is_read_whole():
    message, cut = parse_message(_message_with_document_nested(MAX_DEPTH - 2))
    assert not cut
    assert message["execution"]["jobDocument"] is not None


def test_a_deep_value_hidden_under_a_repeated_key_is_cut_too():
    deep = "[" * 100 + "]" * 100
    message, cut = parse_message(('{"a": ' + deep + ', "a": 1}').encode())
    assert cut
    assert message == {"a": 1}


def test_cap_depth_keeps_strings_with_brackets_and_escaped_quotes():
    text = json.dumps({"a": {"b": ['x"[{', {"c": 1}]}})
    capped, cut = cap_depth(text, 2)
    assert cut
    assert json.loads(capped) == {"a": {"b": None}}


def test_cap_depth_leaves_shallow_text_alone():
    text = json.dumps({"a": [[1]]})
    assert cap_depth(text, MAX_DEPTH) == (text, False)


def test_duplicate_keys_are_found_at_any_depth():
    message, _ = parse_message(b'{"doc": {"list": [{"k": 1, "k": 2}]}}')
    assert first_duplicate_key(message) == "k"
    assert message["doc"]["list"][0]["k"] == 2


def test_no_duplicate_keys_gives_none():
    message, _ = parse_message(b'{"a": {"b": 1}, "b": 2}')
    assert first_duplicate_key(message) is None


@pytest.mark.parametrize("sign", ["", "-"])
def test_an_integer_too_long_for_python_to_convert_is_read_as_an_infinite_float(sign):
    # Python 3.11+ refuses to convert it, Debian 11's 3.9.2 does not: read it the same way.
    message, cut = parse_message(f'{{"n": {sign}1{"0" * MAX_INT_DIGITS}}}'.encode())
    assert message["n"] == float(f"{sign}inf") and not cut


def test_an_integer_of_the_longest_length_stays_an_exact_integer():
    message, _ = parse_message(f'{{"n": {"9" * MAX_INT_DIGITS}}}'.encode())
    assert message["n"] == 10**MAX_INT_DIGITS - 1
