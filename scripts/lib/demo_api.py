"""A small customer API for scripts/demo.sh: the HTTP upstream behind the gateway.

It answers only requests that carry its own API key (which the gateway holds and the agent
never sees), and compresses its JSON with gzip when the client accepts it, as real APIs do.

    python3 demo_api.py <port>      # API key in the DEMO_API_KEY environment variable
"""

import gzip
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_KEY = os.environ["DEMO_API_KEY"]

CUSTOMERS = {
    1: {"id": 1, "name": "Ada Lovelace", "email": "ada@example.com", "ssn": "123-45-6789",
        "card": "4111 1111 1111 1111", "plan": "pro",
        "billing": {"iban": "DE89 3704 0044 0532 0130 00", "api_token": "sk_live_4eC39HqLyjWDarjtT1zdp7dc"}},
    2: {"id": 2, "name": "Alan Turing", "email": "alan@example.org", "ssn": "234-56-7890",
        "card": "5500 0000 0000 0004", "plan": "team",
        "billing": {"iban": "GB82 WEST 1234 5698 7654 32", "api_token": "sk_live_51HqLyjWDarjtT1zdp7dc4eC3"}},
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, status, value):
        body = json.dumps(value).encode()
        accept = self.headers.get("Accept-Encoding", "")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if "gzip" in [a.split(";")[0].strip() for a in accept.split(",")]:
            body = gzip.compress(body)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def authorized(self):
        if self.headers.get("Authorization") == f"Bearer {API_KEY}":
            return True
        self.send_json(401, {"error": "missing or wrong API key"})
        return False

    def do_GET(self):
        if not self.authorized():
            return
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts == ["customers"]:
            self.send_json(200, list(CUSTOMERS.values()))
        elif len(parts) == 2 and parts[0] == "customers" and parts[1].isdigit() \
                and int(parts[1]) in CUSTOMERS:
            self.send_json(200, CUSTOMERS[int(parts[1])])
        else:
            self.send_json(404, {"error": "not found"})

    def do_DELETE(self):
        if not self.authorized():
            return
        self.send_json(200, {"deleted": self.path})


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
