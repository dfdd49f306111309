from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class From(_message.Message):
    __slots__ = ("type", "value")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    type: str
    value: str
    def __init__(self, type: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("to", "body", "callback", "channels", "id", "send_at")
    TO_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SEND_AT_FIELD_NUMBER: _ClassVar[int]
    to: str
    body: str
    callback: str
    channels: _struct_pb2.ListValue
    id: str
    send_at: str
    def __init__(self, to: _Optional[str] = ..., body: _Optional[str] = ..., callback: _Optional[str] = ..., channels: _Optional[_Union[_struct_pb2.ListValue, _Mapping]] = ..., id: _Optional[str] = ..., send_at: _Optional[str] = ..., **kwargs) -> None: ...

class Defaults(_message.Message):
    __slots__ = ("to", "body", "callback", "channels", "id", "send_at")
    TO_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SEND_AT_FIELD_NUMBER: _ClassVar[int]
    to: str
    body: str
    callback: str
    channels: _struct_pb2.ListValue
    id: str
    send_at: str
    def __init__(self, to: _Optional[str] = ..., body: _Optional[str] = ..., callback: _Optional[str] = ..., channels: _Optional[_Union[_struct_pb2.ListValue, _Mapping]] = ..., id: _Optional[str] = ..., send_at: _Optional[str] = ..., **kwargs) -> None: ...

class AddedMessage(_message.Message):
    __slots__ = ("to", "body", "callback", "channels", "id", "send_at", "batch_uuid", "message_uuid", "scheduled")
    TO_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SEND_AT_FIELD_NUMBER: _ClassVar[int]
    BATCH_UUID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_UUID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_FIELD_NUMBER: _ClassVar[int]
    to: str
    body: str
    callback: str
    channels: _containers.RepeatedScalarFieldContainer[str]
    id: str
    send_at: str
    batch_uuid: str
    message_uuid: str
    scheduled: bool
    def __init__(self, to: _Optional[str] = ..., body: _Optional[str] = ..., callback: _Optional[str] = ..., channels: _Optional[_Iterable[str]] = ..., id: _Optional[str] = ..., send_at: _Optional[str] = ..., batch_uuid: _Optional[str] = ..., message_uuid: _Optional[str] = ..., scheduled: _Optional[bool] = ..., **kwargs) -> None: ...
