"""Plays App Service Authentication (Easy Auth) in front of the local Functions host, so a
browser can open the on-call page of `make run`: every request is forwarded to the host with
the ``X-MS-CLIENT-PRINCIPAL`` header of one fixed principal, as Easy Auth adds it in Azure.

    python -m scripts.easyauth [--port 7072] [--target http://127.0.0.1:7071] [--roles KeySteward.Read]

then open ``http://127.0.0.1:7072/api/ui?code=<function key>`` (the key is in .run/local.settings.json,
``KEYSTEWARD_LOCAL_FUNCTION_KEY``; `make run` prints the address). Development only: it listens on
loopback, never deployed; the host must trust the header (``KEYSTEWARD_TRUST_PRINCIPAL_HEADER``,
which `make run` sets).
"""

from __future__ import annotations

import argparse
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from scripts.stack import principal_header

PRINCIPAL_HEADER = "X-MS-CLIENT-PRINCIPAL"
# Hop-by-hop headers (RFC 9110 section 7.6.1) and those the forwarder sets itself.
_DROP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
         "proxy-authenticate", "host", "content-length", PRINCIPAL_HEADER.lower()}


def make_server(target: str, principal: str, *, port: int = 7072) -> ThreadingHTTPServer:
    """A loopback server forwarding to ``target`` with ``principal`` (an encoded header value)."""
    session = requests.Session()

    class Forward(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _DROP}
            # Like Easy Auth: a principal header sent by the client is never passed on.
            headers[PRINCIPAL_HEADER] = principal
            try:
                answer = session.request(self.command, target.rstrip("/") + self.path, headers=headers, data=body,
                                         timeout=60, allow_redirects=False)
            except requests.RequestException as err:
                self.send_error(502, f"the Functions host did not answer ({type(err).__name__})")
                return
            self.send_response(answer.status_code)
            for name, value in answer.headers.items():
                if name.lower() not in _DROP and name.lower() != "content-encoding":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write("easyauth: " + (format % args) + "\n")

    return ThreadingHTTPServer(("127.0.0.1", port), Forward)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.easyauth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=7072)
    parser.add_argument("--target", default="http://127.0.0.1:7071")
    parser.add_argument("--name", default="oncall@contoso.example")
    parser.add_argument("--object-id", default="11111111-2222-3333-4444-555555555555")
    parser.add_argument("--roles", default="KeySteward.Read", help="comma-separated app roles")
    args = parser.parse_args(argv)
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    server = make_server(args.target, principal_header(args.name, args.object_id, roles), port=args.port)
    print(f"Easy Auth stand-in on http://127.0.0.1:{server.server_address[1]} -> {args.target} "
          f"as {args.name} ({', '.join(roles)}); Ctrl-C stops it", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
