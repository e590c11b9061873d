"""The verify report as text lines (rich markup), for the CLI and the demo."""

from __future__ import annotations

from collections.abc import Iterator

from rich.markup import escape

from tripstream.verify.compare import Verdict

def lines(v: Verdict) -> Iterator[str]:
    a, r = v.accounting, v.rows
    unit = v.unit
    mark = "[green]PASS[/]" if v.ok else "[bold red]FAIL[/]"
    yield f"[bold]verify {v.job}[/] -> {v.table}   Flink job {v.flink_job} {v.state}, watermark {v.watermark}"
    yield f"  read {a.records:,} records from {escape(v.source)}"
    yield f"  {'counted':<24}{a.counted:>12,}"
    yield f"  {'reported late':<24}{a.late:>12,}   (late_trips)"
    yield f"  {'':<24}{'':>12}   lateness {escape(v.lateness)}"
    yield f"  {'rejected as bad':<24}{a.bad:>12,}   (bad_records; the rules reject {a.bad_expected:,})"
    if a.pending:
        yield (f"  {'pending in open ' + unit:<24}{a.pending:>12,}"
               + ("" if v.caught_up else "   (the job is still catching up)"))
    if a.not_applicable:
        yield f"  {'not applicable':<24}{a.not_applicable:>12,}   ({escape(v.not_applicable)})"
    ok = "[green]all accounted for[/]" if a.unaccounted == 0 else f"[red]{a.unaccounted:+,} unaccounted[/]"
    yield f"  {'':<24}{a.records:>12,}   {ok}"
    if a.pairs_expected is not None:
        same = a.pairs_expected == a.pairs_written
        yield (f"  trips summed over closed {unit}: {a.pairs_written:,} written, {a.pairs_expected:,} expected"
               + ("" if same else f"   [red]{a.pairs_written - a.pairs_expected:+,} "
                  f"({'counted twice' if a.pairs_written > a.pairs_expected else 'lost'})[/]"))
    yield (f"  {unit}: {r.compared:,} compared, {r.equal:,} equal, {r.missing:,} missing, {r.extra:,} extra, "
           f"{r.different:,} different; {r.open:,} still open")
    for example in r.examples:
        yield f"    [yellow]{escape(example)}[/]"
    for problem in (a.bad_problems + a.late_problems)[:5]:
        yield f"    [yellow]{escape(problem)}[/]"
    more = len(a.bad_problems) + len(a.late_problems) - 5
    if more > 0:
        yield f"    ... and {more} more"
    yield f"  verdict: {mark}" + (" streaming equals batch, every record accounted for once" if v.ok else "")

