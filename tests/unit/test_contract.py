"""The contract as clients see it: the HTTP binding (which `buf breaking` cannot see) and the
JSON names of the documented fields."""

from __future__ import annotations

from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2
from mplus.v1 import batch_service_pb2, health_service_pb2, message_pb2, message_service_pb2

from server import gateway


def test_add_messages_is_bound_to_post_message_with_the_batch_as_body() -> None:
    method = message_service_pb2.DESCRIPTOR.services_by_name["MessageService"].methods_by_name[
        "AddMessages"
    ]
    rule = method.GetOptions().Extensions[annotations_pb2.http]
    assert (rule.post, rule.body) == ("/message", "batch")
    assert rule == http_pb2.HttpRule(post="/message", body="batch")


def test_documented_json_names_are_kept() -> None:
    added = {f.name: f.json_name for f in message_pb2.AddedMessage.DESCRIPTOR.fields}
    assert added == {
        "to": "to",
        "body": "body",
        "from": "from",
        "callback": "callback",
        "channels": "channels",
        "id": "id",
        "send_at": "send_at",
        "batch_uuid": "batchUuid",
        "message_uuid": "messageUuid",
        "scheduled": "scheduled",
    }
    request = {f.json_name for f in message_service_pb2.AddMessagesRequest.DESCRIPTOR.fields}
    assert {"key", "isDryrun", "dryRun"} <= request


def test_envoys_descriptor_set_holds_the_service_and_the_error_details() -> None:
    descriptors = descriptor_pb2.FileDescriptorSet.FromString(
        gateway.descriptor_path().read_bytes()
    )
    files = {f.name for f in descriptors.file}
    assert {
        "mplus/v1/message.proto",
        "mplus/v1/message_service.proto",
        "google/rpc/error_details.proto",
    } <= files


def test_the_batch_endpoints_are_bound_to_the_vendors_paths() -> None:
    service = batch_service_pb2.DESCRIPTOR.services_by_name["BatchService"]
    rules = {
        method.name: method.GetOptions().Extensions[annotations_pb2.http]
        for method in service.methods
    }
    assert rules == {
        "GetBatch": http_pb2.HttpRule(get="/batch/{batch_uuid}"),
        "ListPendingBatches": http_pb2.HttpRule(get="/batch"),
        "CancelBatch": http_pb2.HttpRule(delete="/batch/{batch_uuid}"),
        "ListReceiptCodes": http_pb2.HttpRule(get="/dr-responses", response_body="json"),
    }


def test_readiness_is_bound_to_get_readyz() -> None:
    service = health_service_pb2.DESCRIPTOR.services_by_name["HealthService"]
    rules = {
        method.name: method.GetOptions().Extensions[annotations_pb2.http]
        for method in service.methods
    }
    assert rules == {"CheckReadiness": http_pb2.HttpRule(get="/readyz")}
    files = descriptor_pb2.FileDescriptorSet.FromString(gateway.descriptor_path().read_bytes())
    assert "mplus/v1/health_service.proto" in {f.name for f in files.file}


def test_the_vendors_lower_case_json_names_are_kept() -> None:
    def names(message: Any) -> dict[str, str]:
        return {f.name: f.json_name for f in message.DESCRIPTOR.fields}

    assert names(batch_service_pb2.Receipt) == {
        "destination": "destination",
        "delivered": "delivered",
        "failed": "failed",
        "batch_uuid": "batchuuid",
        "message_uuid": "messageuuid",
        "info": "info",
    }
    assert names(batch_service_pb2.PendingBatch) == {
        "identifier": "identifier",
        "at": "at",
        "from": "from",
        "message_count": "messagecount",
        "unit_count": "unitcount",
    }
    assert names(batch_service_pb2.BatchCounts) == {
        "total": "total",
        "delivered": "delivered",
        "failed": "failed",
    }
    # zero counts and false flags print only as fields with presence (Envoy prints set fields)
    for message in (batch_service_pb2.BatchCounts, batch_service_pb2.Receipt):
        for field in message.DESCRIPTOR.fields:
            if field.type in (field.TYPE_INT32, field.TYPE_BOOL):
                assert field.has_presence, field.full_name


def test_envoys_descriptor_set_holds_the_batch_service_and_http_body() -> None:
    descriptors = descriptor_pb2.FileDescriptorSet.FromString(
        gateway.descriptor_path().read_bytes()
    )
    files = {f.name for f in descriptors.file}
    assert {"mplus/v1/batch_service.proto", "google/api/httpbody.proto"} <= files
