#!/usr/bin/env python3
"""A minimal HTTP and WebSocket client for .ci/docker-test, standard library only.

    ws-probe.py health HOST PORT
        GET /health; prints the status and body; exits 0 on 200, 1 otherwise.
    ws-probe.py subscribe HOST PORT --points N --ready FILE [--timeout S]
        Subscribes to asset 1, reads the history and N live points, then creates FILE
        and keeps reading until the server closes. Prints one line per milestone and
        finally `close CODE`; exits 0 when the server closed with a close frame.

    Both take --cafile FILE [--server-name NAME] to speak TLS (https://, wss://),
    trusting the authorities in FILE and checking that the certificate names NAME
    (default localhost).
"""

import argparse
import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import sys
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def say(text):
    print(text, flush=True)


def connect(host, port, timeout, tls):
    """A TCP connection, wrapped in TLS when `tls` is (cafile, server name)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    if tls is None:
        return sock
    cafile, name = tls
    context = ssl.create_default_context(cafile=cafile)
    context.set_alpn_protocols(["http/1.1"])
    return context.wrap_socket(sock, server_hostname=name)


def http_get(host, port, path, timeout, tls=None):
    with connect(host, port, timeout, tls) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ")
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError(f"not an HTTP answer: {status_line!r}")
    return int(parts[1]), body.decode("utf-8", "replace")


class WebSocket:
    """Client side of RFC 6455: masked frames out, unmasked frames in."""

    def __init__(self, host, port, path, timeout, tls=None):
        self.sock = connect(host, port, timeout, tls)
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(
            b"GET " + path.encode() + b" HTTP/1.1\r\n"
            b"Host: " + f"{host}:{port}".encode() + b"\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise ConnectionError(f"handshake refused: {lines[0]}")
        expected = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }
        if headers.get("sec-websocket-accept") != expected:
            raise ConnectionError("wrong Sec-WebSocket-Accept")

    def _read_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed without a close frame")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send_json(self, value):
        self.send(0x1, json.dumps(value).encode())

    def receive(self):
        """Returns ('text', str) or ('close', code); answers pings on the way."""
        message, message_opcode = b"", None
        while True:
            b0, b1 = self._read_exact(2)
            opcode, fin, n = b0 & 0x0F, b0 & 0x80, b1 & 0x7F
            if b1 & 0x80:
                raise ConnectionError("the server masked a frame")
            if n == 126:
                (n,) = struct.unpack("!H", self._read_exact(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read_exact(8))
            payload = self._read_exact(n)
            if opcode == 0x9:
                self.send(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                try:
                    self.send(0x8, payload[:2])
                except OSError:
                    pass
                return "close", code
            if opcode != 0x0:
                message_opcode = opcode
            message += payload
            if fin:
                if message_opcode != 0x1:
                    raise ConnectionError(f"unexpected frame opcode {message_opcode}")
                return "text", message.decode("utf-8")


def tls_of(args):
    return (args.cafile, args.server_name) if args.cafile else None


def health(args):
    try:
        status, body = http_get(args.host, args.port, "/health", args.timeout, tls_of(args))
    except (OSError, ValueError) as e:
        say(f"health: {e}")
        return 1
    say(f"health: {status} {body.strip()}")
    return 0 if status == 200 else 1


def subscribe(args):
    deadline = time.monotonic() + args.timeout
    ws = WebSocket(args.host, args.port, "/api/v1/websocket", args.timeout, tls_of(args))
    ws.send_json({"action": "subscribe", "message": {"assetId": 1}})
    points = 0
    while True:
        ws.sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            kind, value = ws.receive()
        except socket.timeout:
            say(f"timed out after {args.timeout} s with {points} live points")
            return 1
        if kind == "close":
            say(f"close {value}")
            return 0
        message = json.loads(value)
        action = message.get("action")
        if action == "asset_history":
            say(f"history {len(message['message']['points'])} points")
        elif action == "point":
            points += 1
            point = message["message"]
            if points <= args.points:
                say(f"point {point['assetName']} {point['time']} {point['value']}")
            if points == args.points:
                with open(args.ready, "w", encoding="utf-8") as ready:
                    ready.write("ready\n")
        else:
            say(f"unexpected message: {value[:200]}")
            return 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    h = sub.add_parser("health")
    s = sub.add_parser("subscribe")
    for p in (h, s):
        p.add_argument("host")
        p.add_argument("port", type=int)
        p.add_argument("--timeout", type=float, default=5.0)
        p.add_argument("--cafile", help="speak TLS, trusting the authorities in this PEM file")
        p.add_argument("--server-name", default="localhost", help="the name the certificate must carry")
    s.add_argument("--points", type=int, default=2)
    s.add_argument("--ready", required=True)
    args = parser.parse_args()
    try:
        return health(args) if args.command == "health" else subscribe(args)
    except (OSError, ValueError, KeyError) as e:
        say(f"{args.command}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
