"""BatchService over gRPC: translate the request, make one call, translate the result."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc
from google.protobuf import message as protobuf_message
from mplus.v1 import batch_service_pb2 as pb

from server.api import batch_translate, errors, http_query, wire
from server.api.observability import Telemetry
from server.service.batches import BatchCall, Batches

SERVICE = pb.DESCRIPTOR.services_by_name["BatchService"]
SERVICE_NAME: str = SERVICE.full_name

Request = TypeVar("Request", bound=protobuf_message.Message)
Response = TypeVar("Response", bound=protobuf_message.Message)
Authenticated = Callable[[str], None]


class BatchServicer:
    """Each method names its request type, its query rule and one call of the use cases;
    `_serve` does the rest the same way for all: the raw request parsed (see wire.parse),
    the key and query string read, one log line and the metrics, any error as its status."""

    def __init__(self, batches: Batches, telemetry: Telemetry) -> None:
        self._batches = batches
        self._telemetry = telemetry

    def GetBatch(self, request: bytes, context: grpc.ServicerContext) -> pb.GetBatchResponse:
        def answer(
            r: pb.GetBatchRequest, call: BatchCall, who: Authenticated
        ) -> pb.GetBatchResponse:
            report = self._batches.report(call, r.batch_uuid, r.details, who)
            return batch_translate.get_batch_response(report)

        return self._serve(context, request, pb.GetBatchRequest, http_query.GET_BATCH, answer)

    def ListPendingBatches(
        self, request: bytes, context: grpc.ServicerContext
    ) -> pb.ListPendingBatchesResponse:
        def answer(
            _r: pb.ListPendingBatchesRequest, call: BatchCall, who: Authenticated
        ) -> pb.ListPendingBatchesResponse:
            return batch_translate.list_pending_batches_response(self._batches.pending(call, who))

        rule = http_query.LIST_PENDING_BATCHES
        return self._serve(context, request, pb.ListPendingBatchesRequest, rule, answer)

    def CancelBatch(self, request: bytes, context: grpc.ServicerContext) -> pb.CancelBatchResponse:
        def answer(
            r: pb.CancelBatchRequest, call: BatchCall, who: Authenticated
        ) -> pb.CancelBatchResponse:
            self._batches.cancel(call, r.batch_uuid, who)
            return pb.CancelBatchResponse()

        return self._serve(context, request, pb.CancelBatchRequest, http_query.CANCEL_BATCH, answer)

    def ListReceiptCodes(
        self, request: bytes, context: grpc.ServicerContext
    ) -> pb.ListReceiptCodesResponse:
        def answer(
            _r: pb.ListReceiptCodesRequest, call: BatchCall, _who: Authenticated
        ) -> pb.ListReceiptCodesResponse:
            return batch_translate.list_receipt_codes_response(self._batches.receipt_codes(call))

        rule = http_query.LIST_RECEIPT_CODES
        return self._serve(context, request, pb.ListReceiptCodesRequest, rule, answer)

    def _serve(
        self,
        context: grpc.ServicerContext,
        request: bytes,
        request_type: type[Request],
        rule: http_query.QueryRule,
        answer: Callable[[Request, BatchCall, Authenticated], Response],
    ) -> Response:
        metadata = context.invocation_metadata()
        rpc = request_type.DESCRIPTOR.name.removesuffix("Request")
        with self._telemetry.request(metadata, rpc) as record:
            try:
                parsed = wire.parse(request_type, request)
                key = getattr(parsed, "key", "")  # ListReceiptCodes takes none
                call = batch_translate.batch_call(key, metadata, rule)
                return answer(parsed, call, record.authenticated)
            except Exception as error:
                refusal = errors.refusal_for(error)
                record.refused(refusal, error)
                context.abort_with_status(refusal.status)

    def register(self, server: grpc.Server) -> None:
        wire.register(server, SERVICE, self)
