#!/usr/bin/env python3
"""Publish -> delivery latency through one fanout node, measured two ways, to separate the
server's path from the machine's wake-up cost (docs/benchmarks.md, "Scenario 2").

  pingpong  one thread publishes, then blocks until its own subscriber socket has the
            delivery (the receiving process was running a moment ago)
  procs     a publisher process and a subscriber process (the subscriber sleeps in recv
            between messages, as loadgen's threads and real clients do)

usage: scripts/wake-latency.py PORT [pingpong|procs] [COUNT]
Pin it, e.g. `taskset -c 0 scripts/wake-latency.py 3000 procs` with the server on core 1.
Standard library only; the WebSocket client is the minimum a test needs, not a library.
"""
import base64, json, os, socket, struct, sys, time


def connect(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("server closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        sys.exit("upgrade refused: %r" % head[:80])
    return s


def send(s, text):
    p = text.encode()
    mask = os.urandom(4)
    if len(p) < 126:
        head = bytes([0x81, 0x80 | len(p)])
    else:
        head = bytes([0x81, 0x80 | 126]) + struct.pack(">H", len(p))
    s.sendall(head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(p)))


def exact(s, n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            sys.exit("server closed the connection")
        b += chunk
    return b


def recv(s):
    h = exact(s, 2)
    n = h[1] & 0x7F
    if n == 126:
        n = struct.unpack(">H", exact(s, 2))[0]
    elif n == 127:
        n = struct.unpack(">Q", exact(s, 8))[0]
    return exact(s, n)


def now_ns():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def report(name, lat):
    lat.sort()
    pick = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))]
    print("%s: n=%d p50 %.0f us  p90 %.0f us  p99 %.0f us"
          % (name, len(lat), pick(0.5), pick(0.9), pick(0.99)))


def subscriber(port, channel):
    s = connect(port)
    send(s, json.dumps({"type": "subscribe", "channel": channel}))
    reply = json.loads(recv(s))
    if reply.get("type") != "subscribed":
        sys.exit("subscribe failed: %r" % reply)
    return s


def main():
    port = int(sys.argv[1])
    mode = sys.argv[2] if len(sys.argv) > 2 else "procs"
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 500
    channel = "wake-latency-%d" % os.getpid()
    if mode == "pingpong":
        sub, pub = subscriber(port, channel), connect(port)
        lat = []
        for i in range(count):
            t = now_ns()
            send(pub, json.dumps({"type": "publish", "channel": channel, "data": i}))
            recv(sub)
            lat.append((now_ns() - t) / 1e3)
            time.sleep(0.005)
        report("pingpong", lat)
    elif mode == "procs":
        sub = subscriber(port, channel)
        if os.fork() == 0:
            sub.close()
            pub = connect(port)
            time.sleep(0.3)
            for _ in range(count):
                send(pub, json.dumps({"type": "publish", "channel": channel, "data": now_ns()}))
                time.sleep(0.005)
            send(pub, json.dumps({"type": "publish", "channel": channel, "data": -1}))
            time.sleep(0.2)
            os._exit(0)
        lat = []
        while True:
            msg = json.loads(recv(sub))
            t = now_ns()
            if msg.get("data") == -1:
                break
            lat.append((t - msg["data"]) / 1e3)
        os.wait()
        report("procs", lat)
    else:
        sys.exit("mode must be pingpong or procs")


if __name__ == "__main__":
    main()
