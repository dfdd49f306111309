from google.api import annotations_pb2 as _annotations_pb2
from mplus.v1 import message_pb2 as _message_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AddMessagesRequest(_message.Message):
    __slots__ = ("key", "is_dryrun", "dry_run", "batch")
    KEY_FIELD_NUMBER: _ClassVar[int]
    IS_DRYRUN_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    key: str
    is_dryrun: bool
    dry_run: bool
    batch: MessageBatch
    def __init__(self, key: _Optional[str] = ..., is_dryrun: _Optional[bool] = ..., dry_run: _Optional[bool] = ..., batch: _Optional[_Union[MessageBatch, _Mapping]] = ...) -> None: ...

class MessageBatch(_message.Message):
    __slots__ = ("messages", "defaults")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_message_pb2.Message]
    defaults: _message_pb2.Defaults
    def __init__(self, messages: _Optional[_Iterable[_Union[_message_pb2.Message, _Mapping]]] = ..., defaults: _Optional[_Union[_message_pb2.Defaults, _Mapping]] = ...) -> None: ...

class AddMessagesResponse(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_message_pb2.AddedMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[_message_pb2.AddedMessage, _Mapping]]] = ...) -> None: ...
