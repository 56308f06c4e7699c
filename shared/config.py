"""Typed settings, loaded and checked once at start-up.

Every setting is an app setting (environment variable) with a documented default; the README's
configuration reference lists the same names. Required settings have no default: a missing
one fails loudly at start (:class:`ConfigError`), never later on a revoke path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, TypedDict

from shared.errors import ConfigError
from shared.keyuri import normalize_vault_url
from shared.model import ServiceType

# Azure's rule (Cosmos DB, Cosmos DB for PostgreSQL docs): never disable the previous version
# within 24 hours of a rotation. A setting may raise this, never lower it.
MIN_RETENTION_HOURS = 24

# The connection file's keys (a contract: external tests read the file too). ``SANDBOX_REQUIRED``
# must be present; the others are optional: ``pid``, ``clock_mode``, ``logs_url``,
# ``audit_workspace_id`` and ``vault_credential_scopes`` (written, read by no client here).
SANDBOX_REQUIRED: Final = ("arm_url", "admin_url", "ca_bundle", "tenant_id", "subscriptions", "vaults",
                           "credential_scopes")


@dataclass(frozen=True)
class SandboxConnection:
    """The sandbox's connection file (written by ``python -m sandbox serve``): the one parser of it.

    URLs carry no trailing ``/``; vault names are lower-cased (Azure's vault names are
    case-insensitive). Key Vault clients need ``verify_challenge_resource=False`` (the challenge
    names vault.azure.net while the URL is 127.0.0.1) and ``connection_verify=ca_bundle``;
    management clients need ``base_url=arm_url``, ``credential_scopes`` and ``connection_verify``.
    """

    arm_url: str
    admin_url: str
    ca_bundle: str
    tenant_id: str
    subscriptions: tuple[str, ...]
    vaults: dict[str, str]
    """Vault name (lower-case) -> vault URL; reflects the moment the file was last written."""
    credential_scopes: tuple[str, ...]
    pid: int | None = None
    """The sandbox server's process id."""
    clock_mode: str | None = None
    logs_url: str | None = None
    """The endpoint to give ``LogsQueryClient``; ``None`` for a sandbox that predates it."""
    audit_workspace_id: str | None = None
    """The Log Analytics workspace that receives every vault's audit records."""

    @staticmethod
    def parse(data: object) -> SandboxConnection:
        """Builds the connection from the file's JSON; raises ValueError naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("the connection file must hold a JSON object")  # noqa: TRY004 - a bad file, not a bad call
        missing = [k for k in SANDBOX_REQUIRED if k not in data]
        if missing:
            raise ValueError(f"the connection file lacks {', '.join(missing)}")
        try:
            return SandboxConnection(
                arm_url=str(data["arm_url"]).rstrip("/"),
                admin_url=str(data["admin_url"]).rstrip("/"),
                ca_bundle=str(data["ca_bundle"]),
                tenant_id=str(data["tenant_id"]),
                subscriptions=tuple(str(s) for s in data["subscriptions"]),
                vaults={str(k).lower(): str(v) for k, v in dict(data["vaults"]).items()},
                credential_scopes=tuple(str(s) for s in data["credential_scopes"]),
                pid=int(data["pid"]) if data.get("pid") is not None else None,
                clock_mode=str(data["clock_mode"]) if data.get("clock_mode") else None,
                logs_url=str(data["logs_url"]).rstrip("/") if data.get("logs_url") else None,
                audit_workspace_id=str(data["audit_workspace_id"]) if data.get("audit_workspace_id") else None,
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"the connection file has a malformed value: {err}") from err

    @staticmethod
    def load(path: str | Path) -> SandboxConnection:
        """Reads and parses the file; raises ConfigError naming KEYSTEWARD_SANDBOX (missing,
        unreadable, not JSON, or lacking a key)."""
        try:
            return SandboxConnection.parse(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError) as err:
            raise ConfigError(f"KEYSTEWARD_SANDBOX: cannot read connection file {path}: {err}") from err

    def vault_url(self, name: str) -> str:
        """The URL of vault ``name``; raises KeyError for a vault the file does not list."""
        return self.vaults[name.lower()]

    def key_client_kwargs(self) -> dict[str, Any]:
        """Arguments for ``KeyClient`` (and the other Key Vault data-plane clients)."""
        return {"verify_challenge_resource": False, "connection_verify": self.ca_bundle}

    def mgmt_client_kwargs(self) -> dict[str, Any]:
        """Arguments for the ``azure.mgmt`` clients."""
        return {
            "base_url": self.arm_url,
            "credential_scopes": list(self.credential_scopes),
            "connection_verify": self.ca_bundle,
        }

    def logs_client_kwargs(self) -> dict[str, Any]:
        """Arguments for ``LogsQueryClient`` (raises KeyError when the sandbox predates ``logs_url``)."""
        if not self.logs_url:
            raise KeyError("logs_url")
        return {"endpoint": self.logs_url, "connection_verify": self.ca_bundle}


@dataclass(frozen=True)
class Settings:
    """keysteward's settings. Field docs are the configuration reference."""

    subscriptions: tuple[str, ...]
    """KEYSTEWARD_SUBSCRIPTIONS (required): comma-separated subscription ids to watch."""
    vaults: tuple[str, ...]
    """KEYSTEWARD_VAULTS (required): comma-separated vault URLs the service may act on."""
    sandbox: str | None = None
    """KEYSTEWARD_SANDBOX: path of a sandbox connection file; every client and the clock go there."""
    storage_connection: str | None = None
    """AzureWebJobsStorage: queues (fan-out) and tables (run journal), as a connection string."""
    storage_queue_uri: str | None = None
    """AzureWebJobsStorage__queueServiceUri (or __accountName): queue endpoint reached by identity."""
    storage_table_uri: str | None = None
    """AzureWebJobsStorage__tableServiceUri (or __accountName): table endpoint reached by identity."""
    retention: timedelta = timedelta(hours=MIN_RETENTION_HOURS)
    """KEYSTEWARD_RETENTION_HOURS (24): hours an old version stays enabled after its successor."""
    max_concurrency: int = 16
    """KEYSTEWARD_MAX_CONCURRENCY (16): updates started in parallel per (key, subscription)."""
    arm_writes_per_s: float | None = None
    """KEYSTEWARD_ARM_WRITES_PER_S (unset): optional cap on ARM writes per second per subscription."""
    arm_write_burst: int | None = None
    """KEYSTEWARD_ARM_WRITE_BURST (unset): optional cap on a burst of ARM writes per subscription."""
    arm_reserve: float = 0.2
    """KEYSTEWARD_ARM_RESERVE_PERCENT (20): share of the ARM budget ARM reports that is left to other tools."""
    event_dedup: timedelta = timedelta(hours=24)
    """KEYSTEWARD_EVENT_DEDUP_HOURS (24): how long a handled event id is remembered (Event Grid retries for 24 h)."""
    lag_alert: timedelta = timedelta(hours=2)
    """KEYSTEWARD_LAG_ALERT_MINUTES (120): when a versionless binding is reported as lagging."""
    expiry_margin: timedelta = timedelta(days=7)
    """KEYSTEWARD_EXPIRY_MARGIN_DAYS (7): a new version must not expire sooner than this."""
    rotation_max_age: timedelta = timedelta(days=90)
    """KEYSTEWARD_ROTATION_MAX_AGE_DAYS (90): default maximum age of a managed key's version."""
    managed_keys: tuple[str, ...] = ()
    """KEYSTEWARD_MANAGED_KEYS: key URIs rotated by keysteward (besides keys tagged keysteward-rotate)."""
    rotate_on_expired: bool = True
    """KEYSTEWARD_ROTATE_ON_EXPIRED (true): a managed key whose version expired is rotated."""
    hold_tag: str = "keysteward-hold"
    """KEYSTEWARD_HOLD_TAG (keysteward-hold): resource tag that holds a binding back."""
    key_sizes: dict[ServiceType, frozenset[int]] = field(default_factory=dict)
    """KEYSTEWARD_KEY_SIZES: accepted RSA sizes per service, e.g. ``kusto=2048;cosmos=3072,4096``; a service
    not named accepts what its target declares (``shared.targets``)."""
    inventory: str = "arm"
    """KEYSTEWARD_INVENTORY (arm): ``arm`` (list calls) or ``resourcegraph`` (one query, large estates)."""
    work_queue: str = "keysteward-work"
    """KEYSTEWARD_WORK_QUEUE (keysteward-work): Storage queue of (key, subscription) work items."""
    confirm_delay: timedelta = timedelta(seconds=30)
    """KEYSTEWARD_CONFIRM_DELAY_SECONDS (30): wait before a pass confirms started updates."""
    outcome_topic: str | None = None
    """KEYSTEWARD_OUTCOME_TOPIC: Event Grid custom topic endpoint for outcome events (optional)."""
    drift_mode: str = "repair"
    """KEYSTEWARD_DRIFT_MODE (repair): ``repair`` re-enables wrongly disabled versions; ``alert`` only reports."""
    backup_window: timedelta = timedelta(0)
    """KEYSTEWARD_BACKUP_WINDOW_HOURS (0): floor under the backup retention read from each resource."""
    trust_principal_header: bool = False
    """KEYSTEWARD_TRUST_PRINCIPAL_HEADER (false): trust X-MS-CLIENT-PRINCIPAL without Easy Auth (local host)."""
    two_person_rule: bool = False
    """KEYSTEWARD_TWO_PERSON_RULE (false): revoking a whole key waits for a second approver."""
    verify_deadline: timedelta = timedelta(minutes=15)
    """KEYSTEWARD_VERIFY_DEADLINE_MINUTES (15): how long a runbook waits for services to confirm."""
    table_prefix: str = "keysteward"
    """KEYSTEWARD_TABLE_PREFIX (keysteward): prefix of the tables (a letter, then letters and digits, at most 52)."""
    audit_workspace: str | None = None
    """KEYSTEWARD_AUDIT_WORKSPACE: Log Analytics workspace id with the vaults' audit logs; unset: no usage evidence."""
    audit_table: str = "AZKVAuditLogs"
    """KEYSTEWARD_AUDIT_TABLE (AZKVAuditLogs): ``AZKVAuditLogs`` (resource-specific) or ``AzureDiagnostics``."""
    audit_lookback: timedelta = timedelta(days=7)
    """KEYSTEWARD_AUDIT_LOOKBACK_DAYS (7): a version called successfully within this window is in use."""
    audit_top: int = 50
    """KEYSTEWARD_AUDIT_TOP (50): most (version, identity) rows one usage query returns."""
    logs_endpoint: str = "https://api.loganalytics.io"
    """KEYSTEWARD_LOGS_ENDPOINT (https://api.loganalytics.io): Log Analytics query endpoint (sovereign clouds)."""

    sandbox_connection: SandboxConnection | None = field(default=None, compare=False, repr=False)
    """The parsed KEYSTEWARD_SANDBOX file, read once when the settings are built (``None`` without a
    sandbox); a missing or broken file fails there, with ConfigError naming KEYSTEWARD_SANDBOX.
    Not compared. ``dataclasses.replace`` with another ``sandbox`` must pass ``sandbox_connection=None``
    too, or the copy keeps the old file's connection."""

    def __post_init__(self) -> None:
        if self.sandbox and self.sandbox_connection is None:
            # Frozen: the one place the field is filled, at construction.
            object.__setattr__(self, "sandbox_connection", SandboxConnection.load(self.sandbox))

    @property
    def has_storage(self) -> bool:
        """Whether a storage account is configured, by connection string or by identity."""
        return self.storage_connection is not None or self.storage_queue_uri is not None


STORAGE = "AzureWebJobsStorage"
# Storage account names: 3 to 24 lower-case letters and digits.
_ACCOUNT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def _https_uri(env: Mapping[str, str], name: str) -> str | None:
    value = (env.get(name) or "").strip().rstrip("/")
    if not value:
        return None
    if not value.lower().startswith("https://") or len(value) <= len("https://"):
        raise ConfigError(f"{name}: an https:// service URI is required (a bearer token never goes over http)")
    return value


def _storage_identity(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(queue URI, table URI) of an identity-based ``AzureWebJobsStorage``, as the Functions
    host reads it: ``__queueServiceUri`` / ``__tableServiceUri``, else both derived from
    ``__accountName`` (public cloud endpoints); ``(None, None)`` when neither is set.

    The code authenticates with the app's credential (``AZURE_CLIENT_ID``), so a
    ``__clientId`` naming another identity is refused rather than silently ignored."""
    queue = _https_uri(env, f"{STORAGE}__queueServiceUri")
    table = _https_uri(env, f"{STORAGE}__tableServiceUri")
    account = (env.get(f"{STORAGE}__accountName") or "").strip()
    if account and not (3 <= len(account) <= 24 and set(account) <= _ACCOUNT_CHARS):
        raise ConfigError(f"{STORAGE}__accountName: {account!r} is not a storage account name "
                          "(3-24 lower-case letters and digits)")
    if account:
        queue = queue or f"https://{account}.queue.core.windows.net"
        table = table or f"https://{account}.table.core.windows.net"
    if (queue is None) != (table is None):
        raise ConfigError(f"{STORAGE}: set __accountName, or both __queueServiceUri and __tableServiceUri")
    credential = (env.get(f"{STORAGE}__credential") or "managedidentity").strip().lower()
    if queue is not None and credential != "managedidentity":
        raise ConfigError(f"{STORAGE}__credential: only 'managedidentity' is supported")
    client_id = (env.get(f"{STORAGE}__clientId") or "").strip().lower()
    app_client_id = (env.get("AZURE_CLIENT_ID") or "").strip().lower()
    if queue is not None and client_id and client_id != app_client_id:
        raise ConfigError(f"{STORAGE}__clientId names another identity than AZURE_CLIENT_ID; keysteward's "
                          "code reaches storage with AZURE_CLIENT_ID's identity: use one identity for both")
    return queue, table


def _csv(raw: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (raw or "").split(",") if p.strip())


# Table storage names: a letter, then letters and digits, 3 to 63 characters. The longest table
# keysteward writes is {prefix}idempotency (shared/idempotency.py) or {prefix}revocations (11).
MAX_TABLE_PREFIX = 63 - len("idempotency")


def _table_prefix(env: Mapping[str, str]) -> str:
    """KEYSTEWARD_TABLE_PREFIX, checked at start: a bad one would otherwise fail at the first
    table creation, on a revoke path."""
    name = "KEYSTEWARD_TABLE_PREFIX"
    value = (env.get(name) or "keysteward").strip()
    if not (value[:1].isascii() and value[:1].isalpha() and value.isascii() and value.isalnum()):
        raise ConfigError(f"{name}: {value!r} must start with a letter and hold only letters and digits "
                          "(Azure Table storage names)")
    if len(value) > MAX_TABLE_PREFIX:
        raise ConfigError(f"{name}: {len(value)} characters; at most {MAX_TABLE_PREFIX} (table names end in "
                          "'idempotency' and are at most 63 characters)")
    return value


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float) -> float:
    """The finite number in ``env[name]`` (``default`` when unset or blank), within
    ``[minimum, maximum]``; raises ConfigError naming the variable otherwise (NaN and the
    infinities included: ``float()`` accepts them, a setting must not)."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError as err:
        raise ConfigError(f"{name}: {raw!r} is not a number") from err
    if not math.isfinite(value):
        raise ConfigError(f"{name}: {raw.strip()!r} is not a finite number")
    if value < minimum:
        raise ConfigError(f"{name}: {value:g} is below the minimum {minimum:g}")
    if value > maximum:
        raise ConfigError(f"{name}: {value:g} is above the maximum {maximum:g}")
    return value


def _optional_number(env: Mapping[str, str], name: str, *, minimum: float, maximum: float = math.inf) -> float | None:
    """As :func:`_number`, with ``None`` when the setting is unset or blank (an optional cap)."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    return _number(env, name, minimum, minimum=minimum, maximum=maximum)


def _optional_integer(env: Mapping[str, str], name: str, *, minimum: int, maximum: int) -> int | None:
    """As :func:`_optional_number`, for a whole number."""
    value = _optional_number(env, name, minimum=minimum, maximum=maximum)
    if value is not None and not float(value).is_integer():
        raise ConfigError(f"{name}: {value:g} is not a whole number")
    return None if value is None else int(value)


def _integer(env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int) -> int:
    """As :func:`_number`, for a whole number (``1.5`` is refused, ``2.0`` is 2)."""
    value = _number(env, name, default, minimum=minimum, maximum=maximum)
    if not float(value).is_integer():
        raise ConfigError(f"{name}: {value:g} is not a whole number")
    return int(value)


# Upper bounds of the numeric settings: beyond them a value is a typo (or an overflow waiting in a
# timedelta), never a deliberate choice.
_HOURS_10Y: Final = 87_600.0
_DAYS_10Y: Final = 3_650.0


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    if raw.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if raw.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: {raw!r} is not a boolean (true/false)")


def _key_sizes(raw: str | None) -> dict[ServiceType, frozenset[int]]:
    sizes: dict[ServiceType, frozenset[int]] = {}
    for part in (raw or "").split(";"):
        if not part.strip():
            continue
        name, _, values = part.partition("=")
        try:
            service = ServiceType(name.strip().lower())
            sizes[service] = frozenset(int(v) for v in values.split(",") if v.strip())
        except ValueError as err:
            raise ConfigError(f"KEYSTEWARD_KEY_SIZES: cannot read {part!r} (want e.g. cosmos=3072,4096)") from err
    return sizes


def load_settings(env: Mapping[str, str]) -> Settings:
    """Reads and validates every setting from ``env``; raises :class:`ConfigError`."""
    sandbox = (env.get("KEYSTEWARD_SANDBOX") or "").strip() or None
    subscriptions = tuple(s.lower() for s in _csv(env.get("KEYSTEWARD_SUBSCRIPTIONS")))
    vault_texts = _csv(env.get("KEYSTEWARD_VAULTS"))
    conn = SandboxConnection.load(sandbox) if sandbox else None
    if conn is not None:
        # In sandbox mode vault names may be given instead of URLs (their ports are dynamic).
        vault_texts = tuple(conn.vaults.get(v.lower(), v) for v in vault_texts) or tuple(conn.vaults.values())
        subscriptions = subscriptions or tuple(s.lower() for s in conn.subscriptions)
    if not subscriptions:
        raise ConfigError("KEYSTEWARD_SUBSCRIPTIONS is required: comma-separated subscription ids to watch")
    if not vault_texts:
        raise ConfigError("KEYSTEWARD_VAULTS is required: comma-separated vault URLs keysteward may act on")
    try:
        vaults = tuple(normalize_vault_url(v) for v in vault_texts)
    except ValueError as err:
        raise ConfigError(f"KEYSTEWARD_VAULTS: {err}") from err
    retention_hours = _number(env, "KEYSTEWARD_RETENTION_HOURS", MIN_RETENTION_HOURS, minimum=MIN_RETENTION_HOURS,
                              maximum=_HOURS_10Y)
    inventory = (env.get("KEYSTEWARD_INVENTORY") or "arm").strip().lower()
    if inventory not in ("arm", "resourcegraph"):
        raise ConfigError("KEYSTEWARD_INVENTORY: use 'arm' or 'resourcegraph'")
    drift = (env.get("KEYSTEWARD_DRIFT_MODE") or "repair").strip().lower()
    if drift not in ("repair", "alert"):
        raise ConfigError("KEYSTEWARD_DRIFT_MODE: use 'repair' or 'alert'")
    queue_uri, table_uri = _storage_identity(env)
    return Settings(
        subscriptions=subscriptions,
        vaults=vaults,
        sandbox=sandbox,
        sandbox_connection=conn,
        storage_connection=(env.get(STORAGE) or "").strip() or None,
        storage_queue_uri=queue_uri,
        storage_table_uri=table_uri,
        retention=timedelta(hours=retention_hours),
        # 256 parallel updates is far beyond what one subscription's ARM write budget sustains.
        max_concurrency=_integer(env, "KEYSTEWARD_MAX_CONCURRENCY", 16, minimum=1, maximum=256),
        # Optional caps under what ARM announces (shared/pacing.py); ARM refills 10 writes/s per
        # subscription at most (and a bucket of 1,200): a cap above that is a typo.
        arm_writes_per_s=_optional_number(env, "KEYSTEWARD_ARM_WRITES_PER_S", minimum=0.1, maximum=1_000),
        arm_write_burst=_optional_integer(env, "KEYSTEWARD_ARM_WRITE_BURST", minimum=1, maximum=100_000),
        arm_reserve=(_optional_number(env, "KEYSTEWARD_ARM_RESERVE_PERCENT", minimum=0, maximum=90) or 0.0) / 100
        if env.get("KEYSTEWARD_ARM_RESERVE_PERCENT", "").strip() else 0.2,
        event_dedup=timedelta(hours=_optional_number(env, "KEYSTEWARD_EVENT_DEDUP_HOURS", minimum=0.01,
                                                     maximum=24 * 30) or 24),
        lag_alert=timedelta(minutes=_number(env, "KEYSTEWARD_LAG_ALERT_MINUTES", 120, minimum=1,
                                            maximum=_DAYS_10Y * 24 * 60)),
        expiry_margin=timedelta(days=_number(env, "KEYSTEWARD_EXPIRY_MARGIN_DAYS", 7, minimum=0, maximum=_DAYS_10Y)),
        rotation_max_age=timedelta(days=_number(env, "KEYSTEWARD_ROTATION_MAX_AGE_DAYS", 90, minimum=1,
                                                maximum=_DAYS_10Y)),
        managed_keys=_csv(env.get("KEYSTEWARD_MANAGED_KEYS")),
        rotate_on_expired=_bool(env, "KEYSTEWARD_ROTATE_ON_EXPIRED", True),
        hold_tag=(env.get("KEYSTEWARD_HOLD_TAG") or "keysteward-hold").strip(),
        key_sizes=_key_sizes(env.get("KEYSTEWARD_KEY_SIZES")),
        inventory=inventory,
        work_queue=(env.get("KEYSTEWARD_WORK_QUEUE") or "keysteward-work").strip(),
        # A Storage queue message's visibility delay is at most 7 days.
        confirm_delay=timedelta(seconds=_number(env, "KEYSTEWARD_CONFIRM_DELAY_SECONDS", 30, minimum=0,
                                                maximum=7 * 24 * 3600)),
        outcome_topic=(env.get("KEYSTEWARD_OUTCOME_TOPIC") or "").strip() or None,
        drift_mode=drift,
        backup_window=timedelta(hours=_number(env, "KEYSTEWARD_BACKUP_WINDOW_HOURS", 0, minimum=0,
                                              maximum=_HOURS_10Y)),
        trust_principal_header=_bool(env, "KEYSTEWARD_TRUST_PRINCIPAL_HEADER", False),
        two_person_rule=_bool(env, "KEYSTEWARD_TWO_PERSON_RULE", False),
        # A day: a verification still pending then is an incident, not a wait.
        verify_deadline=timedelta(minutes=_number(env, "KEYSTEWARD_VERIFY_DEADLINE_MINUTES", 15, minimum=0,
                                                  maximum=24 * 60)),
        table_prefix=_table_prefix(env),
        **_audit_settings(env),
    )


# ---- usage evidence (Key Vault audit logs in Log Analytics) ------------------------------------------
AUDIT_TABLES = ("AZKVAuditLogs", "AzureDiagnostics")
# Log Analytics caps a query's result at 500,000 rows; keysteward's answers are summaries, and a
# status or a blocker naming more than a thousand identities helps nobody.
MAX_AUDIT_TOP = 1000
_GUID_CHARS = frozenset("0123456789abcdef-")


class _AuditSettings(TypedDict):
    audit_workspace: str | None
    audit_table: str
    audit_lookback: timedelta
    audit_top: int
    logs_endpoint: str


def _audit_settings(env: Mapping[str, str]) -> _AuditSettings:
    """The usage-evidence settings, checked (a bad value fails at start, never on a retire path)."""
    workspace = (env.get("KEYSTEWARD_AUDIT_WORKSPACE") or "").strip().lower() or None
    if workspace is not None and not (len(workspace) == 36 and set(workspace) <= _GUID_CHARS
                                      and [len(p) for p in workspace.split("-")] == [8, 4, 4, 4, 12]):
        raise ConfigError("KEYSTEWARD_AUDIT_WORKSPACE: the workspace id is a GUID (the workspace's 'Workspace ID')")
    table = (env.get("KEYSTEWARD_AUDIT_TABLE") or "AZKVAuditLogs").strip()
    match = [t for t in AUDIT_TABLES if t.lower() == table.lower()]
    if not match:
        raise ConfigError(f"KEYSTEWARD_AUDIT_TABLE: use {' or '.join(AUDIT_TABLES)}")
    endpoint = _https_uri(env, "KEYSTEWARD_LOGS_ENDPOINT") or "https://api.loganalytics.io"
    return _AuditSettings(
        audit_workspace=workspace,
        audit_table=match[0],
        audit_lookback=timedelta(days=_number(env, "KEYSTEWARD_AUDIT_LOOKBACK_DAYS", 7, minimum=0.01, maximum=730)),
        audit_top=int(_number(env, "KEYSTEWARD_AUDIT_TOP", 50, minimum=1, maximum=MAX_AUDIT_TOP)),
        logs_endpoint=endpoint,
    )
