"""Certificate validity dates are read without a crypto library and explained in words."""

import datetime

import pytest
from agent_core_fixtures import make_pem

from agent.tls import certificate_problem, certificate_validity

UTC = datetime.timezone.utc
NOW = datetime.datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        (
            datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC),
            datetime.datetime(2049, 12, 31, tzinfo=UTC),
        ),
        (datetime.datetime(1999, 5, 6, tzinfo=UTC), datetime.datetime(2099, 1, 1, tzinfo=UTC)),
    ],
    ids=["utc_time", "generalized_time_after_2049"],
)
def test_validity_dates_are_read(not_before, not_after):
    assert certificate_validity(make_pem(not_before, not_after)) == (not_before, not_after)


def test_expired_certificate_is_named_as_expired(tmp_path):
    path = tmp_path / "thing.crt"
    path.write_bytes(make_pem(NOW - datetime.timedelta(days=30), NOW - datetime.timedelta(days=1)))
    assert (
        certificate_problem(path, NOW) == f"the certificate {path} expired on 2030-05-31 12:00 UTC"
    )


def test_certificate_from_the_future_asks_about_the_clock(tmp_path):
    path = tmp_path / "thing.crt"
    path.write_bytes(make_pem(NOW + datetime.timedelta(days=1), NOW + datetime.timedelta(days=30)))
    problem = certificate_problem(path, NOW)
    assert "is not valid before 2030-06-02 12:00 UTC" in problem
    assert "clock" in problem


def test_valid_certificate_has_no_problem(tmp_path):
    path = tmp_path / "thing.crt"
    path.write_bytes(make_pem(NOW - datetime.timedelta(days=1), NOW + datetime.timedelta(days=1)))
    assert certificate_problem(path, NOW) is None


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a certificate",
        b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n",
    ],
    ids=["empty", "text", "bad_base64", "truncated_der"],
)
def test_unreadable_certificate_gives_no_claim(tmp_path, content):
    path = tmp_path / "thing.crt"
    path.write_bytes(content)
    assert certificate_problem(path, NOW) is None
    with pytest.raises(ValueError):
        certificate_validity(content)


def test_missing_file_gives_no_claim(tmp_path):
    assert certificate_problem(tmp_path / "absent.crt", NOW) is None
