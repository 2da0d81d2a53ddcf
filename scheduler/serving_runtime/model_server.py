"""One model-server replica: the model behind KServe's own Python server, speaking V1 and the Open Inference Protocol.

KServe's ModelServer is the server KServe itself runs in its predictor containers: it answers
``POST /v1/models/NAME:predict`` (``{"instances": [...]}`` -> ``{"predictions": [...]}``),
``POST /v2/models/NAME/infer``, ``GET /v1/models/NAME`` and ``GET /v2/health/ready``; we only add loading the
model (``loaders``) and telling the platform where we listen.  Run by the serving runtime's interpreter:

    model_server.py --name NAME --framework F --format FMT --port-file FILE [--model-dir DIR] [--host H] [--port P]

The port file (``{"host", "port", "pid"}``, written atomically) appears once the model is loaded and the port
is listening, so its existence means "ready to serve".  When the platform put a secret in ``replica.token`` (in
the working folder), every request must carry it in ``X-Nothing-Replica`` or is answered 403: only the
platform's gateway may call a replica, not any local user who finds its port.  A model that does not load
ends the process with status 1 and one line on stderr saying why (the platform shows a replica's last log lines).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import socket
import sys
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import loaders


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve one model with KServe's model server (V1 and V2 REST).")
    parser.add_argument("--name", required=True, help="the model's name in the URLs (/v1/models/NAME:predict)")
    parser.add_argument("--framework", required=True, help="tensorflow, pytorch or python")
    parser.add_argument("--format", required=True, dest="fmt", help="savedmodel, pytorch, mar or python")
    parser.add_argument("--model-dir", type=Path, default=os.environ.get("EM_DATASET_MODEL"),
                        help="the model's artifact folder (default: $EM_DATASET_MODEL)")
    parser.add_argument("--port-file", type=Path, required=True, help='where to write {"host", "port", "pid"}')
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one")
    args = parser.parse_args(argv)
    if args.model_dir is None:
        parser.error("--model-dir is required when EM_DATASET_MODEL is not set")
    return args


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: the kernel picks a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: uvicorn writes an answer's head and body apart, and without it the body
    # waits for the client's delayed ACK (40 ms per request on Linux, measured).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def write_port_file(path: Path, host: str, port: int) -> None:
    """Atomically, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps({"host": host, "port": port, "pid": os.getpid()}))
    os.replace(temporary, path)


REPLICA_TOKEN_FILE = "replica.token"  # the platform puts it in the run's source folder (the working directory)


def read_replica_token() -> bytes:
    """The secret the platform's gateway sends in ``X-Nothing-Replica``; empty when served outside the platform."""
    try:
        return Path(REPLICA_TOKEN_FILE).read_bytes().strip()
    except FileNotFoundError:
        return b""


IN_FLIGHT_PATH = "/nothing/in-flight"


class ReplicaGuard:
    """Refuses (403) any HTTP request without the replica's secret, so the port is no way around the platform's
    access rules for other accounts on the machine.  A plain ASGI middleware: one header compare per request.

    It also counts the requests being answered, and tells the platform at ``GET /nothing/in-flight``
    (``{"in_flight": N}``): requests reach a replica through nginx as well as the platform's Python gateway, so
    only the replica knows when a drained one has finished its last."""

    def __init__(self, app, token: bytes):
        self.app, self.token = app, token
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", ()) if k == b"x-nothing-replica"), b"")
        if not hmac.compare_digest(given, self.token):
            await _answer(send, 403, b'{"error": "call this model through the platform (/serve/...)"}')
            return
        if scope.get("path") == IN_FLIGHT_PATH:
            await _answer(send, 200, json.dumps({"in_flight": self.in_flight}).encode())
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


async def _answer(send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def serve(args: argparse.Namespace, predictor: loaders.Predictor) -> None:
    sys.argv = sys.argv[:1]  # kserve parses sys.argv when imported: ours are not its flags
    import kserve
    from kserve.errors import InvalidInput
    from kserve.logging import configure_logging
    from kserve.protocol.infer_type import InferRequest
    from kserve.utils.utils import get_predict_response

    class ServedModel(kserve.Model):
        """V1 bodies carry instances; a V2 request's first input's rows are the instances, answered as the
        output ``output-0``.  Predictions run one at a time on a thread of their own, so the event loop keeps
        answering health checks during a long one, and a handler need not be thread-safe."""

        def __init__(self):
            super().__init__(predictor.name)
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
            self.ready = True

        async def predict(self, payload, headers=None, response_headers=None):
            if isinstance(payload, InferRequest):
                if not payload.inputs:
                    raise InvalidInput("the request has no inputs")
                tensor = payload.inputs[0]
                if tensor.datatype == "BYTES" and tensor.data and isinstance(tensor.data[0], str):
                    instances = list(tensor.data)
                else:
                    instances = tensor.as_numpy().tolist()
                return get_predict_response(payload, await self.run(instances), self.name)
            instances = payload.get("instances") if isinstance(payload, dict) else None
            if not isinstance(instances, list):
                raise InvalidInput('expected a JSON body {"instances": [...]}')
            return {"predictions": await self.run(instances)}

        async def run(self, instances: list) -> list:
            return await asyncio.get_running_loop().run_in_executor(self.executor, predictor.predict, instances)

    class BoundModelServer(kserve.ModelServer):
        """KServe's ModelServer on a socket bound before it starts: on ``--host`` (KServe binds every interface
        itself), and listening already when the port file names it, so no early connection is refused."""

        def setup_event_loop(self):  # start() calls this once its REST server is made, before that serves
            uvicorn_server = self._rest_server._server
            serve = uvicorn_server.serve
            uvicorn_server.serve = lambda: serve(sockets=[sock])
            super().setup_event_loop()

    token = read_replica_token()
    if token:
        kserve.model_server.app.add_middleware(ReplicaGuard, token=token)
    configure_logging()
    for quiet in ("uvicorn.access", "kserve.trace"):  # no line per request: they cost more than a prediction
        logging.getLogger(quiet).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")  # kserve's, once per process
    try:
        sock = listen(args.host, args.port)
    except OSError as e:  # a port the platform chose was taken meanwhile: it starts the replica again on another
        print(f"model_server: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    port = sock.getsockname()[1]
    server = BoundModelServer(http_port=port, workers=1, enable_grpc=False, enable_latency_logging=False)
    write_port_file(args.port_file, args.host, port)
    server.start([ServedModel()])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        predictor = loaders.load_model(args.model_dir, args.framework, args.fmt, args.name)
    except loaders.LoadError as e:
        print(f"model_server: cannot load model {args.name!r}: {e}", file=sys.stderr, flush=True)
        return 1
    except Exception as e:  # the user's load code: its traceback helps, the last line says what happened
        traceback.print_exc()
        print(f"model_server: cannot load model {args.name!r}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 1
    serve(args, predictor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
