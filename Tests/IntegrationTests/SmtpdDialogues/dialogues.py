#!/usr/bin/env python3
"""SMTP dialogues against our smtpd and the reference Postfix 3.7 smtpd, side by side.

Every *.dialogue file here is a scenario: the smtpd options it runs with, the client
address it connects from, and the lines it sends. Each scenario gets a pair of smtpd
services in one instance (ours feeding our cleanup, the reference's feeding the reference
cleanup), both answering DNS queries from the `zone` file here through a fake DNS server.
The transcript of a scenario (every reply, and smtpd's log lines) is normalised (queue IDs,
process IDs) and compared with NAME.expected, which was recorded from the reference.

Usage: dialogues.py BUILD_DIR [--reference DIR] [--record] [NAME...]
  default   run ours (and the reference, when given) and compare each with NAME.expected
  --record  write NAME.expected from the reference's transcript (needs --reference)
Exit status 0 when every transcript matches; differences go to standard output.

Scenario syntax (one directive a line; "#" lines are comments):
  -o NAME=VALUE        an smtpd option for both servers (@DIR@ = the files directory)
  file NAME            the following lines, up to "end", become files/NAME
  service LINE         a master.cf line of the scenario's own (a rewrite service with other
                       settings, say); NAME- in it stands for the scenario's prefix
  client ADDRESS       connect from this loopback address (default 127.0.0.1)
  early                do not wait for the greeting before the first send
  > TEXT               send TEXT and CRLF, then read one reply
  | TEXT               send TEXT and CRLF without reading a reply
  = PYTHON-BYTES       send raw bytes written as a Python bytes literal body (b"..." inside)
  <                    read one reply
  sleep SECONDS
  close                read until the server closes the connection
"""
import argparse, difflib, os, re, socket, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "..", "Support"))
import mailinstance  # noqa: E402

MAIN_CF = """myhostname = mx.example.com
mydomain = example.com
mydestination = $myhostname, localhost.$mydomain, localhost
mynetworks = 127.0.0.1/32
relay_domains = relay.example
smtpd_banner = $myhostname ESMTP
smtpd_error_sleep_time = 0
smtpd_client_connection_count_limit = 0
smtpd_forbid_bare_newline = normalize
alias_maps =
alias_database =
local_recipient_maps = texthash:@DIR@/local-users
virtual_alias_domains = valias.example
virtual_alias_maps = texthash:@DIR@/virtual
virtual_mailbox_domains = vmbox.example
virtual_mailbox_maps = texthash:@DIR@/vmailbox
"""
LOCAL_USERS = "alice x\nbob x\npostmaster x\nroot x\n"
VIRTUAL = "known@valias.example alice\nalias@vmbox.example bob\nforward@relay.example alice\n"
VMAILBOX = "box@vmbox.example vmbox/box/\n"


class Scenario:
    def __init__(self, path):
        self.name = os.path.basename(path)[:-len(".dialogue")]
        self.options, self.files, self.steps, self.services = [], {}, [], []
        self.client, self.early = "127.0.0.1", False
        lines = open(path, encoding="utf-8").read().split("\n")
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            if not line.strip() or line.startswith("#"):
                continue
            if line.startswith("-o "):
                self.options.append(line[3:].strip())
            elif line.startswith("file "):
                body = []
                while lines[i] != "end":
                    body.append(lines[i])
                    i += 1
                i += 1
                self.files[f"{self.name}-{line[5:].strip()}"] = "\n".join(body) + "\n"
            elif line.startswith("service "):
                self.services.append(line[8:].strip().replace("NAME-", self.name + "-"))
            elif line.startswith("client "):
                self.client = line[7:].strip()
            elif line.strip() == "early":
                self.early = True
            else:
                self.steps.append(line)

    def master_lines(self, port_ours, port_ref, index):
        opts = []
        for o in self.options:
            name, value = o.split("=", 1)
            value = value.strip().replace("@FILE@", f"@DIR@/{self.name}-").replace("NAME-", self.name + "-")
            opts.append(f"-o {{ {name.strip()} = {value} }}")
        common = " ".join(opts)
        return (f"127.0.0.1:{port_ours} inet n - n - - smtpd -o syslog_name=postfix/t{index}a {common}\n"
                f"127.0.0.1:{port_ref} inet n - n - - ref-smtpd -o syslog_name=postfix/t{index}b "
                f"-o cleanup_service_name=refcleanup {common}\n")


def read_reply(sock, buf, out, timeout=10):
    """One (possibly multi-line) reply; returns False at end of file."""
    sock.settimeout(timeout)
    while True:
        while b"\n" not in buf[0]:
            try:
                more = sock.recv(4096)
            except socket.timeout:
                out.append("< (timeout)")
                return False
            except OSError as e:
                out.append(f"< (error: {e.strerror})")
                return False
            if not more:
                out.append("< (closed)")
                return False
            buf[0] += more
        line, buf[0] = buf[0].split(b"\n", 1)
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        out.append("< " + text)
        if len(text) < 4 or text[3] != "-":
            return True


def converse(scn, port):
    out = []
    s = socket.socket()
    s.bind((scn.client, 0))
    s.connect(("127.0.0.1", port))
    buf = [b""]
    alive = scn.early or read_reply(s, buf, out, timeout=5)
    for step in scn.steps:
        if not alive:
            break
        try:
            if step.startswith("> ") or step == ">":
                out.append(step)
                s.sendall(step[2:].encode() + b"\r\n")
                alive = read_reply(s, buf, out)
            elif step.startswith("| ") or step == "|":
                out.append(step)
                s.sendall(step[2:].encode() + b"\r\n")
            elif step.startswith("= "):
                out.append(step)
                s.sendall(eval('b"' + step[2:] + '"'))
            elif step == "<":
                alive = read_reply(s, buf, out)
            elif step.startswith("sleep "):
                time.sleep(float(step[6:]))
            elif step == "close":
                while read_reply(s, buf, out, timeout=15):
                    pass
                alive = False
            else:
                raise ValueError(f"{scn.name}: bad step {step!r}")
        except (BrokenPipeError, ConnectionResetError):
            out.append("(connection reset)")
            alive = False
    s.close()
    return out


QUEUED_AS = re.compile(r"queued as [0-9A-Za-z]+")
INSTANCE_DIR = re.compile(r"/tmp/swallow-inst-[^/]+/files")
LOG_ID = re.compile(r"\b[0-9A-F]{8,}\b")


def normalise(lines):
    """Queue IDs differ from run to run."""
    out = []
    for line in lines:
        line = QUEUED_AS.sub("queued as QUEUEID", line)
        if line.startswith("log: "):
            line = LOG_ID.sub("QUEUEID", line)
            line = INSTANCE_DIR.sub("@DIR@", line)
        elif line.startswith("< (error: "):
            line = "< (closed)"
        out.append(line)
    return out


def log_lines(inst, tag, deadline):
    pattern = re.compile(r"^\S+\s+\d+ [\d:]+ \S+ postfix/" + tag + r"/(?:ref-)?smtpd\[\d+\]: (.*)$")
    while True:
        lines = [m.group(1) for m in map(pattern.match, inst.read_log().split("\n")) if m]
        if any(l.startswith("disconnect from ") for l in lines) or time.time() > deadline:
            return ["log: " + l for l in lines]
        time.sleep(0.05)


def transcript(inst, scn, port, tag):
    replies = converse(scn, port)
    logs = log_lines(inst, tag, time.time() + 20)
    return normalise(replies + logs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--reference")
    ap.add_argument("--record", action="store_true")
    ap.add_argument("names", nargs="*")
    args = ap.parse_intermixed_args()
    if args.record and not args.reference:
        sys.exit("--record needs --reference")
    names = args.names or sorted(f[:-9] for f in os.listdir(HERE) if f.endswith(".dialogue"))
    scenarios = [Scenario(f"{HERE}/{n}.dialogue") for n in names]
    files = {"local-users": LOCAL_USERS, "virtual": VIRTUAL, "vmailbox": VMAILBOX}
    master = ("cleanup unix n - n - 0 cleanup\n"
              "rewrite unix - - n - - trivial-rewrite\n"
              "proxymap unix - - n - - proxymap\n"
              "postlog unix-dgram n - n - 1 postlogd\n")
    if args.reference:
        master += "refcleanup unix n - n - 0 ref-cleanup\n"
    ports = []
    for i, scn in enumerate(scenarios):
        files.update(scn.files)
        p = (mailinstance.free_port(), mailinstance.free_port())
        ports.append(p)
        text = scn.master_lines(p[0], p[1], i)
        master += "".join(l + "\n" for l in scn.services)
        master += text if args.reference else text.split("\n")[0] + "\n"
    inst = mailinstance.Instance(args.build, MAIN_CF, master, reference=args.reference,
                                 ref_programs=("smtpd", "cleanup") if args.reference else (),
                                 dns=open(f"{HERE}/zone").read(), files=files)
    failures = []
    try:
        inst.start(wait_for="public/cleanup")
        results = {}

        def run(i, scn):
            sides = [("ours", ports[i][0], f"t{i}a")]
            if args.reference:
                sides.append(("reference", ports[i][1], f"t{i}b"))
            threads = []
            for side, port, tag in sides:
                def one(side=side, port=port, tag=tag):
                    try:
                        results[(scn.name, side)] = transcript(inst, scn, port, tag)
                    except Exception as e:  # a broken scenario is a failure, not a crash
                        results[(scn.name, side)] = [f"(harness error: {e!r})"]
                threads.append(threading.Thread(target=one))
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        pending = list(enumerate(scenarios))
        while pending:
            batch, pending = pending[:6], pending[6:]
            threads = [threading.Thread(target=run, args=item) for item in batch]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        for scn in scenarios:
            expected_path = f"{HERE}/{scn.name}.expected"
            if args.record:
                open(expected_path, "w").write("\n".join(results[(scn.name, "reference")]) + "\n")
                continue
            expected = open(expected_path).read().rstrip("\n").split("\n") if os.path.exists(expected_path) else []
            for side in ("ours", "reference"):
                got = results.get((scn.name, side))
                if got is None or got == expected:
                    continue
                failures.append(f"{scn.name} ({side})")
                print(f"=== {scn.name}: {side} differs from {scn.name}.expected")
                sys.stdout.writelines(l + "\n" for l in difflib.unified_diff(expected, got, "expected", side, lineterm="", n=2))
    finally:
        if os.environ.get("KEEP_LOG"): print(inst.read_log())
        inst.cleanup()
    if args.record:
        print(f"recorded {len(scenarios)} transcripts")
        return 0
    print(f"{len(scenarios)} scenarios, {len(failures)} differences" + (": " + ", ".join(failures) if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
