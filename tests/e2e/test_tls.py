"""TLS on Envoy's listener, with a certificate authority the test makes: JSON over HTTP/1.1 and
HTTP/2 and native gRPC on the one port, verified against that CA; plain text is refused."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import trustme
from mplus.v1 import message_pb2, message_service_pb2, message_service_pb2_grpc

from server import gateway
from server.config import Settings
from tests.support.stack import SQLITE_ONLY, Stack, extra_gateway

BODY = {
    "messages": [{"from": {"type": "custom", "value": "Acme"}, "to": "441111111111", "body": "Hi"}]
}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def certificate_files(ca: trustme.CA, directory: Path) -> tuple[Path, Path]:
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = directory / "tls.crt", directory / "tls.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    return cert, key


@pytest.fixture(scope="module")
def tls_gateway(
    stack: Stack, ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    cert, key = certificate_files(ca, tmp_path_factory.mktemp("tls"))
    with extra_gateway(stack, tls_cert=cert, tls_key=key) as settings:
        yield settings


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
@SQLITE_ONLY  # TLS ends at Envoy: no database changes it
def test_json_over_tls_with_the_ca_verified(
    stack: Stack, tls_gateway: Settings, client_context: ssl.SSLContext, http2: bool
) -> None:
    with httpx.Client(verify=client_context, http1=not http2, http2=http2) as client:
        response = client.post(
            f"https://127.0.0.1:{tls_gateway.http_port}/message",
            params={"key": stack.key},
            json=BODY,
            timeout=30,
        )
    assert response.status_code == 200, response.text
    assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    assert stack.stored_count(message_uuid=response.json()["messages"][0]["messageUuid"]) == 1


@SQLITE_ONLY  # TLS ends at Envoy: no database changes it
def test_native_grpc_over_tls_with_the_ca_as_root(
    stack: Stack, tls_gateway: Settings, ca: trustme.CA
) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
    message = message_pb2.Message(to="441111111111", body="over TLS")
    getattr(message, "from").CopyFrom(message_pb2.From(type="custom", value="Acme"))
    with grpc.secure_channel(f"127.0.0.1:{tls_gateway.http_port}", credentials) as channel:
        response = message_service_pb2_grpc.MessageServiceStub(channel).AddMessages(
            message_service_pb2.AddMessagesRequest(
                batch=message_service_pb2.MessageBatch(messages=[message])
            ),
            metadata=[("x-api-key", stack.key)],
            timeout=30,
        )
    assert stack.stored_count(message_uuid=response.messages[0].message_uuid) == 1


@SQLITE_ONLY  # TLS ends at Envoy: no database changes it
def test_plain_text_to_the_tls_port_fails(stack: Stack, tls_gateway: Settings) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.post(
            f"http://127.0.0.1:{tls_gateway.http_port}/message",
            params={"key": stack.key},
            json=BODY,
            timeout=30,
        )


@SQLITE_ONLY  # TLS ends at Envoy: no database changes it
def test_a_client_that_does_not_trust_the_ca_is_refused(tls_gateway: Settings) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://127.0.0.1:{tls_gateway.http_port}/", timeout=30)


def test_a_tls_config_passes_envoy_validate(ca: trustme.CA, tmp_path: Path) -> None:
    cert, key = certificate_files(ca, tmp_path)
    settings = Settings.from_env(
        {"MPLUS_STATE_DIR": str(tmp_path), "MPLUS_TLS_CERT": str(cert), "MPLUS_TLS_KEY": str(key)}
    )
    result = gateway.validate(settings)
    assert result.returncode == 0, result.stderr
    assert "transport_sockets.tls" in gateway.render(settings)
