"""deploy/nginx/carehub.conf with a real nginx: FHIR writes reach the write pool, everything
else the read pool, and each pool is the other's backup.

The two pools run the same `hub serve --roles api`; the write pool runs at a lower CPU
priority (deploy/systemd/carehub-api-writes@.service, deploy/up.sh) so that a burst of
messages leaves the readers the cores (bench/mixed.py). The pools are a priority, not a
boundary: any API process answers any request. So what must hold is that the requests land
where the priority means them to, and that with one pool down nothing is refused. The
backends here are plain HTTP servers that say which port answered; deploy/up.sh (CI) runs
the hub itself behind the same file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.delivery.receivers import free_port

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                  else None)

if NGINX is None:
    if os.environ.get("CI"):
        raise RuntimeError("nginx is missing under CI (scripts/test.sh installs it)")
    pytest.skip("nginx is not installed", allow_module_level=True)


class _Backend:
    """An HTTP server on a port of its own that answers every request with its name and
    what it was asked, and can be taken down (its kept-alive connections closed too, as a
    killed process's are) and brought back on the same port."""

    def __init__(self, name: str) -> None:
        self.name, self.port = name, free_port()
        self.server: http.server.ThreadingHTTPServer | None = None
        self.connections: set[socket.socket] = set()

    def up(self) -> None:
        if self.server is not None:
            return
        name, connections = self.name, self.connections

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                connections.add(self.connection)

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                out = f"{name} {self.command} {self.path} {len(body)}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(out)))
                self.send_header("X-Backend", name)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _answer  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        for conn in list(self.connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.connections.clear()


def _self_signed(tls: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    (tls / "carehub.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tls / "carehub.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client,
                                                                        dict[str, _Backend]]]:
    tmp = tmp_path_factory.mktemp("nginx-pools")
    (tmp / "tls").mkdir()
    _self_signed(tmp / "tls")
    backends = {name: _Backend(name) for name in ("read1", "read2", "write1", "write2")}
    for b in backends.values():
        b.up()
    tls_port = free_port()
    subprocess.run(["bash", str(ROOT / "deploy/nginx/render.sh"), str(tmp), str(tls_port),
                    str(free_port())] + [str(b.port) for b in backends.values()], check=True)
    conf = ["-c", str(tmp / "nginx/nginx.conf"), "-p", str(tmp / "nginx")]
    subprocess.run([NGINX, "-t", "-q", *conf], check=True)
    subprocess.run([NGINX, *conf], check=True)
    client = httpx.Client(base_url=f"https://127.0.0.1:{tls_port}",
                          verify=ssl.create_default_context(cafile=tmp / "tls/carehub.crt"),
                          timeout=10)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.get("/fhir/metadata")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield client, backends
    finally:
        client.close()
        pid = (tmp / "nginx/nginx.pid").read_text().strip()
        subprocess.run(["kill", "-QUIT", pid], check=False)
        for b in backends.values():
            b.down()


def _pool(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.headers["X-Backend"].rstrip("12")


READS = [
    ("GET", "/fhir/Patient/p1"),
    ("GET", "/fhir/Patient?identifier=urn:oid:2.16.578.1.12.4.1.4.1|13116900216"),
    ("HEAD", "/fhir/metadata"),
    ("POST", "/fhir/Patient/_search"),      # a search by POST is a read
    ("POST", "/fhir/_search"),
    ("POST", "/auth/token"),                # sign-in and tokens: short, someone waits
    ("GET", "/ui/"),
    ("POST", "/ui/sign-in"),
    ("POST", "/ui/deliveries/d1/replay"),   # a coordinator's form: a person waits
    ("GET", "/ui/audit/people"),
]
WRITES = [
    ("POST", "/fhir/$process-message"),
    ("POST", "/fhir/Patient"),
    ("POST", "/fhir"),                      # a transaction or batch
    ("PUT", "/fhir/Patient/p1"),
    ("PATCH", "/fhir/Patient/p1"),
    ("DELETE", "/fhir/Flag/f1"),
    ("POST", "/fhir/Patient/_search/../../Flag"),  # normalised to /fhir/Flag: a create
]


@pytest.mark.parametrize(("method", "path"), READS)
def test_reads_and_people_go_to_the_read_pool(proxy, method, path):
    client, _ = proxy
    assert _pool(client.request(method, path, content=b"{}" if method != "GET" else None)) \
        == "read"


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_fhir_writes_go_to_the_write_pool(proxy, method, path):
    client, _ = proxy
    r = client.request(method, path, content=b'{"resourceType": "Bundle"}')
    assert _pool(r) == "write"
    assert r.text.endswith(" 26")  # the body arrived whole


def test_each_pool_spreads_over_its_processes(proxy):
    client, _ = proxy
    reads = {client.get("/fhir/Patient/p1").headers["X-Backend"] for _ in range(12)}
    writes = {client.post("/fhir/$process-message", content=b"{}").headers["X-Backend"]
              for _ in range(12)}
    assert reads == {"read1", "read2"}
    assert writes == {"write1", "write2"}


def test_with_one_pool_down_the_other_answers_for_it(proxy):
    """The write pool stopped (a failed deploy, both units crashed): messages are still
    taken, by the read pool, from the first request on; and the other way round. With one
    process of a pool down its partner takes its share, the backups idle."""
    client, backends = proxy
    try:
        backends["write1"].down()
        got = {client.post("/fhir/$process-message", content=b"{}").headers["X-Backend"]
               for _ in range(6)}
        assert got == {"write2"}
        backends["write2"].down()
        for _ in range(6):
            assert _pool(client.post("/fhir/$process-message", content=b"{}")) == "read"
        assert _pool(client.get("/fhir/Patient/p1")) == "read"
    finally:
        backends["write1"].up()
        backends["write2"].up()
    try:
        backends["read1"].down()
        backends["read2"].down()
        for _ in range(6):
            assert _pool(client.get("/fhir/Patient/p1")) == "write"
            assert _pool(client.post("/auth/token", content=b"x")) == "write"
    finally:
        backends["read1"].up()
        backends["read2"].up()
