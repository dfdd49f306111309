"""The rendered Envoy config: rate limits as token buckets, and what each setting turns on."""

from __future__ import annotations

import dataclasses
import json

import pytest

from server import gateway
from server.config import Settings


@pytest.mark.parametrize(
    ("rate", "size", "bucket"),
    [
        (50, 100, {"max_tokens": 100, "tokens_per_fill": 50, "fill_interval": "1.000s"}),
        (0.05, 3, {"max_tokens": 3, "tokens_per_fill": 1, "fill_interval": "20.000s"}),
        (2.5, 5, {"max_tokens": 5, "tokens_per_fill": 2, "fill_interval": "0.800s"}),
        (500, 100, {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": "0.200s"}),
        (5000, 250, {"max_tokens": 250, "tokens_per_fill": 250, "fill_interval": "0.050s"}),
    ],
)
def test_a_rate_becomes_whole_tokens_per_interval(
    rate: float, size: int, bucket: dict[str, object]
) -> None:
    assert gateway.token_bucket(rate, size) == bucket


def rate_limit(**changes: object) -> dict[str, object]:
    config: dict[str, object] = json.loads(
        gateway.rate_limit(dataclasses.replace(Settings(), **changes))  # type: ignore[arg-type]
    )
    return config


def test_defaults_limit_each_key_and_all_requests() -> None:
    config = rate_limit()
    assert config["token_bucket"] == gateway.token_bucket(1000, 1000)
    assert config["always_consume_default_token_bucket"] is True
    assert config["descriptors"] == [
        {
            "entries": [{"key": "api_key"}, {"key": "limit", "value": "per_key"}],
            "token_bucket": gateway.token_bucket(50, 100),
        }
    ]
    assert config["max_dynamic_descriptors"] == gateway.MAX_DYNAMIC_DESCRIPTORS
    assert config["rate_limited_as_resource_exhausted"] is True


def test_zero_turns_each_limit_off() -> None:
    per_key_only = rate_limit(rate_limit_global=0)
    assert per_key_only["always_consume_default_token_bucket"] is False  # only keyless requests
    assert "descriptors" not in rate_limit(rate_limit_per_key=0)
    assert "filter_enabled" not in rate_limit(rate_limit_per_key=0, rate_limit_global=0)


def test_without_tls_the_listener_is_plain() -> None:
    assert "transport_socket" not in gateway.render(Settings())


def test_every_service_is_transcoded_and_get_batch_lists_print_empty() -> None:
    settings = Settings()
    usual = json.loads(gateway.transcoder(settings))
    every_field = json.loads(gateway.transcoder(settings, print_every_field=True))
    assert usual["services"] == [
        "mplus.v1.MessageService",
        "mplus.v1.BatchService",
        "mplus.v1.CarrierService",
        "mplus.v1.HealthService",
    ]
    assert usual["print_options"] == {"always_print_primitive_fields": False}
    assert every_field == usual | {"print_options": {"always_print_primitive_fields": True}}
    rendered = gateway.render(settings)
    assert rendered.count(json.dumps(every_field)) == 1  # GET /batch's route only


def test_an_unknown_path_is_told_the_endpoints() -> None:
    mappers = gateway.local_reply_mappers()
    for endpoint in gateway.JSON_ENDPOINTS:
        assert endpoint in mappers
