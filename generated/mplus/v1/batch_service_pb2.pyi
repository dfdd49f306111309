from google.api import annotations_pb2 as _annotations_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetBatchRequest(_message.Message):
    __slots__ = ("key", "batch_uuid", "details")
    KEY_FIELD_NUMBER: _ClassVar[int]
    BATCH_UUID_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    key: str
    batch_uuid: str
    details: bool
    def __init__(self, key: _Optional[str] = ..., batch_uuid: _Optional[str] = ..., details: _Optional[bool] = ...) -> None: ...

class GetBatchResponse(_message.Message):
    __slots__ = ("counts", "details")
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    counts: BatchCounts
    details: _containers.RepeatedCompositeFieldContainer[Receipt]
    def __init__(self, counts: _Optional[_Union[BatchCounts, _Mapping]] = ..., details: _Optional[_Iterable[_Union[Receipt, _Mapping]]] = ...) -> None: ...

class BatchCounts(_message.Message):
    __slots__ = ("total", "delivered", "failed")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    total: int
    delivered: int
    failed: int
    def __init__(self, total: _Optional[int] = ..., delivered: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("destination", "delivered", "failed", "batch_uuid", "message_uuid", "info")
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    BATCH_UUID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_UUID_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    destination: str
    delivered: bool
    failed: bool
    batch_uuid: str
    message_uuid: str
    info: _struct_pb2.Value
    def __init__(self, destination: _Optional[str] = ..., delivered: _Optional[bool] = ..., failed: _Optional[bool] = ..., batch_uuid: _Optional[str] = ..., message_uuid: _Optional[str] = ..., info: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class ListPendingBatchesRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class ListPendingBatchesResponse(_message.Message):
    __slots__ = ("batches",)
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    batches: _containers.RepeatedCompositeFieldContainer[PendingBatch]
    def __init__(self, batches: _Optional[_Iterable[_Union[PendingBatch, _Mapping]]] = ...) -> None: ...

class PendingBatch(_message.Message):
    __slots__ = ("identifier", "at", "message_count", "unit_count")
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    UNIT_COUNT_FIELD_NUMBER: _ClassVar[int]
    identifier: str
    at: str
    message_count: int
    unit_count: int
    def __init__(self, identifier: _Optional[str] = ..., at: _Optional[str] = ..., message_count: _Optional[int] = ..., unit_count: _Optional[int] = ..., **kwargs) -> None: ...

class CancelBatchRequest(_message.Message):
    __slots__ = ("key", "batch_uuid")
    KEY_FIELD_NUMBER: _ClassVar[int]
    BATCH_UUID_FIELD_NUMBER: _ClassVar[int]
    key: str
    batch_uuid: str
    def __init__(self, key: _Optional[str] = ..., batch_uuid: _Optional[str] = ...) -> None: ...

class CancelBatchResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListReceiptCodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListReceiptCodesResponse(_message.Message):
    __slots__ = ("codes", "json")
    CODES_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    codes: _containers.RepeatedCompositeFieldContainer[ReceiptCode]
    json: _httpbody_pb2.HttpBody
    def __init__(self, codes: _Optional[_Iterable[_Union[ReceiptCode, _Mapping]]] = ..., json: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ...) -> None: ...

class ReceiptCode(_message.Message):
    __slots__ = ("code", "description")
    CODE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    code: str
    description: str
    def __init__(self, code: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...
