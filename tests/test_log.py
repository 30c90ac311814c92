import io
import json
import logging

from nixflex_engine.log import configure_logging, get_logger, log_event


def test_json_line_with_call_id_and_redaction():
    buf = io.StringIO()
    configure_logging("INFO", stream=buf)
    try:
        log = get_logger("t")
        log_event(log, "dial", call_id="CA1", auth="Bearer nxf_a:nxfs_topsecret", n=3)
        line = json.loads(buf.getvalue().strip())
        assert line["event"] == "dial" and line["call_id"] == "CA1" and line["n"] == 3
        assert "topsecret" not in buf.getvalue()
    finally:
        logging.getLogger().handlers.clear()
