"""The on-call page's HTML: pure functions from the estate, a dry run and a run to a page.

Everything shown is escaped here (:func:`e`); nothing secret is ever written into a page:
links carry no function key (the one inline script adds the ``code`` of the page's own
address to same-origin links and forms when it runs). The CSS and the script are inline and
tied to a per-response nonce, so the Content-Security-Policy can forbid everything else: no
CDN, no external fetch, the page works in a locked-down network.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote, urlencode

from shared.estate import BindingView, Estate, KeyView, VersionView, retirement_reason
from shared.journal import Run
from shared.runbooks import MODES, RunView

# Colours: every text/background pair here has a contrast ratio of at least 4.5:1 (WCAG AA);
# state is never told by colour alone (each badge carries its word).
_CSS: Final = """
:root { color-scheme: light; }
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1b1b1b; background: #fff; }
header, main, footer { padding: 0.75rem 1.5rem; }
header { background: #0b3d91; color: #fff; }
header a { color: #fff; }
a { color: #0645ad; }
a:focus, button:focus, select:focus, summary:focus { outline: 3px solid #ffbf47; outline-offset: 2px; }
.skip { position: absolute; left: -999px; }
.skip:focus { left: 1rem; top: 0.5rem; background: #fff; color: #000; padding: 0.25rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
caption { text-align: left; font-weight: 600; padding: 0.25rem 0; }
th, td { border: 1px solid #6b6b6b; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #eef1f6; }
code { font-size: 0.9em; word-break: break-all; }
.badge { display: inline-block; padding: 0 0.4rem; border-radius: 0.25rem; font-weight: 600; border: 1px solid; }
.ok { background: #e6f4ea; color: #0b5d1e; } .warn { background: #fff4e5; color: #7a3e00; }
.bad { background: #fde7e9; color: #8a1c24; } .info { background: #eef1f6; color: #1b1b1b; }
ol.timeline { list-style: none; display: flex; flex-wrap: wrap; gap: 0.75rem; padding: 0; }
ol.timeline > li { border: 2px solid #6b6b6b; border-radius: 0.4rem; padding: 0.5rem; min-width: 15rem; }
ol.timeline > li.current { border-color: #0b3d91; }
form.dry { border: 1px solid #6b6b6b; padding: 0.75rem; max-width: 36rem; }
button { font: inherit; padding: 0.25rem 0.75rem; background: #0b3d91; color: #fff; border: 0; border-radius: 0.25rem; }
.muted { color: #4a4a4a; }
nav, .crumbs, .crumbs li { display: inline; } .crumbs { list-style: none; padding: 0; margin: 0 0 0 1rem; }
.crumbs li + li::before { content: " \\203A  "; }
"""

# Adds the page's own function key (``code``) to same-origin links and forms, and refreshes
# the element marked ``data-live`` from the same address while it says it is not finished.
_SCRIPT: Final = """
(function () {
  var code = new URLSearchParams(location.search).get("code");
  function withCode(url) {
    var u = new URL(url, location.href);
    if (code && u.origin === location.origin) { u.searchParams.set("code", code); }
    return u.toString();
  }
  document.querySelectorAll("a[href]").forEach(function (a) { a.href = withCode(a.getAttribute("href")); });
  document.querySelectorAll("form").forEach(function (f) {
    if (!code) { return; }
    var i = document.createElement("input"); i.type = "hidden"; i.name = "code"; i.value = code; f.appendChild(i);
  });
  var live = document.querySelector("[data-live]");
  if (!live) { return; }
  function poll() {
    if (live.getAttribute("data-finished") === "true") { return; }
    var u = new URL(location.href); u.searchParams.set("part", "live");
    fetch(u.toString(), {credentials: "same-origin", cache: "no-store"}).then(function (r) {
      if (!r.ok) { throw new Error(String(r.status)); }
      return r.text();
    }).then(function (text) {
      var doc = new DOMParser().parseFromString(text, "text/html");
      var fresh = doc.querySelector("[data-live]");
      if (fresh) {
        live.innerHTML = fresh.innerHTML;
        live.setAttribute("data-finished", fresh.getAttribute("data-finished") || "false");
        document.querySelectorAll("a[href]").forEach(function (a) { a.href = withCode(a.getAttribute("href")); });
      }
    }).catch(function () {}).then(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, 2000);
})();
"""

_STATE_CLASS: Final = {
    "in-sync": "ok", "current": "ok", "succeeded": "ok", "enabled": "info", "updating": "warn", "held": "warn",
    "lagging": "bad", "failed": "bad", "read-only-stuck": "bad", "revoked": "bad", "disabled": "info",
    "retired": "info", "running": "warn", "pending": "warn", "partially-succeeded": "warn", "pending-approval": "warn",
    "canceled": "info", "unknown": "warn", "yes": "bad", "maybe": "warn", "no": "ok", "collateral": "bad",
}


def e(value: object) -> str:
    """``value`` as HTML text (quotes escaped too: safe in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def badge(state: str) -> str:
    return f'<span class="badge {_STATE_CLASS.get(state, "info")}">{e(state)}</span>'


def _when(at: datetime | None) -> str:
    if at is None:
        return '<span class="muted">unknown</span>'
    return f'<time datetime="{e(at.isoformat())}">{e(at.strftime("%Y-%m-%d %H:%M:%S UTC"))}</time>'


def key_href(key_uri: str) -> str:
    return "/api/ui/key?" + urlencode({"key": key_uri})


def run_href(run_id: str) -> str:
    return "/api/ui/runs/" + quote(run_id, safe="")


def page(title: str, body: str, *, nonce: str, crumbs: Sequence[tuple[str, str]] = ()) -> str:
    """A whole document around ``body`` (already HTML)."""
    trail = "".join(f'<li><a href="{e(href)}">{e(label)}</a></li>' for label, href in crumbs)
    nav = f'<nav aria-label="Breadcrumb"><ol class="crumbs">{trail}</ol></nav>' if trail else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{e(title)} · keysteward</title>
<style nonce="{e(nonce)}">{_CSS}</style>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header><strong>keysteward</strong> on-call · read-only {nav}</header>
<main id="main" tabindex="-1">
<h1>{e(title)}</h1>
{body}
</main>
<footer class="muted">Read-only view. Revoke and restore through the API or the CLI (docs/runbooks.md).</footer>
<script nonce="{e(nonce)}">{_SCRIPT}</script>
</body>
</html>
"""


def _state_counts(bindings: Iterable[BindingView]) -> str:
    counts: dict[str, int] = {}
    for b in bindings:
        counts[b.state] = counts.get(b.state, 0) + 1
    if not counts:
        return '<span class="muted">no bindings</span>'
    return " ".join(f"{badge(s)}&nbsp;{n}" for s, n in sorted(counts.items()))


def _run_rows(runs: Sequence[Run]) -> str:
    if not runs:
        return '<p class="muted">No runs.</p>'
    rows = "".join(
        f'<tr><td><a href="{e(run_href(r.run_id))}">{e(r.run_id)}</a></td><td>{e(r.kind)}</td>'
        f'<td>{badge(r.status)}</td><td><code>{e(r.key)}</code></td><td>{e(r.caller_name)}</td>'
        f"<td>{e(r.ticket)}</td><td>{_when(r.created)}</td></tr>"
        for r in runs
    )
    return ('<table><caption>Runs, newest first</caption><thead><tr><th scope="col">Run</th><th scope="col">Kind</th>'
            '<th scope="col">Status</th><th scope="col">Key</th><th scope="col">Caller</th><th scope="col">Ticket</th>'
            f'<th scope="col">Created</th></tr></thead><tbody>{rows}</tbody></table>')


def estate_page(estate: Estate, runs: Sequence[Run], *, nonce: str) -> str:
    rows = []
    for kv in estate.keys:
        current = kv.current
        revoked = badge("revoked") + f' by <a href="{e(run_href(kv.revoked_by))}">{e(kv.revoked_by)}</a>' \
            if kv.revoked_by else ""
        problem = f'<span class="badge bad">unreadable</span> {e(kv.error)}' if kv.error else ""
        rows.append(
            f'<tr><th scope="row"><a href="{e(key_href(kv.key.uri))}">{e(kv.key.name)}</a></th>'
            f"<td>{e(kv.key.vault_name)}</td>"
            f"<td><code>{e(current.version if current else '')}</code></td>"
            f"<td>{len(kv.versions)}</td><td>{_state_counts(kv.bindings)}</td><td>{revoked}{problem}</td></tr>"
        )
    table = ('<table><caption>Keys in scope</caption><thead><tr><th scope="col">Key</th><th scope="col">Vault</th>'
             '<th scope="col">Current version</th><th scope="col">Versions</th><th scope="col">Bindings by state</th>'
             f'<th scope="col">Attention</th></tr></thead><tbody>{"".join(rows)}</tbody></table>') if rows else \
        '<p class="muted">No keys in scope (KEYSTEWARD_VAULTS).</p>'
    unfinished = "".join(f'<li><a href="{e(run_href(r))}">{e(r)}</a> {e(kind)} {badge(status)} '
                         f"for {int(age)} s</li>" for r, kind, status, age in estate.unfinished_runs)
    in_progress = f"<ul>{unfinished}</ul>" if unfinished else '<p class="muted">None.</p>'
    body = (f'<p>As of {_when(estate.at)}: {len(estate.keys)} keys, '
            f'{sum(len(k.bindings) for k in estate.keys)} bindings.</p>{table}'
            f"<h2>Runs in progress</h2>{in_progress}"
            f"<h2>Recent runs</h2>{_run_rows(runs)}")
    return page("Estate", body, nonce=nonce)


def _binding_rows(bindings: Sequence[BindingView], *, caption: str) -> str:
    if not bindings:
        return f'<p class="muted">{e(caption)}: none.</p>'
    rows = "".join(
        f'<tr><th scope="row">{e(b.binding.name)}</th><td>{e(b.binding.service.value)}</td>'
        f"<td>{e(b.binding.subscription)}</td><td>{'versionless' if b.binding.versionless else 'pinned'}</td>"
        f"<td>{badge(b.state)}</td><td>{'' if b.versions_behind is None else b.versions_behind}</td>"
        f"<td>{e(b.reason)}</td><td><code>{e(b.binding.resource_id)}</code></td></tr>"
        for b in bindings
    )
    return (f'<table><caption>{e(caption)}</caption><thead><tr><th scope="col">Resource</th>'
            '<th scope="col">Service</th>'
            '<th scope="col">Subscription</th><th scope="col">Binding</th><th scope="col">State</th>'
            '<th scope="col">Versions behind</th><th scope="col">Why</th><th scope="col">Resource id</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def _version_item(vv: VersionView) -> str:
    v = vv.version
    verdict = vv.verdict
    if verdict.allowed:
        rule = '<p>Retention: <span class="badge ok">may be disabled</span></p>'
    else:
        reasons = "".join(f"<li>{e(b.message)}</li>" for b in verdict.blockers)
        rule = f"<p>Retention: kept ({e(retirement_reason(verdict))})</p><ul>{reasons}</ul>"
    cls = ' class="current"' if vv.state == "current" else ""
    return (f'<li{cls}><h3><code>{e(v.version)}</code> {badge(vv.state)}</h3>'
            f"<p>Created {_when(v.created)}<br>Expires {_when(v.expires_on)}</p>"
            f"<p>{len(vv.bindings)} binding(s) use it</p>{rule}</li>")


def key_page(kv: KeyView, runs: Sequence[Run], *, nonce: str) -> str:
    if kv.error:
        return page(f"Key {kv.key.name}", f'<p><span class="badge bad">unreadable</span> {e(kv.error)}</p>',
                    nonce=nonce, crumbs=[("Estate", "/api/ui")])
    timeline = "".join(_version_item(vv) for vv in kv.versions)
    per_version = "".join(
        _binding_rows(vv.bindings, caption=f"Bindings on {vv.version.version} ({vv.state})")
        for vv in reversed(kv.versions)
    )
    unknown = [b for b in kv.bindings if b.binding.effective_version is None]
    options = "".join(f'<option value="{e(m)}">{e(m)}</option>' for m in MODES)
    revoked = (f'<p>{badge("revoked")} A revocation is in force: <a href="{e(run_href(kv.revoked_by))}">'
               f"{e(kv.revoked_by)}</a>. Reconcile moves no binding of this key until it is restored.</p>"
               if kv.revoked_by else "")
    body = f"""<p><code>{e(kv.key.uri)}</code></p>{revoked}
<p>Rotation planned: {'yes' if kv.rotation_planned else 'no'}. Bindings: {_state_counts(kv.bindings)}</p>
<h2>Versions, oldest first</h2>
<ol class="timeline" aria-label="Versions of {e(kv.key.name)}, oldest first">{timeline}</ol>
<h2>Bindings per version</h2>
{per_version}
{_binding_rows(unknown, caption="Bindings whose version is not known")}
<h2>Blast radius</h2>
<form class="dry" method="get" action="/api/ui/blast-radius">
<input type="hidden" name="key" value="{e(kv.key.uri)}">
<label for="mode">Revocation mode</label>
<select id="mode" name="mode">{options}</select>
<button type="submit">Show the dry run</button>
<p class="muted">A dry run reads only: it shows what a revocation would reach and change.</p>
</form>
<h2>Runs of this key</h2>
{_run_rows(runs)}"""
    return page(f"Key {kv.key.name}", body, nonce=nonce, crumbs=[("Estate", "/api/ui")])


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return e(value)


def blast_page(doc: Mapping[str, Any], *, nonce: str) -> str:
    key_uri = str(doc.get("key", ""))
    summary = doc.get("summary", {})
    bindings: list[Mapping[str, Any]] = [*doc.get("bindings", []), *doc.get("collateral", [])]
    rows = "".join(
        f"<tr><th scope=\"row\">{e(b.get('name'))}</th><td>{badge(str(b.get('affected')))}</td>"
        f"<td>{e(b.get('service'))}</td><td>{e(b.get('subscription'))}</td>"
        f"<td><code>{e(b.get('version') or 'versionless')}</code></td><td>{e(b.get('health'))}</td>"
        f"<td><code>{e(b.get('resourceId'))}</code></td></tr>"
        for b in bindings
    )
    changes = doc.get("changes", {})
    change_items = "".join(
        f"<li>{e(name)}: {e(', '.join(str(x) for x in value) if isinstance(value, list) else value)}</li>"
        for name, value in changes.items() if not isinstance(value, dict)
    )
    groups = (("By version", "byVersion"), ("By subscription", "bySubscription"), ("By service", "byService"))
    by = "".join(f"<li>{e(title)}: "
                 + ", ".join(f"{e(k)} {_cell(n)}" for k, n in sorted(summary.get(name, {}).items())) + "</li>"
                 for title, name in groups)
    unresolved = doc.get("unresolvedIdentities", [])
    body = f"""<p>Dry run of a <strong>{e(doc.get('mode'))}</strong> revocation of <code>{e(key_uri)}</code>.
Nothing was changed.</p>
<p role="status"><strong>{_cell(summary.get('affected', 0))}</strong> binding(s) reached.
{'Needs a second person to approve.' if doc.get('needsApproval') else ''}</p>
<ul>{by}</ul>
<h2>What would change</h2><ul>{change_items or '<li class="muted">nothing</li>'}</ul>
{'<p><span class="badge warn">unresolved identities</span> ' + e(', '.join(map(str, unresolved))) + '</p>'
 if unresolved else ''}
<table><caption>Bindings reached (yes, maybe) and not (no); collateral: other keys that lose access too</caption>
<thead><tr><th scope="col">Resource</th><th scope="col">Reached</th><th scope="col">Service</th>
<th scope="col">Subscription</th><th scope="col">Version</th><th scope="col">Health now</th>
<th scope="col">Resource id</th></tr></thead><tbody>{rows}</tbody></table>"""
    return page("Blast radius", body, nonce=nonce,
                crumbs=[("Estate", "/api/ui"), ("Key", key_href(key_uri))])


def _result_summary(result: Mapping[str, Any]) -> str:
    parts = []
    for name, value in result.items():
        if isinstance(value, list | dict):
            parts.append(f"{e(name)}: {len(value)}")
        elif value is not None:
            parts.append(f"{e(name)}: {e(str(value)[:200])}")
    return ", ".join(parts)


def run_live(view: RunView) -> str:
    """The part of a run's page that refreshes: status and steps."""
    run = view.run
    rows = "".join(
        f'<tr><td>{s.index + 1}</td><th scope="row">{e(s.name)}</th><td>{badge(s.status)}</td><td>{s.attempt}</td>'
        f"<td>{_when(s.started)}</td><td>{_when(s.finished) if s.finished else ''}</td>"
        f"<td>{_result_summary(s.result)}</td><td>{e(s.error or '')}</td></tr>"
        for s in view.steps
    )
    waiting = f" (waiting: {e(view.waiting)})" if view.waiting else ""
    done = {s.name for s in view.steps if s.status == "succeeded"}
    return f"""<section data-live data-finished="{'true' if run.finished else 'false'}" aria-live="polite"
aria-labelledby="progress">
<h2 id="progress">Progress</h2>
<p>Status: <span id="run-status">{badge(run.status)}</span>{waiting} · {len(done)} of 5 steps done ·
updated {_when(run.updated)}</p>
<table><caption>Steps</caption><thead><tr><th scope="col">#</th><th scope="col">Step</th><th scope="col">Status</th>
<th scope="col">Attempt</th><th scope="col">Started</th><th scope="col">Finished</th><th scope="col">Result</th>
<th scope="col">Error</th></tr></thead><tbody>{rows}</tbody></table>
<p>Outcome: {_result_summary(run.result) or '<span class="muted">not yet</span>'}</p>
</section>"""


def run_page(view: RunView, *, nonce: str) -> str:
    run = view.run
    body = f"""<dl>
<dt>Kind</dt><dd>{e(run.kind)} ({e(run.params.get('mode') or '')})</dd>
<dt>Key</dt><dd><a href="{e(key_href(run.key.rsplit('/', 1)[0] if run.key.count('/') > 4 else run.key))}">
<code>{e(run.key)}</code></a></dd>
<dt>Caller</dt><dd>{e(run.caller_name)}</dd>
<dt>Reason</dt><dd>{e(run.reason)}</dd>
<dt>Ticket</dt><dd>{e(run.ticket)}</dd>
<dt>Created</dt><dd>{_when(run.created)}</dd>
</dl>
{run_live(view)}"""
    return page(f"Run {run.run_id}", body, nonce=nonce, crumbs=[("Estate", "/api/ui")])


__all__ = ["blast_page", "e", "estate_page", "key_href", "key_page", "page", "run_href", "run_live", "run_page"]
