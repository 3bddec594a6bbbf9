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


def test_showing_messages_leaves_the_loggers_to_other_listeners(caplog, capsys):
    """An entry point called in-process (tests, notebooks) used to leave the package loggers silenced for every other
    listener: no propagation to the root logger's handlers (pytest's caplog heard nothing) and the level raised to
    WARNING (INFO records were dropped before any handler saw them)."""
    show_messages()
    caplog.set_level(logging.INFO)
    logging.getLogger("datasets_scripts.bigearthnet").info("18 S2 patches to convert")
    logging.getLogger("crjepa.train.loop").warning("training.mixed_precision: no")
    assert [r.getMessage() for r in caplog.records] == ["18 S2 patches to convert", "training.mixed_precision: no"]
    assert capsys.readouterr().err == "warning: training.mixed_precision: no\n"  # stderr still from WARNING up


def test_progress_lines_are_shown_plain_where_an_entry_point_asks_for_them(capsys):
    show_messages(logging.INFO)  # as `python -m datasets_scripts` does: its builders' progress on stderr
    logging.getLogger("datasets_scripts.bigearthnet.builder").info("BigEarthNet %s: %s pairs to convert", "all", 6)
    logging.getLogger("datasets_scripts.common").warning("spatial split: %s got no rows", "'test'")
    err = capsys.readouterr().err
    assert err == "BigEarthNet all: 6 pairs to convert\nwarning: spatial split: 'test' got no rows\n"


def test_a_logged_exception_keeps_its_traceback(capsys):
    show_messages()
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        logging.getLogger("crjepa.app.ui").exception("search failed")
    err = capsys.readouterr().err
    assert err.startswith("error: search failed\nTraceback (most recent call last):") and "RuntimeError: a bug" in err
