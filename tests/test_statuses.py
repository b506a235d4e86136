"""Run statuses are one enum-like type whose members are the plain strings the files hold."""

from __future__ import annotations

import csv
import io
import json

from ganbench.ledger.statuses import FAILED, FINISHED, UNFINISHED, RunStatus


def test_a_status_is_written_and_compared_as_its_plain_string():
    assert json.dumps({"status": RunStatus.DONE}) == '{"status": "done"}'
    assert f"{RunStatus.OOM}" == str(RunStatus.OOM) == "oom"
    buffer = io.StringIO()
    csv.writer(buffer).writerow([RunStatus.INTERRUPTED])
    assert buffer.getvalue().strip() == "interrupted"
    assert "diverged" in FINISHED and "diverged" in set(FINISHED) and RunStatus("failed") is RunStatus.FAILED


def test_every_status_is_finished_failed_or_unfinished_exactly_once():
    groups = [set(FINISHED), set(FAILED), set(UNFINISHED)]
    assert sorted(status for group in groups for status in group) == sorted(RunStatus)
