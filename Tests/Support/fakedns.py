#!/usr/bin/env python3
"""fakedns: a small authoritative DNS server for tests, on a loopback address only.

Usage: fakedns.py ZONEFILE ADDRESS [PORT]     (PORT defaults to 53; UDP and TCP)

The zone file has one record per line, "#" starts a comment:
    name  A      192.0.2.1
    name  AAAA   2001:db8::1
    name  MX     10 mx.example.test        (preference, then host; "0 ." is a null MX)
    name  TXT    some text                 (the rest of the line, one string)
    name  PTR    host.example.test
    name  CNAME  other.example.test
    name  NS     ns.example.test
    name  SERVFAIL                         (every query for name answers SERVFAIL)
    name  DROP                             (queries for name are never answered)
A name with records of another type answers "no data"; a name that is only the parent of
other names also answers "no data"; anything else answers NXDOMAIN. Every query is
appended to ADDRESS.log beside the zone file, one "name TYPE" line each, so tests can
see what was asked. The server runs until killed.
"""
import ipaddress, os, socket, struct, sys, threading

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}
NAMES = {v: k for k, v in TYPES.items()}


def load(path):
    records, servfail, drop = {}, set(), set()
    for line in open(path, encoding="utf-8"):
        line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if not line:
            continue
        parts = line.split(None, 2)
        name = parts[0].lower().rstrip(".")
        kind = parts[1].upper()
        if kind == "SERVFAIL":
            servfail.add(name)
        elif kind == "DROP":
            drop.add(name)
        else:
            records.setdefault(name, []).append((TYPES[kind], parts[2] if len(parts) > 2 else ""))
    return records, servfail, drop


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            b = label.encode()
            out += bytes([len(b)]) + b
    return out + b"\0"


def rdata(kind, value):
    if kind == 1:
        return ipaddress.IPv4Address(value).packed
    if kind == 28:
        return ipaddress.IPv6Address(value).packed
    if kind == 15:
        pref, host = value.split(None, 1)
        return struct.pack("!H", int(pref)) + encode_name(host if host != "." else "")
    if kind == 16:
        b = value.encode()
        chunks = [b[i:i + 255] for i in range(0, len(b), 255)] or [b""]
        return b"".join(bytes([len(c)]) + c for c in chunks)
    return encode_name(value)


def parse_question(msg):
    pos, labels = 12, []
    while True:
        n = msg[pos]
        pos += 1
        if n == 0:
            break
        labels.append(msg[pos:pos + n].decode("utf-8", "replace"))
        pos += n
    qtype, qclass = struct.unpack("!HH", msg[pos:pos + 4])
    return ".".join(labels), qtype, qclass, pos + 4


class Server:
    def __init__(self, zone, address, port):
        self.zone, self.address, self.port = zone, address, port
        self.records, self.servfail, self.drop = load(zone)
        self.logpath = os.path.join(os.path.dirname(os.path.abspath(zone)), address + ".log")
        self.lock = threading.Lock()

    def answer(self, msg):
        qid, flags = struct.unpack("!HH", msg[:4])
        name, qtype, qclass, end = parse_question(msg)
        key = name.lower().rstrip(".")
        with self.lock, open(self.logpath, "a") as log:
            log.write(f"{key} {NAMES.get(qtype, qtype)}\n")
        if key in self.drop:
            return None
        rd = flags & 0x0100
        head = lambda rcode, an: struct.pack("!HHHHHH", qid, 0x8400 | rd | rcode, 1, an, 0, 0)
        question = msg[12:end]
        if key in self.servfail:
            return head(2, 0) + question
        answers, seen = [], set()
        while key not in seen:
            seen.add(key)
            rrs = self.records.get(key, [])
            exact = [(k, v) for k, v in rrs if k == qtype or qtype == 255]
            if exact:
                answers += [(key, k, v) for k, v in exact]
                break
            cname = [v for k, v in rrs if k == 5]
            if not cname:
                break
            answers.append((key, 5, cname[0]))
            key = cname[0].lower().rstrip(".")
        if not answers:
            exists = key in self.records or any(n.endswith("." + key) for n in self.records)
            return head(0 if exists else 3, 0) + question
        body = b""
        for owner, kind, value in answers:
            data = rdata(kind, value)
            body += encode_name(owner) + struct.pack("!HHIH", kind, 1, 60, len(data)) + data
        return head(0, len(answers)) + question + body

    def bind(self):
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        self.udp = socket.socket(family, socket.SOCK_DGRAM)
        self.udp.bind((self.address, self.port))
        self.tcp = socket.socket(family, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((self.address, self.port))
        self.tcp.listen(16)

    def serve_udp(self):
        s = self.udp
        while True:
            msg, peer = s.recvfrom(4096)
            try:
                reply = self.answer(msg)
            except Exception:
                continue
            if reply is None:
                continue
            if len(reply) > 512:
                # Too big for UDP: the question alone, with TC set, so the client asks over TCP.
                end = parse_question(msg)[3]
                flags = struct.unpack("!H", reply[2:4])[0] | 0x0200
                reply = reply[:2] + struct.pack("!HHHHH", flags, 1, 0, 0, 0) + msg[12:end]
            s.sendto(reply, peer)

    def serve_tcp(self):
        s = self.tcp
        while True:
            c, _ = s.accept()
            threading.Thread(target=self.tcp_client, args=(c,), daemon=True).start()

    def tcp_client(self, c):
        try:
            while True:
                head = c.recv(2)
                if len(head) < 2:
                    return
                n = struct.unpack("!H", head)[0]
                msg = b""
                while len(msg) < n:
                    more = c.recv(n - len(msg))
                    if not more:
                        return
                    msg += more
                reply = self.answer(msg)
                if reply is not None:
                    c.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            pass
        finally:
            c.close()


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    addr = sys.argv[2]
    if not ipaddress.ip_address(addr).is_loopback:
        sys.exit("fakedns: refusing a non-loopback address")
    srv = Server(sys.argv[1], addr, int(sys.argv[3]) if len(sys.argv) > 3 else 53)
    srv.bind()
    threading.Thread(target=srv.serve_tcp, daemon=True).start()
    print("ready", flush=True)
    srv.serve_udp()


if __name__ == "__main__":
    main()
