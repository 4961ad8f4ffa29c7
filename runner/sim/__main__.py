"""`python -m runner.sim` / `runner-sim`: serve the provider simulator on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from dataclasses import asdict
from typing import Any

from runner.errors import UserError
from runner.sim.config import SimConfig
from runner.sim.simulator import Simulator

DEFAULT_PORT = 8765


def _pairs(values: list[str], flag: str, default_key: str | None = None) -> dict[str, str]:
    """`NAME=VALUE` items (a bare VALUE means `default_key=VALUE`, where one is given)."""
    out = {}
    for item in values:
        name, sep, value = item.rpartition("=")
        if not sep:
            if default_key is None:
                raise ValueError(f"{flag} {item!r}: expected NAME=VALUE")
            name, value = default_key, item
        out[name] = value
    return out


def _value(text: str) -> Any:
    """A setting's value: JSON where it parses (`307`, `true`, `[]`), else the text itself (`soon`)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def build_config(args: argparse.Namespace) -> SimConfig:
    """The config file (if any), then each flag on top of it; ValueError names a bad one."""
    base = SimConfig.load(args.config) if args.config else SimConfig()
    data: dict[str, Any] = asdict(base)
    data["latency"] = {**base.latency, **_pairs(args.latency, "--latency", "default")}
    data["concurrency"] = {**base.concurrency, **{k: int(v) for k, v in _pairs(args.concurrency, "--concurrency").items()}}
    data["daily_limit"] = {**base.daily_limit, **{k: int(v) for k, v in _pairs(args.daily_limit, "--daily-limit").items()}}
    for item, rate in _pairs(args.fault, "--fault").items():
        point, sep, kind = item.rpartition(":")
        if not sep:
            raise ValueError(f"--fault {item}={rate}: expected POINT:KIND=RATE (POINT may be *)")
        data["faults"].setdefault(point, {})[kind] = float(rate)
    for item, text in _pairs(args.fault_detail, "--fault-detail").items():
        kind, sep, name = item.partition(":")
        if not sep or not name:
            raise ValueError(f"--fault-detail {item}={text}: expected KIND:SETTING=VALUE")
        data["fault_details"].setdefault(kind, {})[name] = _value(text)
    for flag, key in (("seed", "seed"), ("speed", "speed"), ("pending", "pending_s"), ("url_ttl", "url_ttl_s"),
                      ("ledger", "ledger_path"), ("state", "state_path")):
        if getattr(args, flag) is not None:
            data[key] = getattr(args, flag)
    data["keys"] = {**base.keys, **_pairs(args.key, "--key")}
    return SimConfig(**data)


def port_number(text: str) -> int:
    """A TCP port: argparse reports anything else as a usage error (exit 2), not a traceback."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0 to 65535)")
    return port


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runner.sim", description=(
        "Serve the simulated APIs of every installed provider that has a simulator on 127.0.0.1 "
        "(one port: /<provider> for each, /files, /_sim)."))
    p.add_argument("--port", type=port_number, help=f"port on 127.0.0.1 (0: any free one; default {DEFAULT_PORT}; with --state, "
                                            "0 or none: the port the file was last served on, else one derived from its path)")
    p.add_argument("--config", help="YAML or JSON file with SimConfig settings")
    p.add_argument("--latency", action="append", default=[], metavar="[NAME=]MIN:MAX",
                   help="task run time in seconds, for a model, a provider or (bare) every model")
    p.add_argument("--concurrency", action="append", default=[], metavar="NAME=N",
                   help="tasks running at once for a provider (its whole account) or a model")
    p.add_argument("--daily-limit", action="append", default=[], metavar="NAME=N",
                   help="accepted submissions per UTC day for a provider or a model (then 429)")
    p.add_argument("--fault", action="append", default=[], metavar="POINT:KIND=RATE",
                   help="fault rate, e.g. runway.poll:http_503=0.05 or '*:reset=0.01'")
    p.add_argument("--fault-detail", action="append", default=[], metavar="KIND:SETTING=VALUE",
                   help="a setting for faults of a kind drawn at a rate, e.g. http_503:retry_after=soon or redirect:status=307")
    p.add_argument("--speed", type=float, help="clock speed factor (2: everything takes half as long)")
    p.add_argument("--pending", type=float, help="seconds a task is PENDING / IN_QUEUE before it runs")
    p.add_argument("--seed", type=int, help="seed for latencies and fault draws")
    p.add_argument("--url-ttl", type=float, help="seconds an output URL stays valid")
    p.add_argument("--ledger", help="append the billing ledger to this JSONL file")
    p.add_argument("--state", metavar="FILE", help="persist tasks, uploads and the ledger to this JSONL file and "
                                                   "restore them on start (stop, start again: every task is still there)")
    p.add_argument("--key", action="append", default=[], metavar="PROVIDER=KEY",
                   help="the API key to accept for a provider instead of its simulator's own. Repeatable")
    return p


def banner(sim: Simulator) -> str:
    """What it serves, the keys it takes, and how to point the runner and the SDKs at it."""
    from runner import plugins

    state = ""
    if sim.state_path is not None:
        restored = len(sim.ledger())
        also = f"; also on {', '.join(map(str, sim.ports[1:]))} (earlier runs' URLs)" if len(sim.ports) > 1 else ""
        state = f"\nState   {sim.state_path} ({restored} task(s) restored{also})"
    hosted = [(provider, sim.app.handlers[provider]) for provider in sim.providers]
    width = max([len(handler.title or provider) for provider, handler in hosted] + [6])
    served = [f"  {handler.title or provider:<{width}}  {sim.url(provider)}   key {sim.keys[provider]}" for provider, handler in hosted]
    classes = plugins.registry().providers
    exports = [f"  export {classes[p].key_env[0]}={sim.keys[p]}" for p in sim.providers if p in classes and classes[p].key_env]
    urls = [f"providers.{p}.base_url={sim.url(p)}" for p in sim.providers]
    urls += [f"providers.{p}.endpoints.{name}={url}" for p in sim.providers for name, url in sim.endpoints(p).items()]
    lines = [f"video-runner provider simulator on {sim.base_url}{state}", *served, "", "Point the runner at it:", *exports,
             "  python -m runner ... " + " ".join(urls)]
    lines += [line for _, handler in hosted for line in handler.clients()]
    lines += [f"Control: GET {sim.base_url}/_sim/ledger | /_sim/stats ; POST {sim.base_url}/_sim/faults", "Ctrl-C to stop."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    port = args.port if args.port is not None else (0 if args.state else DEFAULT_PORT)
    try:
        sim = Simulator(build_config(args), port=port)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    quiet = logging.getLogger("runner.sim")  # its warnings are printed below, once
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    try:
        sim.start()
    except UserError as exc:  # the state file: in use by another simulator, or unreadable
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot listen on 127.0.0.1:{port}: {exc}", file=sys.stderr)
        return 1
    for warning in sim.warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    print(banner(sim), flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        server = sim.stats()["server"]
        try:
            print(f"stopped after {server['requests']} requests "
                  f"(server time per request: {server['mean_ms']:.3f} ms wall, {server['cpu_mean_ms']:.3f} ms CPU)", flush=True)
        except OSError:  # whoever read our output has gone
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
