"""The contract as clients see it: the HTTP binding (which `buf breaking` cannot see) and the
JSON names of the documented fields."""

from __future__ import annotations

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2
from mplus.v1 import message_pb2, message_service_pb2

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
