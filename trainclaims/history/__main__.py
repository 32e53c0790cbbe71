"""``python -m trainclaims.history`` (``trainclaims-history``): keep and read a history of runs.

    trainclaims-history add HISTORY REPORT_DIR [--label TEXT]   add a run's claims.json/benchmarks.json
    trainclaims-history site HISTORY --out DIR [--commit-url URL] [--runs N]
                                                                write the static site (opens from disk)
    trainclaims-history comment HISTORY [--base RUN] [--head RUN] [--site-url URL] [--format pr-comment]
                                                                a pull-request comment (markdown, stdout)
    trainclaims-history runs HISTORY                            list the runs (name, date, commit, torch,
                                                                machine, status, label) and the files set aside

RUN is a run's name (or the start of it), ``label:NAME`` (the newest complete run of that label; a
bare NAME where nothing else matches), a commit (at least 4 characters: its newest run) or an index
(0 the oldest, -1 the newest); the comment's head defaults to the newest run, its base to the newest
*complete* run before the head (an interrupted or empty run is never a default base). A file under
the history's ``runs/`` that is not a run is set aside with a warning on stderr. Every bad input is
one line on stderr and exit code 2, before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

PROG = "trainclaims-history"


class UsageError(Exception):
    """A bad input: one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, its errors one line (no usage block): CI logs show the line that matters."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {PROG} --help)")


def parser() -> argparse.ArgumentParser:
    top = _Parser(
        prog=PROG, description=__doc__.replace("``", ""), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = top.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    add = commands.add_parser("add", help="add a report folder's claims.json and benchmarks.json as a run")
    add.add_argument("history", type=Path, help="the history folder (made where it does not exist or is empty)")
    add.add_argument("report_dir", type=Path, help="a --report-dir of a run")
    add.add_argument("--label", default=None, help="a name for the run in the site's columns and the comment")
    site = commands.add_parser("site", help="write the static site of a history")
    site.add_argument("history", type=Path)
    site.add_argument("--out", type=Path, required=True, help="the site's folder (new, empty or an earlier site)")
    site.add_argument(
        "--commit-url",
        default=None,
        help="a link for each run's commit, {commit} standing for it (https://github.com/o/r/commit/{commit})",
    )
    site.add_argument(
        "--runs", type=int, default=30, help="the newest runs shown at first (the rest a click away). Default: 30"
    )
    comment = commands.add_parser("comment", help="a pull-request comment comparing two runs (markdown on stdout)")
    comment.add_argument("history", type=Path)
    comment.add_argument(
        "--base",
        default=None,
        help="the base run: a name, label:NAME, a commit or an index. Default: the newest complete run before the head",
    )
    comment.add_argument("--head", default=None, help="the head run (default: the newest)")
    comment.add_argument("--site-url", default=None, help="where the history's site is published: links to its pages")
    comment.add_argument("--format", default="pr-comment", choices=["pr-comment"], help="default: %(default)s")
    runs = commands.add_parser("runs", help="list the runs of a history")
    runs.add_argument("history", type=Path)
    return top


def run(args: argparse.Namespace) -> int:
    from trainclaims.history import store

    if args.command == "add":
        if args.label is not None and ("\n" in args.label or not args.label.strip()):
            raise ValueError(f"--label {args.label!r}: give one line of text")
        claims, benchmarks = store.read_report_dir(args.report_dir)
        path = store.record_run(args.history, claims, benchmarks, label=args.label)
        print(f"{PROG}: added {path}")
        return 0
    history = store.load(args.history)
    for path, why in history.skipped:
        print(f"{PROG}: warning: {path} set aside: {why}", file=sys.stderr)
    if args.command == "runs":
        for i, r in enumerate(history.runs):
            status = r.status if r.complete else f"{r.status} ({r.status_why})"
            print(f"{i}\t{r.name}\t{r.date[:19]}\t{r.commit}\ttorch {r.torch}\t{r.machine}\t{status}\t{r.label or ''}")
        for path, why in history.skipped:
            print(f"-\t{path.name}\tset aside: {why}")
        return 0
    if args.command == "site":
        from trainclaims.history.site import write_site

        if not history.runs:
            raise ValueError(f"history {args.history} has no runs yet")
        if args.runs < 1:
            raise ValueError(f"--runs {args.runs}: give 1 or more")
        if args.commit_url is not None and "{commit}" not in args.commit_url:
            raise ValueError(f"--commit-url {args.commit_url!r}: give a URL with {{commit}} where the commit goes")
        index = write_site(history, args.out, commit_url=args.commit_url, shown=args.runs)
        print(f"{PROG}: wrote {index} ({len(history.runs)} runs)")
        return 0
    from trainclaims.history.comment import pr_comment

    head = history.find(args.head, default=-1)
    base = history.default_base(head) if args.base is None else history.find(args.base)
    if base == head:
        raise ValueError(f"--base and --head name the same run ({history.runs[head].name})")
    sys.stdout.write(pr_comment(history, base, head, site_url=args.site_url))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line; its exit code (0, or 2 with one line on stderr for a bad input)."""
    try:
        args = parser().parse_args(argv)
        return run(args)
    except (UsageError, ValueError) as err:
        print(f"{PROG}: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2
    except OSError as err:  # a folder that cannot be written, a disk full: the run is left as it was
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
