"""Browsers (gpuport.testing.browsers) connecting to a lent browser: a WebDriver endpoint is read for as long as a
script may run. Real lent browsers: e2e/test_user_project.py."""

from __future__ import annotations

import http.server
import json
import threading
import time

from gpuport.testing import browsers


def test_a_webdriver_endpoints_answer_to_a_script_is_awaited_past_the_connect_timeout(monkeypatch):
    """A page's start on a lent WebKit took more than the 30 s connect timeout on a busy machine and failed with a
    read timeout, though scripts may run for SCRIPT_TIMEOUT_S: the connection now waits that long for an answer (a
    fake WebDriver server whose script answers after 2 s, the connect timeout set to 1 s)."""

    class FakeWebDriver(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/session":
                value = {"sessionId": "s", "capabilities": {"browserName": "fake", "browserVersion": "1"}}
            elif self.path.endswith("/execute/async"):
                time.sleep(2)
                value = 42
            else:
                value = None
            body = json.dumps({"value": value}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_DELETE = do_POST

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeWebDriver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(browsers, "CONNECT_TIMEOUT_S", 1)
    pool = browsers.Browsers()
    try:
        driver = pool.get("webkit", browsers.Remote("webdriver", f"http://127.0.0.1:{server.server_port}"))
        assert driver.execute_async_script("arguments[0](42)") == 42
    finally:
        pool.close()
        server.shutdown()
