"""crjepa/utils/logs.py: library messages go through logging; an entry point shows them as `level: message` on the
stderr of the moment."""

from __future__ import annotations

import logging

from crjepa.utils.logs import show_messages


def test_package_records_reach_the_current_stderr_as_one_line(capsys):
    show_messages()
    show_messages()  # idempotent: one line per record, not two
    logging.getLogger("crjepa.some.module").warning("the shard %s does not read", "x.parquet")
    logging.getLogger("datasets_scripts.common").info("not shown below the warning level")
    logging.getLogger("datasets_scripts.common").error("a bad pair")
    assert capsys.readouterr().err == "warning: the shard x.parquet does not read\nerror: a bad pair\n"


def test_a_logged_exception_keeps_its_traceback(capsys):
    show_messages()
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        logging.getLogger("crjepa.app.ui").exception("search failed")
    err = capsys.readouterr().err
    assert err.startswith("error: search failed\nTraceback (most recent call last):") and "RuntimeError: a bug" in err
