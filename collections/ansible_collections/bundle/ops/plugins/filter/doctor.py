"""The doctor's rows and table (playbooks/doctor.yml and the roles' `doctor` entry points).

A row is a dict: `check`, `state` (ok, warn, fail, skip) and `detail`; the playbook adds `host`.

- `doctor_http_row(result, check)`: a row from one `uri` loop result (the worker's /ready);
- `doctor_psql_row(result, sslmode)`: a row from one `psql` loop result (SSL in use and its version);
- `doctor_prometheus_rows(targets, alerts)`: rows from Prometheus's `/api/v1/targets` and `/api/v1/alerts`
  answers (`uri` results): one per target, one per firing or pending alert, or one saying none fires;
- `doctor_table(rows)`: the table as text, one line per row, the failed rows first, then a summary line.
"""

from __future__ import annotations

from typing import Any

STATES = ("fail", "warn", "ok", "skip")


def _row(check: str, state: str, detail: str) -> dict[str, str]:
    return {"check": check, "state": state, "detail": " ".join(str(detail).split())}


def doctor_http_row(result: dict[str, Any], check: str) -> dict[str, str]:
    url = str(result.get("url") or result.get("invocation", {}).get("module_args", {}).get("url") or "?")
    where = url.split("://", 1)[-1].split("/", 1)[0]
    name = f"{check} {where}"
    status = int(result.get("status") or -1)
    body = str(result.get("content") or "").strip()[:200]
    if status == 200:
        return _row(name, "ok", body or "200")
    if status > 0:
        return _row(name, "fail", f"HTTP {status}: {body}")
    return _row(name, "fail", str(result.get("msg") or "no answer"))


def doctor_psql_row(result: dict[str, Any], sslmode: str) -> dict[str, str]:
    entry = result.get("item") or {}
    name = f"database {entry.get('user', '?')}@{entry.get('host', '?')}/{entry.get('database', '?')}"
    if result.get("rc") != 0:
        lines = str(result.get("stderr") or result.get("msg") or "psql failed").strip().splitlines()
        return _row(name, "fail", lines[-1] if lines else "psql failed")
    ssl, _, version = str(result.get("stdout") or "").strip().partition(" ")
    if ssl == "true":
        return _row(name, "ok", f"as {entry.get('owner', '?')} over {version} (sslmode {sslmode or 'default'})")
    state = "fail" if sslmode else "warn"
    return _row(name, state, f"connected as {entry.get('owner', '?')} without TLS (sslmode {sslmode or 'unset'})")


def doctor_prometheus_rows(targets: dict[str, Any], alerts: dict[str, Any]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    if targets.get("status") != 200:
        return [_row("prometheus", "fail", f"API not answering: {targets.get('msg') or targets.get('status')}")]
    for target in sorted(
        targets["json"]["data"]["activeTargets"], key=lambda t: (t["labels"].get("job", ""), t["scrapeUrl"])
    ):
        name = f"target {target['labels'].get('job', '?')} {target['labels'].get('instance', target['scrapeUrl'])}"
        health = target.get("health")
        if health == "up":
            rows.append(_row(name, "ok", "up"))
        else:
            rows.append(_row(name, "fail", f"{health}: {target.get('lastError') or 'not scraped yet'}"))
    if alerts.get("status") != 200:
        rows.append(_row("alerts", "fail", f"API not answering: {alerts.get('msg') or alerts.get('status')}"))
        return rows
    active = [a for a in alerts["json"]["data"]["alerts"] if a.get("state") in ("firing", "pending")]
    for alert in sorted(active, key=lambda a: (a["state"] != "firing", a["labels"].get("alertname", ""))):
        labels = alert["labels"]
        where = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname", "severity"))
        summary = alert.get("annotations", {}).get("summary", "")
        state = "fail" if alert["state"] == "firing" else "warn"
        rows.append(_row(f"alert {labels.get('alertname', '?')}", state, f"{alert['state']}: {where} {summary}"))
    if not active:
        rows.append(_row("alerts", "ok", "none firing or pending"))
    return rows


def doctor_table(rows: list[dict[str, Any]]) -> str:
    """Aligned columns host, check, state, detail; failing rows first; a last line counting each state."""
    ordered = sorted(rows, key=lambda r: STATES.index(r.get("state", "fail")) if r.get("state") in STATES else 0)
    header = {"host": "HOST", "check": "CHECK", "state": "STATE", "detail": "DETAIL"}
    widths = {k: max(len(str(r.get(k, ""))) for r in [header, *ordered]) for k in ("host", "check", "state")}
    lines = [
        f"{r.get('host', '')!s:<{widths['host']}}  {r.get('check', '')!s:<{widths['check']}}  "
        f"{str(r.get('state', '')).upper():<{widths['state']}}  {r.get('detail', '')}".rstrip()
        for r in [header, *ordered]
    ]
    counts = {s: sum(1 for r in rows if r.get("state") == s) for s in STATES}
    lines.append(", ".join(f"{counts[s]} {s}" for s in STATES))
    return "\n".join(lines)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "doctor_http_row": doctor_http_row,
            "doctor_psql_row": doctor_psql_row,
            "doctor_prometheus_rows": doctor_prometheus_rows,
            "doctor_table": doctor_table,
        }
