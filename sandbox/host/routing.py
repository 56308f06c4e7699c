"""Keys and HTTP route templates of the development host."""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from sandbox.host.settings import EVENTGRID_KEY_SETTING, FUNCTION_KEY_SETTING, MASTER_KEY_SETTING, HostConfigError

# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostKeys:
    """The local keys; ``generated`` names the ones made up at start (printed in the banner)."""

    function: str
    master: str
    eventgrid: str
    generated: frozenset[str] = frozenset()

    def allows(self, level: str, presented: str | None) -> bool:
        """Whether ``presented`` satisfies auth ``level`` (anonymous, function, admin, system)."""
        if level == "anonymous":
            return True
        if not presented:
            return False
        accepted = {
            "function": (self.function, self.master),
            "admin": (self.master,),
            "system": (self.eventgrid, self.master),
        }[level]
        return any(hmac.compare_digest(presented.encode(), key.encode()) for key in accepted)


def resolve_keys(environ: Mapping[str, str]) -> HostKeys:
    """Reads the local keys from the settings, generating any that is unset."""
    generated: set[str] = set()

    def key(setting: str, label: str) -> str:
        value = environ.get(setting, "").strip()
        if value:
            return value
        generated.add(label)
        return secrets.token_urlsafe(32)

    function = key(FUNCTION_KEY_SETTING, "function")
    master = key(MASTER_KEY_SETTING, "master")
    eventgrid = key(EVENTGRID_KEY_SETTING, "eventgrid")
    return HostKeys(function=function, master=master, eventgrid=eventgrid, generated=frozenset(generated))


# ---------------------------------------------------------------------------------------------
# HTTP route templates
# ---------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\{(\*{1,2})?([A-Za-z_][A-Za-z0-9_]*)((?::[A-Za-z]+(?:\([^)}]*\))?)*)(=[^}?]*)?(\?)?\}")
_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "alpha": r"[A-Za-z]+",
    "bool": r"(?i:true|false)",
    "guid": r"\{?[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}\}?",
    "double": r"-?\d+(?:\.\d+)?",
    "float": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
}


class RouteTemplate:
    """An ASP.NET-style route template compiled to a regular expression.

    ``match(path)`` takes the path after the route prefix (``/keys/k1``) and returns the
    percent-decoded route parameters, or None. Literal segments match case-insensitively.
    Raises ``HostConfigError`` on a template it cannot serve (unknown constraint, misplaced
    catch-all).
    """

    def __init__(self, template: str) -> None:
        self.template = template.strip("/")
        self.defaults: dict[str, str] = {}
        parts: list[str] = []
        rank: list[int] = []
        segments = self.template.split("/") if self.template else []
        for index, segment in enumerate(segments):
            whole = _TOKEN.fullmatch(segment)
            if whole is not None:
                star, pname, constraints, default, optional = whole.groups()
                pattern = self._constraint_pattern(constraints, pname)
                if default:
                    self.defaults[pname] = default[1:]
                if star:
                    if index != len(segments) - 1:
                        raise HostConfigError(f"route {template!r}: a catch-all parameter must be last")
                    parts.append(f"(?:/(?P<{pname}>.*))?")
                    rank.append(4)
                elif optional or default:
                    parts.append(f"(?:/(?P<{pname}>{pattern}))?")
                    rank.append(3)
                else:
                    parts.append(f"/(?P<{pname}>{pattern})")
                    rank.append(1 if constraints else 2)
                continue
            pieces: list[str] = []
            position = 0
            for token in _TOKEN.finditer(segment):
                pieces.append(re.escape(segment[position : token.start()]))
                star, pname, constraints, _default, _optional = token.groups()
                if star:
                    raise HostConfigError(f"route {template!r}: a catch-all parameter must be a whole segment")
                pieces.append(f"(?P<{pname}>{self._constraint_pattern(constraints, pname, lazy=True)})")
                position = token.end()
            rest = segment[position:]
            if "{" in rest or "}" in rest:
                raise HostConfigError(f"route {template!r}: cannot parse segment {segment!r}")
            pieces.append(re.escape(rest))
            parts.append("/" + "".join(pieces))
            rank.append(0 if position == 0 else 1)
        self.rank = tuple(rank)
        try:
            self._regex = re.compile("^" + "".join(parts) + "/?$", re.IGNORECASE)
        except re.error as err:
            raise HostConfigError(f"route {template!r}: {err}") from err

    def _constraint_pattern(self, constraints: str | None, pname: str, *, lazy: bool = False) -> str:
        pattern = "[^/]+?" if lazy else "[^/]+"
        for constraint in (c for c in (constraints or "").split(":") if c):
            cname = constraint.split("(", 1)[0].lower()
            if cname not in _CONSTRAINTS:
                raise HostConfigError(
                    f"route {self.template!r}: constraint {constraint!r} on {pname!r} is not supported"
                )
            pattern = _CONSTRAINTS[cname]
        return pattern

    def match(self, path: str) -> dict[str, str] | None:
        found = self._regex.match(path)
        if found is None:
            return None
        params = dict(self.defaults)
        params.update({k: unquote(v) for k, v in found.groupdict().items() if v is not None})
        return params
