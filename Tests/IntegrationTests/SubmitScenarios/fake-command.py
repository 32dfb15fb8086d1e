#!/usr/bin/python3
"""Stands in for postdrop (and postqueue, postalias, postfix, smtpd) under sendmail.

Writes its argv to $CAPTURE_DIR/argv, then, as postdrop: announces a queue ID, reads the
record stream up to the end record and saves it to $CAPTURE_DIR/records, and answers with
the status in $FAKE_STATUS (default 0). With FAKE_POSTDROP=fail it exits at once with
status 1, as a postdrop that refuses the user would.
"""
import os, sys

cap = os.environ["CAPTURE_DIR"]
with open(f"{cap}/argv", "a") as f:
    f.write(" ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\n")
if os.path.basename(sys.argv[0]) != "postdrop":
    sys.exit(0)
if os.environ.get("FAKE_POSTDROP") == "fail":
    sys.stderr.write("postdrop: fatal: refused\n")
    sys.exit(1)
out = sys.stdout.buffer
out.write(b"protocol\0postdrop_protocol\0queue_id\0ABCDEF12345\0\0")
out.flush()
inp = sys.stdin.buffer
data = b""


def get(n):
    global data
    b = inp.read(n)
    data += b
    return b


while True:
    t = get(1)
    if not t:
        break
    length, shift = 0, 0
    while True:
        b = get(1)
        if not b:
            break
        length |= (b[0] & 0x7F) << shift
        if b[0] & 0x80 == 0:
            break
        shift += 7
    get(length)
    if t == b"E":
        break
open(f"{cap}/records", "wb").write(data)
status = os.environ.get("FAKE_STATUS", "0")
try:
    out.write(b"status\0" + status.encode() + b"\0reason\0\0\0")
    out.flush()
except BrokenPipeError:
    pass
os.close(1)
