"""The human-readable status screen. Pure: a StatusReport in, text out."""

from __future__ import annotations

from .collect import StatusReport


def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def render_text(report: StatusReport) -> str:
    t = report.triton
    out = [f"skinbatch status  {report.checked_at}", ""]
    state = "LIVE" if t.live else "DOWN"
    if t.live:
        state += ", READY" if t.ready else ", NOT READY"
    out.append(f"Triton {t.url}: {state}")
    if report.model_card:
        c = report.model_card
        trained = "" if c.get("trained") else "  (UNTRAINED demo weights)"
        out.append(f"Model card: {c.get('name')} version {c.get('version')}{trained}")
    if t.models:
        out.append("")
        out += _table(["model", "version", "state", "ready"],
                      [[m.name, m.version or "-", m.state or "-", "yes" if m.ready else "NO"] for m in t.models])
    if report.models:
        recent = any(f.interval_s for f in report.models)
        header = ["model", "ver", "requests", "failures", "avg batch", "queue ms/req", "compute ms/req"]
        if recent:
            header += ["req/s", "batch (recent)"]
        rows = []
        for f in report.models:
            row = [f.model, f.version or "-", str(f.requests), str(f.failures), _num(f.avg_batch_size),
                   _num(f.queue_ms_per_request), _num(f.compute_ms_per_request)]
            if recent:
                row += [_num(f.recent_requests_per_s, "{:.1f}"), _num(f.recent_avg_batch_size)]
            rows.append(row)
        out += ["", f"Serving figures (from Triton {report.counters_source}; since the server started"
                + (", and over the last interval" if recent else "") + "):"]
        out += _table(header, rows)
        for f in report.models:
            reasons = {r: n for r, n in f.failure_reasons.items() if n}
            if reasons:
                listed = ", ".join(f"{r or '?'} {n}" for r, n in reasons.items())
                out.append(f"  {f.model} failures by reason: {listed}")
    if report.metrics_error:
        out.append(f"(metrics endpoint not read: {report.metrics_error}; figures from the statistics API)")
    k = report.kafka
    if k is not None:
        out += ["", f"Consumer group {k.group_id}: {k.state or '?'}, {k.members} member(s), total lag {k.total_lag}"]
        out += _table(["topic", "partition", "committed", "end", "lag"],
                      [[p.topic, str(p.partition), "-" if p.committed is None else str(p.committed), str(p.end),
                        str(p.lag)] for p in k.partitions])
        if k.dead_letter_exists:
            rate = (f"{k.dead_letters_per_s:.2f}/s" if k.dead_letters_per_s is not None else "- (needs two readings)")
            frac = (f", {100 * k.dead_letter_fraction:.1f}% of messages finished"
                    if k.dead_letter_fraction is not None else "")
            consumed = f"; consuming {k.consumed_per_s:.1f} msg/s" if k.consumed_per_s is not None else ""
            out.append(f"Dead letters ({k.dead_letter_topic}): {k.dead_letters_retained} retained, "
                       f"rate {rate}{frac}{consumed}")
        else:
            out.append(f"Dead-letter topic {k.dead_letter_topic!r} does not exist "
                       "(no dead letters yet, or pass --dead-letter-topic)")
    d = report.drift
    if d is not None:
        out.append("")
        if d.psi is None:
            out.append(f"Score drift (model version {d.model_version}): unknown; {d.note}")
        else:
            out.append(f"Score drift (model version {d.model_version}): PSI {d.psi:.3f} ({d.level}) over {d.scores} "
                       f"scores ({d.window}); chance alone gives about {d.noise_floor:.3f}; "
                       "over 0.25 is a significant shift")
        if d.consumer_psi:
            out.append("  each consumer's last scores: " + ", ".join(f"{v:.3f}" for v in d.consumer_psi))
    problems = report.problems
    out.append("")
    if problems:
        out.append("PROBLEMS:")
        out += [f"  - {p}" for p in problems]
    else:
        out.append("OK")
    return "\n".join(out) + "\n"
