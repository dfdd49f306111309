"""CarrierService over gRPC: a carrier gateway's receipts for the http driver, authenticated by
the driver's own secret; translate, one call of the receipt intake, translate."""

from __future__ import annotations

import hmac

import grpc
from mplus.v1 import carrier_service_pb2 as pb

from server.api import errors, http_query, wire
from server.api.batch_translate import Metadata
from server.api.observability import Telemetry
from server.delivery.drivers.http import CARRIER, gateway_receipt
from server.delivery.receipts import ReceiptIntake
from server.domain.errors import InvalidRequest, Unauthenticated

SERVICE = pb.DESCRIPTOR.services_by_name["CarrierService"]
SERVICE_NAME: str = SERVICE.full_name
REPORT_RECEIPT = http_query.QueryRule("POST /drivers/http/receipts", key=False)
BEARER = "bearer "


class CarrierServicer:
    def __init__(self, intake: ReceiptIntake, secret: str, telemetry: Telemetry) -> None:
        self._intake = intake
        self._secret = secret.encode()
        self._telemetry = telemetry

    def ReportReceipt(
        self, request: bytes, context: grpc.ServicerContext
    ) -> pb.ReportReceiptResponse:
        metadata = context.invocation_metadata()
        with self._telemetry.request(metadata, "ReportReceipt") as record:
            try:
                self._authenticate(metadata)
                parsed = wire.parse(pb.ReportReceiptRequest, request)
                violations = http_query.query_violations(
                    http_query.original_query(metadata), REPORT_RECEIPT
                )
                if violations:
                    raise InvalidRequest(violations)
                receipt = gateway_receipt(parsed.id, parsed.code, parsed.description)
                [matched] = self._intake(CARRIER, [receipt])
                return pb.ReportReceiptResponse(matched=matched.value)
            except Exception as error:
                refusal = errors.refusal_for(error)
                record.refused(refusal, error)
                context.abort_with_status(refusal.status)

    def _authenticate(self, metadata: Metadata) -> None:
        """`authorization: Bearer <secret>`, compared in constant time."""
        given = [v for k, v in metadata if k == "authorization" and isinstance(v, str)]
        if not self._secret:
            raise Unauthenticated(
                "receipts from a carrier gateway are off: MPLUS_HTTP_DRIVER_SECRET is not set"
            )
        if len(given) != 1 or not given[0].lower().startswith(BEARER):
            raise Unauthenticated(
                "the carrier gateway's secret is required: authorization: Bearer <secret>"
            )
        if not hmac.compare_digest(given[0][len(BEARER) :].encode(), self._secret):
            raise Unauthenticated("the carrier gateway's secret is wrong")

    def register(self, server: grpc.Server) -> None:
        wire.register(server, SERVICE, self)
