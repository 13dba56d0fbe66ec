"""The CSV writer on its own: RFC 4180 quoting and formula neutralisation, read back with
Python's csv module."""

from __future__ import annotations

import csv
import io

from gql_billing.statements import csv_text, neutralised

AWKWARD = [
    "plain",
    "a, comma",
    'a "quote"',
    "two\nlines",
    "crlf\r\nline",
    "=1+1",
    "+61 400 000 000",
    "-dash",
    "@mention",
    "\tTAB",
    "'already quoted",
    "",
]


def test_every_awkward_value_reads_back_whole() -> None:
    written = csv_text([AWKWARD, ["second", "row"]])

    rows = list(csv.reader(io.StringIO(written, newline="")))

    assert rows == [AWKWARD, ["second", "row"]]
    assert written.endswith("second,row\r\n")
    assert '"two\nlines"' in written
    assert '"a ""quote"""' in written


def test_free_text_that_would_start_a_formula_is_shown_as_text() -> None:
    assert [neutralised(v) for v in AWKWARD[5:10]] == [
        "'=1+1",
        "'+61 400 000 000",
        "'-dash",
        "'@mention",
        "'\tTAB",
    ]
    assert neutralised("a = b") == "a = b"
    assert neutralised("'already quoted") == "'already quoted"
    assert neutralised(None) == ""
