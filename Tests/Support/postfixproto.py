"""postfixproto: Postfix's attribute protocol (attr0) and queue file records, for test scripts.

AttrClient talks to an internal service socket (bounce, defer, trace, flush, a delivery
agent...); read_records parses a queue file into (offset, type, data) triples.
"""
import socket


class AttrStream:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def _string(self):
        while b"\0" not in self.buf:
            self._fill()
        s, self.buf = self.buf.split(b"\0", 1)
        return s.decode("utf-8", "surrogateescape")

    def read_list(self):
        """One attribute list as [(name, value)]."""
        out = []
        while True:
            name = self._string()
            if name == "":
                return out
            out.append((name, self._string()))

    def send(self, pairs):
        data = b""
        for n, v in pairs:
            data += n.encode() + b"\0" + str(v).encode("utf-8", "surrogateescape") + b"\0"
        self.sock.sendall(data + b"\0")


def connect(path, timeout=30):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return AttrStream(s)


def request(path, pairs, protocol=None):
    """Connects, checks the announcement, sends one list, returns the reply list."""
    st = connect(path)
    hello = st.read_list()
    if protocol and ("protocol", protocol) not in hello:
        raise RuntimeError(f"unexpected announcement {hello}")
    st.send(pairs)
    reply = st.read_list()
    st.sock.close()
    return reply


def u32(n):
    """An int as the protocol carries it (-1 -> 4294967295)."""
    return n & 0xFFFFFFFF


def parse_records(data):
    """[(offset, type character, bytes)] of a record stream; a truncated last record
    keeps what there is of it."""
    out, i = [], 0
    while i < len(data):
        start, t = i, chr(data[i])
        i += 1
        length, shift = 0, 0
        while i < len(data):
            b = data[i]
            i += 1
            length |= (b & 0x7F) << shift
            if b & 0x80 == 0:
                break
            shift += 7
        out.append((start, t, data[i:i + length]))
        i += length
    return out


def read_records(path):
    """[(offset, type character, bytes)] of a queue file."""
    return parse_records(open(path, "rb").read())
