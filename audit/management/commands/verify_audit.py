"""Check the audit trail's hash chain; names the first broken link. Exit status 1 when broken."""

from __future__ import annotations

import re
import time
from datetime import datetime
from datetime import time as day_start

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from audit import chain


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain (from --since DATE, a day in UK time); --seal seals first."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--since", help="YYYY-MM-DD: check from the first event of that day (and the link into it)")
        parser.add_argument("--seal", action="store_true", help="seal the events written since the last seal first")
        parser.add_argument("--all-problems", action="store_true", help="go on past the first broken link")
        parser.add_argument("--expect-head", metavar="SEQ:HASH",
                            help="a chain head logged earlier ('audit chain head ...'): it must still be there")

    def handle(self, *args, **options) -> None:
        since = None
        if options["since"]:
            try:
                day = datetime.strptime(options["since"], "%Y-%m-%d").date()
            except ValueError:
                raise CommandError(f"--since must be a date like 2026-11-30, not {options['since']!r}") from None
            since = timezone.make_aware(datetime.combine(day, day_start.min))
        if options["seal"]:
            self.stdout.write(f"Sealed {chain.seal():,} events")
        started = time.monotonic()
        expect_head = None
        if options["expect_head"]:
            # ASCII digits and hex only (str.isdigit takes a superscript 2, int() then fails); a hash in capitals is
            # the same hash, which compared as typed read as a head replaced.
            typed = re.fullmatch(r"([0-9]+):([0-9a-fA-F]{64})", options["expect_head"].strip())
            if typed is None:
                raise CommandError("--expect-head must be SEQ:HASH as the sealer logs it")
            expect_head = (int(typed[1]), typed[2].lower())
        result = chain.verify(since=since, first_problem_only=not options["all_problems"], expect_head=expect_head)
        took = time.monotonic() - started
        for problem in result.problems:
            self.stderr.write(problem)
        if result.warning:
            self.stderr.write(f"Warning: {result.warning}")
        summary = (f"{result.checked:,} chained events checked in {took:.1f} s"
                   + (f"; {result.unsealed:,} not sealed yet" if result.unsealed else ""))
        if not result.ok:
            raise CommandError(f"The audit trail is broken. {summary}", returncode=1)
        self.stdout.write(f"The audit trail is intact: {summary}")
