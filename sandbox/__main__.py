"""``python -m sandbox serve``: the sandbox over loopback HTTPS, until SIGTERM or SIGINT.

    python -m sandbox serve [--port P] [--admin-port P] [--seed FILE|demo]
                            [--connection-file PATH] [--clock manual|real] [--seed-random N]

Writes the connection file (see :mod:`sandbox.connection`) once every listener is up and the
seed is applied, and removes it on shutdown. Exit status 2 on a bad seed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from sandbox import seeds
from sandbox.clock import MANUAL, REAL, SandboxClock
from sandbox.server import SandboxServer
from sandbox.world import World


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description="A local Azure for keysteward.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve ARM, Key Vault and the admin API over loopback HTTPS")
    serve.add_argument("--port", type=int, default=0, help="ARM port (0 = any free port)")
    serve.add_argument("--admin-port", type=int, default=0, help="admin API port (0 = any free port)")
    serve.add_argument("--seed", help="seed file to apply at start, or 'demo' for the bundled estate")
    serve.add_argument("--connection-file", help="where to write the connection JSON")
    serve.add_argument("--clock", choices=(MANUAL, REAL), default=MANUAL, help="sandbox clock mode")
    serve.add_argument("--seed-random", type=int, default=None, help="random seed for faults and deliveries")
    serve.add_argument("--workdir", help="where to write the CA bundle (default: a temporary directory)")
    return parser


def serve(args: argparse.Namespace) -> int:
    doc = None
    if args.seed:
        try:
            doc = seeds.demo_seed() if args.seed == "demo" else seeds.load_seed_file(args.seed)
            plan = seeds.compile_seed(doc)
        except seeds.SeedError as err:
            print(f"sandbox: bad seed: {err}", file=sys.stderr)
            return 2
    world = World(clock=SandboxClock(mode=args.clock), seed=args.seed_random)
    server = SandboxServer(world, arm_port=args.port, admin_port=args.admin_port, workdir=args.workdir)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001 - signal handler signature
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    try:
        if doc is not None:
            try:
                result = seeds.apply_plan(world, plan)
            except seeds.SeedApplyError as err:
                print(f"sandbox: seeding failed: {err}", file=sys.stderr)
                return 2
            print(f"sandbox: {seeds.seed_summary(result, world.clock.now())}", file=sys.stderr)
        # Only now does the connection file appear: a watcher that sees it gets a seeded world.
        if args.connection_file:
            server.connection_file = _path(args.connection_file)
            server.write_connection_file()
        print(f"sandbox: ARM {server.arm_url}  admin {server.admin_url}  CA {server.ca_bundle}", file=sys.stderr)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


def _path(text: str) -> Path:
    return Path(text).expanduser().resolve()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return 2  # argparse already refuses unknown commands


if __name__ == "__main__":
    sys.exit(main())
