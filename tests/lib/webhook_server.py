"""A local Slack-compatible webhook for the notification tests: a tiny http.server on loopback in a
thread, recording the JSON bodies POSTed to it. Its URL carries a made-up secret in its path
("hushhushsecret"), as Slack's do, for the tests to look for where it must not be."""
import json


class Webhook:
    """A local Slack-compatible webhook: records the JSON bodies POSTed to it."""

    def __init__(self):
        import http.server
        import threading
        received = self.received = []

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                received.append({"path": self.path, "type": self.headers.get("Content-Type"),
                                 "body": json.loads(self.rfile.read(n) or b"{}")})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d/services/T0FLOWRUN/B0FLOWRUN/hushhushsecret" % self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
