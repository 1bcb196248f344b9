"""The SuperLink host's only public door: the Fleet API, over TLS, and nothing else.

Chapter: "From simulation to deployment". Flower 1.42 serves its three APIs on **one** HTTP
port (``flower-superlink --host --port``): the Fleet API (``/v1/fleet/...``, what SuperNodes
use), the Control API (``/v1/control/...``: register node keys, ``flwr run``, ``flwr stop``,
``flwr log``) and the Runtime API (``/v1/runtime/...``: the ServerApp's; in the default
``--isolation subprocess`` its ``AcquireTask`` hands the ServerApp's task token to whoever
asks). The open-source release has no credential on the Control API (its OIDC plugin ships
only with Flower's enterprise edition) and the Runtime API's SuperExec secret works only with
``--isolation process``. A SuperLink listening on a public address therefore lets anyone who
reaches it register their own node key, run their own code on every node and take the
ServerApp's task (issue 31 showed the first two).

So the launcher (``launch.py superlink``) binds the SuperLink to the host's loopback and puts
this gateway on the public address. It terminates TLS with the SuperLink's certificate and
forwards only ``POST /v1/fleet/<name>`` (the exact route names Flower 1.42 defines, checked on
the raw request path, so ``..`` or percent-escapes cannot smuggle another route in) to the
SuperLink on loopback, again over TLS; anything else gets ``403`` and is never forwarded.
SuperNode authentication is untouched: the node's signature headers go through as sent and
the SuperLink checks them (``--enable-supernode-auth``). The operator reaches the Control API
on the SuperLink host itself, or through an SSH tunnel to its loopback (see the chapter).

Usage: ``python deploy/fleet_gateway.py --listen HOST:PORT --superlink 127.0.0.1:PORT
--certfile server.pem --keyfile server.key --ca-certfile ca.crt`` (``--insecure``: plain HTTP
on both sides, for a rehearsal only).
"""

from __future__ import annotations

import argparse
import re
import ssl
import sys

# Flower 1.42's Fleet routes (flwr/superlink/routers/fleet/router.py), the only ones forwarded.
FLEET_ROUTES = frozenset({
    "register-node", "activate-node", "deactivate-node", "unregister-node", "send-node-heartbeat",
    "pull-messages", "push-messages", "get-run", "get-fab", "push-object", "pull-object",
    "confirm-message-received"})
ROUTE = re.compile(rb"/v1/fleet/([a-z-]+)")
# Headers that describe one hop, not the request (RFC 9110 7.6.1), and the ones we set again.
HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
                 b"te", b"trailer", b"transfer-encoding", b"upgrade", b"host", b"content-length"})


def allowed(method: str, raw_path: bytes, query: bytes) -> bool:
    """``True`` only for ``POST /v1/fleet/<one of FLEET_ROUTES>`` without a query string."""
    m = ROUTE.fullmatch(raw_path)
    return method == "POST" and not query and m is not None and m.group(1).decode() in FLEET_ROUTES


def make_app(upstream: str, ca_certfile: str | None, timeout: float = 120.0):
    """The ASGI application: forward allowed requests to ``upstream`` (``https://127.0.0.1:P``)."""
    import httpx

    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_certfile) if ca_certfile else False
    client = httpx.AsyncClient(base_url=upstream, verify=verify, timeout=timeout)

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        raw = scope.get("raw_path") or scope["path"].encode()
        if not allowed(scope["method"], raw, scope.get("query_string", b"")):
            await _answer(send, 403, b"only the Fleet API is served on this address\n")
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP]
        try:
            reply = await client.post(raw.decode(), content=body, headers=headers)
        except httpx.TransportError as e:  # the SuperLink is down or restarting: nodes retry on 502
            await _answer(send, 502, f"SuperLink unreachable: {type(e).__name__}\n".encode())
            return
        out = [(k.lower(), v) for k, v in reply.headers.raw
               if k.lower() not in HOP and k.lower() != b"content-encoding"]
        await send({"type": "http.response.start", "status": reply.status_code,
                    "headers": [*out, (b"content-length", str(len(reply.content)).encode())]})
        await send({"type": "http.response.body", "body": reply.content})

    return app


async def _answer(send, status: int, text: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(text)).encode())]})
    await send({"type": "http.response.body", "body": text})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, help="host:port to serve the Fleet API on")
    p.add_argument("--superlink", required=True, help="the SuperLink's host:port (its loopback)")
    p.add_argument("--certfile", help="TLS certificate (PEM) presented to the SuperNodes")
    p.add_argument("--keyfile", help="its private key (PEM)")
    p.add_argument("--ca-certfile", help="CA that signed the SuperLink's certificate")
    p.add_argument("--insecure", action="store_true", help="plain HTTP on both sides (rehearsal only)")
    args = p.parse_args(argv)
    if not args.insecure and not (args.certfile and args.keyfile and args.ca_certfile):
        sys.exit("fleet_gateway: --certfile, --keyfile and --ca-certfile are required unless --insecure")
    import uvicorn

    host, _, port = args.listen.rpartition(":")
    scheme = "http" if args.insecure else "https"
    app = make_app(f"{scheme}://{args.superlink}", None if args.insecure else args.ca_certfile)
    tls = {} if args.insecure else {"ssl_certfile": args.certfile, "ssl_keyfile": args.keyfile}
    print(f"fleet gateway: {scheme}://{host}:{port}/v1/fleet/* -> {scheme}://{args.superlink} "
          "(every other path: 403)", flush=True)
    uvicorn.run(app, host=host, port=int(port), log_level="warning", access_log=False, **tls)


if __name__ == "__main__":
    main()
