"""fit_status_details: every value the agent sends fits the service's statusDetails limits."""

import pytest

from agent.status_details import MAX_VALUE_CHARS, fit_status_details


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"progress": "50%"}, {"progress": "50%"}),
        ({"count": 3, "done": True, "ok": False}, {"count": "3", "done": "true", "ok": "false"}),
        ({"bad key/with.dots": "v"}, {"bad_key_with_dots": "v"}),
        ({"k" * 200: "v"}, {"k" * 128: "v"}),
        ({"": "v", "empty": "", "none": None}, {}),
        ({"a b": "1", "a_b": "2"}, {"a_b": "1"}),
        ({"out": "line1\nline2\tx\r\x00\x1b[0m\u200b"}, {"out": "line1\nline2\tx[0m"}),
        ({"only": "\x00\x01"}, {}),
        ({"ns:key-1_x": "v"}, {"ns:key-1_x": "v"}),
    ],
    ids=[
        "plain",
        "non_strings_become_strings",
        "bad_key_characters_replaced",
        "long_key_cut_to_128",
        "empty_and_none_dropped",
        "first_of_colliding_keys_wins",
        "control_characters_removed_but_newline_and_tab",
        "value_only_control_characters_dropped",
        "allowed_key_punctuation_kept",
    ],
)
def test_fit_status_details_table(given, expected):
    assert fit_status_details(given) == expected


def test_long_value_keeps_its_tail():
    text = "head " + "x" * 3000 + " the real error"
    fitted = fit_status_details({"stderr": text})["stderr"]
    assert len(fitted) == MAX_VALUE_CHARS
    assert fitted.startswith("...")
    assert fitted.endswith(" the real error")


def test_value_of_exactly_the_limit_is_kept_whole():
    text = "y" * MAX_VALUE_CHARS
    assert fit_status_details({"v": text}) == {"v": text}


def test_at_most_ten_pairs_are_kept_in_order():
    given = {f"k{i}": str(i) for i in range(15)}
    fitted = fit_status_details(given)
    assert list(fitted) == [f"k{i}" for i in range(10)]


def test_dropped_pairs_do_not_count_towards_the_ten():
    given = {"empty": "", **{f"k{i}": str(i) for i in range(10)}}
    assert len(fit_status_details(given)) == 10
    assert "k9" in fit_status_details(given)


def test_non_mapping_raises_type_error():
    with pytest.raises(TypeError, match="list"):
        fit_status_details(["a", "b"])
