"""The admin API under ``/sandbox/``: drive the sandbox while it runs.

Served on the admin host in-process (``https://sandbox.local``) and on the loopback server's
``admin_url``. Route names and body fields are a contract used by tests outside this project:

- ``GET|POST /sandbox/clock`` (``advance`` ISO-8601 duration, ``set`` ISO-8601 instant, ``mode``)
- ``GET|POST /sandbox/lro`` (``duration_s``, ``fail_rate``)
- ``GET|POST|DELETE /sandbox/faults`` (``rules``: see :meth:`sandbox.faults.FaultRule.parse`)
- ``GET|POST /sandbox/throttle`` (fields of :class:`sandbox.faults.ThrottleSettings`)
- ``GET|POST /sandbox/services`` (fields of :class:`sandbox.world.ServiceSettings`)
- ``GET|POST /sandbox/event-subscriptions``, ``GET|DELETE /sandbox/event-subscriptions/{id}``,
  ``GET /sandbox/event-subscriptions/{id}/validate?code=`` (the manual validation URL)
- ``GET /sandbox/deliveries?since=N``, ``GET /sandbox/dead-letters``, ``GET /sandbox/events``
- ``GET /sandbox/requests?since=N``
- ``GET /sandbox/state`` (summary counts), ``POST /sandbox/reset``
- ``POST /sandbox/seed`` (a seed document, see :mod:`sandbox.seeds`)
- ``GET|POST|DELETE /sandbox/consumers``: identities nobody inventories that unwrap with one key
  version on a schedule in sandbox time; ``POST {"principal_id": GUID, "key": versioned key URI,
  "every_s": seconds}`` adds one, ``DELETE`` removes them all (see :mod:`sandbox.audit`)
- ``GET|POST /sandbox/audit`` (``ingestion_delay_s``, ``partial``; ``GET`` also gives
  ``workspace_id`` and ``records``), ``GET /sandbox/audit/records`` (every ingested record)

A bad body answers 400 ``{"error": {"code": "BadParameter", "message", "target": <field>}}``
and changes nothing: every field is checked before anything is applied.
"""

# ruff: noqa: ARG001
# (every route handler takes (world, req, match), whether or not it needs all three)
from __future__ import annotations

import dataclasses
import math
import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sandbox import audit, seeds, services
from sandbox import clock as clockmod
from sandbox.eventgrid import SCHEMAS
from sandbox.faults import FaultRule, ThrottleSettings
from sandbox.wire import JsonObj, Request, Response, Router, SandboxError, empty_response, json_response

if TYPE_CHECKING:
    from sandbox.world import World

ROUTER = Router(case_insensitive=False)


class FieldError(SandboxError):
    """400 naming the body field at fault."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(400, "BadParameter", f"{field_name}: {message}")
        self.target = field_name

    def response(self) -> Response:
        return json_response(
            self.status, {"error": {"code": self.code, "message": self.message, "target": self.target}}
        )


def _body(req: Request, known: set[str]) -> JsonObj:
    body = req.json_object()
    unknown = sorted(set(body) - known)
    if unknown:
        raise FieldError(unknown[0], f"unknown field (known: {', '.join(sorted(known))})")
    return body


def _number(body: JsonObj, name: str, *, low: float = 0.0, high: float | None = None) -> float | None:
    if name not in body:
        return None
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(name, "must be a number")
    if value < low or (high is not None and value > high):
        bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise FieldError(name, f"must be {bound}")
    return float(value)


def _bool(body: JsonObj, name: str) -> bool | None:
    if name not in body:
        return None
    if not isinstance(body[name], bool):
        raise FieldError(name, "must be true or false")
    return bool(body[name])


def _since(req: Request) -> int:
    raw = req.query.get("since", "0") or "0"
    try:
        value = int(raw)
    except ValueError:
        raise FieldError("since", "must be an integer") from None
    if value < 0:
        raise FieldError("since", "must not be negative")
    return value


# FieldError is a SandboxError: World._dispatch answers it with its own 400 body.
route = ROUTER.route


# ---- clock ----------------------------------------------------------------------------------
def _clock_state(world: World) -> JsonObj:
    return {"now": clockmod.isoformat(world.clock.now()), "mode": world.clock.mode}


@route("GET", r"/sandbox/clock")
def get_clock(world: World, req: Request, match: re.Match[str]) -> Response:
    return json_response(200, _clock_state(world))


@route("POST", r"/sandbox/clock")
def post_clock(world: World, req: Request, match: re.Match[str]) -> Response:
    """Exactly one of ``advance`` / ``set``, and/or ``mode``; checked before anything moves."""
    body = _body(req, {"advance", "set", "mode"})
    if not body:
        raise FieldError("advance", "give advance, set or mode")
    if "advance" in body and "set" in body:
        raise FieldError("set", "give advance or set, not both")
    delta: timedelta | None = None
    when: datetime | None = None
    mode: str | None = None
    if "advance" in body:
        if not isinstance(body["advance"], str):
            raise FieldError("advance", "must be an ISO-8601 duration such as PT25H")
        try:
            delta = clockmod.parse_iso_duration(body["advance"])
        except ValueError as err:
            raise FieldError("advance", str(err)) from None
    if "set" in body:
        if not isinstance(body["set"], str):
            raise FieldError("set", "must be an ISO-8601 date-time")
        try:
            when = datetime.fromisoformat(body["set"].strip().replace("Z", "+00:00"))
        except ValueError:
            raise FieldError("set", f"not an ISO-8601 date-time: {body['set']!r}") from None
        if when.tzinfo is None:
            raise FieldError("set", "must carry a timezone (e.g. Z)")
        if when < world.clock.now():
            raise FieldError("set", "the clock does not move backwards")
    if "mode" in body:
        if body["mode"] not in (clockmod.MANUAL, clockmod.REAL):
            raise FieldError("mode", "must be 'manual' or 'real'")
        mode = str(body["mode"])
    if mode is not None:
        world.clock.set_mode(mode)
    if delta is not None:
        world.clock.advance(delta)
    if when is not None:
        world.clock.set(when)
    return json_response(200, _clock_state(world))


# ---- LRO, throttling, services --------------------------------------------------------------
def _lro_state(world: World) -> JsonObj:
    return {"duration_s": world.lro.duration_s, "fail_rate": world.lro.fail_rate}


@route("GET", r"/sandbox/lro")
def get_lro(world: World, req: Request, match: re.Match[str]) -> Response:
    return json_response(200, _lro_state(world))


@route("POST", r"/sandbox/lro")
def post_lro(world: World, req: Request, match: re.Match[str]) -> Response:
    body = _body(req, {"duration_s", "fail_rate"})
    duration = _number(body, "duration_s")
    fail_rate = _number(body, "fail_rate", high=1.0)
    if duration is not None:
        world.lro.duration_s = duration
    if fail_rate is not None:
        world.lro.fail_rate = fail_rate
    return json_response(200, _lro_state(world))


_THROTTLE_FIELDS = {f.name for f in dataclasses.fields(ThrottleSettings)}


@route("GET", r"/sandbox/throttle")
def get_throttle(world: World, req: Request, match: re.Match[str]) -> Response:
    return json_response(200, dataclasses.asdict(world.throttle.settings))


@route("POST", r"/sandbox/throttle")
def post_throttle(world: World, req: Request, match: re.Match[str]) -> Response:
    body = _body(req, _THROTTLE_FIELDS)
    values: dict[str, float | bool] = {}
    for name in sorted(body):
        if name == "enabled":
            enabled = _bool(body, name)
            assert enabled is not None  # noqa: S101 - the name is in the body
            values[name] = enabled
        else:
            number = _number(body, name)
            assert number is not None  # noqa: S101 - the name is in the body
            if number <= 0:
                raise FieldError(name, "must be greater than 0")
            values[name] = number
    world.throttle.configure(**values)
    return json_response(200, dataclasses.asdict(world.throttle.settings))


def _service_fields(world: World) -> set[str]:
    return {f.name for f in dataclasses.fields(world.service_settings)}


@route("GET", r"/sandbox/services")
def get_services(world: World, req: Request, match: re.Match[str]) -> Response:
    return json_response(200, dataclasses.asdict(world.service_settings))


@route("POST", r"/sandbox/services")
def post_services(world: World, req: Request, match: re.Match[str]) -> Response:
    body = _body(req, _service_fields(world))
    values = {name: _number(body, name) for name in sorted(body)}
    for name, value in values.items():
        setattr(world.service_settings, name, value)
    services.settings_changed(world)
    return json_response(200, dataclasses.asdict(world.service_settings))


# ---- faults ---------------------------------------------------------------------------------
def _faults_state(world: World) -> JsonObj:
    return {"rules": [rule.describe() for rule in world.faults.rules]}


@route("GET", r"/sandbox/faults")
def get_faults(world: World, req: Request, match: re.Match[str]) -> Response:
    return json_response(200, _faults_state(world))


@route("POST", r"/sandbox/faults")
def post_faults(world: World, req: Request, match: re.Match[str]) -> Response:
    """Replaces the rule set (``append: true`` adds to it instead)."""
    body = _body(req, {"rules", "append"})
    rules_raw = body.get("rules")
    if not isinstance(rules_raw, list):
        raise FieldError("rules", "must be a list of rule objects")
    append = _bool(body, "append") or False
    rules: list[FaultRule] = []
    for i, raw in enumerate(rules_raw):
        try:
            rules.append(FaultRule.parse(raw))
        except ValueError as err:
            raise FieldError(f"rules[{i}]", str(err)) from None
    world.faults.set_rules((list(world.faults.rules) if append else []) + rules)
    return json_response(200, _faults_state(world))


@route("DELETE", r"/sandbox/faults")
def delete_faults(world: World, req: Request, match: re.Match[str]) -> Response:
    world.faults.clear()
    return json_response(200, _faults_state(world))


# ---- Event Grid -----------------------------------------------------------------------------
_URL = re.compile(r"https?://[^/\s?#]+(/\S*)?", re.IGNORECASE)
_SUBSCRIPTION_FIELDS = {
    "endpoint",
    "schema",
    "event_types",
    "duplicate_rate",
    "shuffle",
    "name",
    "topic",
    "max_events_per_batch",
    "max_delivery_attempts",
    "event_ttl_minutes",
}


@route("POST", r"/sandbox/event-subscriptions")
def post_subscription(world: World, req: Request, match: re.Match[str]) -> Response:
    body = _body(req, _SUBSCRIPTION_FIELDS)
    endpoint = body.get("endpoint")
    if not isinstance(endpoint, str) or not _URL.fullmatch(endpoint):
        raise FieldError("endpoint", "must be an absolute http(s) URL")
    schema = body.get("schema", "EventGridSchema")
    if schema not in SCHEMAS:
        raise FieldError("schema", f"must be one of {', '.join(SCHEMAS)}")
    event_types = body.get("event_types", [])
    if not isinstance(event_types, list) or not all(isinstance(t, str) and t for t in event_types):
        raise FieldError("event_types", "must be a list of event type names (empty = all)")
    for name in ("name", "topic"):
        if name in body and body[name] is not None and (not isinstance(body[name], str) or not body[name]):
            raise FieldError(name, "must be a non-empty string")
    duplicate_rate = _number(body, "duplicate_rate", high=1.0)
    shuffle = _bool(body, "shuffle")
    batch = _number(body, "max_events_per_batch", low=1, high=5000)
    attempts = _number(body, "max_delivery_attempts", low=1, high=30)
    ttl_minutes = _number(body, "event_ttl_minutes", low=1, high=1440)
    for name, value in (("max_events_per_batch", batch), ("max_delivery_attempts", attempts)):
        if value is not None and not value.is_integer():
            raise FieldError(name, "must be an integer")
    sub = world.eventgrid.subscribe(
        endpoint=endpoint,
        schema=str(schema),
        event_types=[str(t) for t in event_types],
        topic=body.get("topic"),
        duplicate_rate=duplicate_rate or 0.0,
        shuffle=bool(shuffle),
        name=body.get("name"),
        max_events_per_batch=int(batch or 1),
        max_delivery_attempts=int(attempts or 30),
        event_ttl=timedelta(minutes=ttl_minutes or 1440),
    )
    described = world.eventgrid.describe(sub.id)
    return json_response(201, described)


@route("GET", r"/sandbox/event-subscriptions")
def list_subscriptions(world: World, req: Request, match: re.Match[str]) -> Response:
    return json_response(200, {"value": world.eventgrid.describe_all()})


@route("GET", r"/sandbox/event-subscriptions/(?P<id>[^/]+)")
def get_subscription(world: World, req: Request, match: re.Match[str]) -> Response:
    described = world.eventgrid.describe(match["id"])
    if described is None:
        raise SandboxError(404, "NotFound", f"Event subscription {match['id']} was not found.")
    return json_response(200, described)


@route("DELETE", r"/sandbox/event-subscriptions/(?P<id>[^/]+)")
def delete_subscription(world: World, req: Request, match: re.Match[str]) -> Response:
    if not world.eventgrid.unsubscribe(match["id"]):
        raise SandboxError(404, "NotFound", f"Event subscription {match['id']} was not found.")
    return empty_response(204)


@route("GET", r"/sandbox/event-subscriptions/(?P<id>[^/]+)/validate")
def validate_subscription(world: World, req: Request, match: re.Match[str]) -> Response:
    if not world.eventgrid.validate_manually(match["id"], req.query.get("code", "")):
        raise SandboxError(400, "InvalidValidationCode", "Unknown subscription or wrong validation code.")
    return json_response(200, {"validated": True})


@route("GET", r"/sandbox/deliveries")
def get_deliveries(world: World, req: Request, match: re.Match[str]) -> Response:
    since = _since(req)
    items = world.eventgrid.deliveries_since(since)
    last = items[-1]["seq"] if items else since
    return json_response(200, {"value": items, "last_seq": last})


@route("GET", r"/sandbox/dead-letters")
def get_dead_letters(world: World, req: Request, match: re.Match[str]) -> Response:
    return json_response(200, {"value": list(world.eventgrid.dead_letters)})


@route("GET", r"/sandbox/events")
def get_events(world: World, req: Request, match: re.Match[str]) -> Response:
    """Every event published so far, subscribed or not."""
    return json_response(200, {"value": list(world.eventgrid.published)})


# ---- logs, state, reset, seed ---------------------------------------------------------------
@route("GET", r"/sandbox/requests")
def get_requests(world: World, req: Request, match: re.Match[str]) -> Response:
    since = _since(req)
    entries = [e.as_dict() for e in world.requests_since(since)]
    return json_response(200, {"value": entries, "last_seq": entries[-1]["seq"] if entries else since})


@route("GET", r"/sandbox/state")
def get_state(world: World, req: Request, match: re.Match[str]) -> Response:
    by_type: dict[str, int] = {}
    for res in world.resources.values():
        by_type[res.type] = by_type.get(res.type, 0) + 1
    ops: dict[str, int] = {}
    for op in world.operations.values():
        ops[op.status] = ops.get(op.status, 0) + 1
    keys = sum(len(v.keys) for v in world.vaults.values())
    versions = sum(len(k.versions) for v in world.vaults.values() for k in v.keys.values())
    return json_response(
        200,
        {
            "clock": _clock_state(world),
            "tenant_id": world.tenant_id,
            "subscriptions": list(world.subscriptions),
            "vaults": len(world.vaults),
            "keys": keys,
            "key_versions": versions,
            "resources": by_type,
            "operations": ops,
            "identities": len(world.identities),
            "event_subscriptions": len(world.eventgrid.subscriptions),
            "pending_events": world.eventgrid.pending_count(),
            "requests_logged": world.last_seq,
        },
    )


@route("POST", r"/sandbox/reset")
def post_reset(world: World, req: Request, match: re.Match[str]) -> Response:
    world.reset()
    return json_response(200, _clock_state(world))


@route("POST", r"/sandbox/seed")
def post_seed(world: World, req: Request, match: re.Match[str]) -> Response:
    """Applies a seed document; 400 naming the first problem, found before anything is sent."""
    body = req.json_object()
    try:
        plan = seeds.compile_seed(body)
    except seeds.SeedError as err:
        raise FieldError(err.field, err.message) from None
    result = seeds.apply_plan(world, plan)
    return json_response(200, result.as_dict())


# ---- audit records and unknown consumers ----------------------------------------------------------
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _consumers(world: World) -> list[JsonObj]:
    return [c.as_dict(world) for c in audit.log_for(world).consumers]


@route("GET", r"/sandbox/consumers")
def get_consumers(world: World, req: Request, match: re.Match[str]) -> Response:
    return json_response(200, {"value": _consumers(world)})


@route("POST", r"/sandbox/consumers")
def post_consumer(world: World, req: Request, match: re.Match[str]) -> Response:
    """Adds an identity that unwraps with one key version every ``every_s`` sandbox seconds."""
    body = _body(req, {"principal_id", "key", "every_s"})
    principal = body.get("principal_id")
    if not isinstance(principal, str) or not _GUID.fullmatch(principal):
        raise FieldError("principal_id", "must be an object id (GUID)")
    if "every_s" not in body:
        raise FieldError("every_s", "is required")
    every = _number(body, "every_s", low=1.0)
    if every is None or not math.isfinite(every):
        raise FieldError("every_s", "must be a finite number of seconds")
    raw_key = body.get("key")
    parsed = services.parse_key_uri(world, raw_key) if isinstance(raw_key, str) else None
    if parsed is None or parsed[2] is None:
        raise FieldError("key", "must be a versioned key URI (https://{vault}/keys/{name}/{version})")
    vault_name, key_name, version = parsed
    vault = world.vaults.get((vault_name or "").lower())
    if vault is None:
        raise FieldError("key", f"no sandbox vault answers for {body['key']}")
    key = vault.keys.get(key_name.lower())
    if key is None or version not in key.versions:
        raise FieldError("key", f"{body['key']} is not a version of a key in {vault.name}")
    consumer = audit.add_consumer(world, principal_id=principal, vault=vault.name, key=key.name, version=str(version),
                                  every_s=every)
    world.tick(world.clock.now())  # its first call is now
    return json_response(201, consumer.as_dict(world))


@route("DELETE", r"/sandbox/consumers")
def delete_consumers(world: World, req: Request, match: re.Match[str]) -> Response:
    log = audit.log_for(world)
    removed = len(log.consumers)
    log.consumers.clear()
    return json_response(200, {"removed": removed})


def _audit_state(world: World) -> JsonObj:
    log = audit.log_for(world)
    return {"ingestion_delay_s": log.settings.ingestion_delay_s, "partial": log.settings.partial,
            "workspace_id": log.workspace_id, "records": len(log.records)}


@route("GET", r"/sandbox/audit")
def get_audit(world: World, req: Request, match: re.Match[str]) -> Response:
    return json_response(200, _audit_state(world))


@route("POST", r"/sandbox/audit")
def post_audit(world: World, req: Request, match: re.Match[str]) -> Response:
    body = _body(req, {"ingestion_delay_s", "partial"})
    delay = _number(body, "ingestion_delay_s", low=0.0, high=86_400.0)
    if delay is not None and not math.isfinite(delay):
        raise FieldError("ingestion_delay_s", "must be a finite number")
    partial = _bool(body, "partial")
    log = audit.log_for(world)
    if delay is not None:
        log.settings.ingestion_delay_s = delay
    if partial is not None:
        log.settings.partial = partial
    return json_response(200, _audit_state(world))


@route("GET", r"/sandbox/audit/records")
def get_audit_records(world: World, req: Request, match: re.Match[str]) -> Response:
    """Every record already ingested, oldest first, as ``AZKVAuditLogs`` rows (times in ISO 8601)."""
    rows = []
    for rec in audit.log_for(world).visible(world.clock.timestamp()):
        row = audit.azkv_row(rec)
        row["TimeGenerated"] = clockmod.isoformat(datetime.fromtimestamp(rec.at, tz=world.clock.now().tzinfo))
        rows.append(row)
    return json_response(200, {"value": rows})
