"""A lean HTTP/1.1 load generator for submit throughput: many keep-alive connections from one asyncio process.

Each connection sends one submission (one run, with its code archive) at a time and waits for
its answer, like a person or a script calling the API; ``concurrency`` is how many
submitters there are at once.  One process with raw sockets leaves the CPU of
this 2-core machine to the service under test (a Python ``requests`` client costs
about as much CPU per request as the service itself).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class Burst:
    ids: list[int]
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return len(self.ids) / self.seconds


def multipart_submission(spec: dict, archive: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"spec\"\r\n\r\n{json.dumps(spec)}\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"archive\"; filename=\"code.tar.gz\"\r\n"
        "Content-Type: application/gzip\r\n\r\n"
    ).encode() + archive + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


async def _submitter(host: str, port: int, request: bytes, remaining: list[int], burst: Burst) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while remaining[0] > 0:
            remaining[0] -= 1
            started = time.perf_counter()
            writer.write(request)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            burst.latencies.append(time.perf_counter() - started)
            if status.split()[1:2] != [b"201"]:
                raise RuntimeError(f"submission refused: {status.decode().strip()} {body[:300]!r}")
            burst.ids.append(json.loads(body)["id"])
    finally:
        writer.close()


def json_submission(spec: dict, archive: bytes) -> tuple[bytes, str]:
    """What the client library sends for small code: one JSON document with the archive in base64."""
    return json.dumps(dict(spec, archive=base64.b64encode(archive).decode())).encode(), "application/json"


async def submit_burst(url: str, token: str, spec: dict, archive: bytes, runs: int, concurrency: int,
                       encoding: str = "json") -> Burst:
    """POST ``runs`` submissions to ``url`` (…/api/runs) from ``concurrency`` connections at once.

    ``encoding`` is ``json`` (as ``nothing.magics.client`` sends code up to 1 MiB) or ``multipart``.
    """
    parts = urlsplit(url)
    encode = json_submission if encoding == "json" else multipart_submission
    body, content_type = encode(spec, archive)
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: token {token}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    burst = Burst([], 0.0, [])
    remaining = [runs]
    started = time.perf_counter()
    await asyncio.gather(*(_submitter(parts.hostname, parts.port or 80, request, remaining, burst)
                           for _ in range(concurrency)))
    burst.seconds = time.perf_counter() - started
    return burst


async def exchange(reader, writer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on a kept-alive connection: (status, lower-cased headers, body)."""
    writer.write(request)
    status = int((await reader.readline()).split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        chunks = []
        while size := int((await reader.readline()).strip(), 16):
            chunks.append(await reader.readexactly(size))
            await reader.readline()
        await reader.readline()
        body = b"".join(chunks)
    else:
        body = b""
    return status, headers, body
