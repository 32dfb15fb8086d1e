#!/usr/bin/env python3
"""exhaust: the mail system when it runs out of something, and nothing accepted is lost.

Three parts, each on an instance of its own (our master and daemons):

- queue: the queue directory is a small tmpfs (24 MB). With less free space than 1.5
  times message_size_limit, or than queue_minfree, MAIL FROM gets "452 4.3.1
  Insufficient system storage"; a message that fills the file system while it is written (no SIZE=, no size
  limit) gets "451 4.3.0 Error: queue file write error" and leaves no file behind. Once
  space is free again mail is accepted, and every message that got a 250 is delivered
  exactly once.
- process limit: 30 clients at once against an smtpd with a process limit of 3. Each
  waits its turn in the listen queue; never more than 3 smtpd processes run, all 30
  messages are accepted and delivered, and nothing worse than a warning is logged.
  (Master's "has reached its process limit" warning and stress mode are for services
  that listen beyond loopback, as in Postfix, so they do not show here.)
- slow clients: smtpd_timeout = 3s. A client that says nothing is cut off with 421 after
  the greeting; with smtpd_per_request_deadline (on by default under stress) a client
  that trickles a command or message content a byte at a time is cut off after the
  timeout as well, though every single read is quick; while three such clients hold all
  three smtpd processes, a normal client is served as soon as they are cut off.

Run as root after `make`:

    python3 bench/exhaust.py [--build .build/release] [--keep] [--reference [--reference-dir DIR]] [PART...]

PART is queue, process-limit or slow (default all three). With --reference the same
checks run against the reference Postfix's smtpd and cleanup (under our master), to show
that the replies and log lines are Postfix's.

Exit status 0 when every check passed.
"""
import argparse, glob, os, pwd, re, smtplib, socket, subprocess, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "Tests", "Support"))
import mailinstance  # noqa: E402

MASTER_CF_REST = mailinstance.core_services() + [
    "local unix - n n - - local",
    "retry unix - - n - - error",
    "proxymap unix - - n - - proxymap",
    "postlog unix-dgram n - n - 1 postlogd",
]

MAIN_CF = ("myhostname = exhaust.example\nmydomain = example\nmydestination = exhaust.example\n"
           "alias_maps = hash:@DIR@/aliases\nalias_database = hash:@DIR@/aliases\n"
           "local_recipient_maps =\nsmtpd_client_connection_count_limit = 0\n")

failures = []
REFERENCE = None  # --reference: the reference Postfix's smtpd and cleanup instead of ours


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)
    return ok


class Mail:
    """An instance whose local recipient `sink` is a Maildir outside the queue."""

    def __init__(self, build, main_cf, smtpd_lines, tmpfs=None):
        self.port = mailinstance.free_port()
        self.ports = [self.port] + [mailinstance.free_port() for _ in smtpd_lines[1:]]
        lines = [line.replace("@PORT@", f"127.0.0.1:{p}") for line, p in zip(smtpd_lines, self.ports)]
        rest = MASTER_CF_REST
        if REFERENCE:
            # The reference's smtpd and cleanup take the same checks.
            lines = [re.sub(r" smtpd\b", " ref-smtpd", line) for line in lines]
            rest = [re.sub(r" cleanup$", " ref-cleanup", line) for line in rest]
        self.inst = mailinstance.Instance(build, MAIN_CF + main_cf, "\n".join(lines + rest) + "\n",
                                          files={"aliases": "sink: @DIR@/mail/\npostmaster: root\n"},
                                          reference=REFERENCE, ref_programs=("smtpd", "cleanup") if REFERENCE else ())
        inst = self.inst
        self.mounted = False
        if tmpfs:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={tmpfs},mode=755", "tmpfs", inst.queue], check=True)
            self.mounted = True
            # The queue's directories again, on the new file system.
            subprocess.run([f"{inst.libexec}/postfix", "-c", inst.etc, "check"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        nobody = pwd.getpwnam("nobody")
        self.maildir = inst.root + "/files/mail"
        os.makedirs(self.maildir)
        os.chown(self.maildir, nobody.pw_uid, nobody.pw_gid)
        subprocess.run([f"{inst.libexec}/postalias", "-c", inst.etc, f"hash:{inst.root}/files/aliases"], check=True)
        self.accepted = []
        self.seq = 0
        inst.start()

    def send(self, size=2000, mail_options=(), port=None, announce_size=True):
        """One message; its tag when it got a 250, else (code, text) of the refusal.
        smtplib sends SIZE= on its own unless announce_size is false."""
        self.seq += 1
        tag = f"m{self.seq}"
        body = f"Subject: exhaust {tag}\r\nX-Tag: {tag}\r\n\r\n" + ("x" * 76 + "\r\n") * (size // 78 + 1)
        try:
            with smtplib.SMTP("127.0.0.1", port or self.port, timeout=60) as c:
                c.ehlo()
                if not announce_size:
                    c.esmtp_features.pop("size", None)
                c.sendmail("sender@example.org", ["sink@exhaust.example"], body, mail_options=list(mail_options))
        except smtplib.SMTPSenderRefused as e:
            return (e.smtp_code, e.smtp_error.decode())
        except smtplib.SMTPDataError as e:
            return (e.smtp_code, e.smtp_error.decode())
        except smtplib.SMTPResponseException as e:
            return (e.smtp_code, e.smtp_error.decode())
        self.accepted.append(tag)
        return tag

    def delivered(self):
        tags = []
        for f in glob.glob(self.maildir + "/new/*") + glob.glob(self.maildir + "/cur/*"):
            m = re.search(r"^X-Tag: (\S+)$", open(f, errors="replace").read(), re.M)
            if m:
                tags.append(m.group(1))
        return tags

    def queue_files(self):
        return self.inst.queue_files()

    def wait_delivered(self, seconds=60):
        deadline = time.time() + seconds
        while time.time() < deadline:
            if len(self.delivered()) >= len(self.accepted) and not self.queue_files():
                return True
            subprocess.run([f"{self.inst.libexec}/postqueue", "-c", self.inst.etc, "-f"], capture_output=True)
            time.sleep(0.5)
        return False

    def check_delivered(self, what):
        self.wait_delivered()
        got = self.delivered()
        lost = sorted(set(self.accepted) - set(got))
        dups = sorted({t for t in got if got.count(t) > 1})
        check(not lost and not dups and not self.queue_files(),
              f"{what}: {len(self.accepted)} accepted, {len(got)} delivered, lost {len(lost)}, "
              f"duplicates {len(dups)}, left in the queue {len(self.queue_files())}")

    def reconfigure(self, **params):
        subprocess.run([f"{self.inst.libexec}/postconf", "-c", self.inst.etc] +
                       [f"{k}={v}" for k, v in params.items()], check=True)
        before = self.inst.read_log().count("reload -- version")
        subprocess.run([f"{self.inst.libexec}/postfix", "-c", self.inst.etc, "reload"], check=True, capture_output=True)
        deadline = time.time() + 10
        while self.inst.read_log().count("reload -- version") <= before and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)

    def log_has(self, pattern, seconds=5):
        """The log holds `pattern` within `seconds` (postlogd writes a moment later)."""
        deadline = time.time() + seconds
        while True:
            if re.search(pattern, self.inst.read_log(), re.M):
                return True
            if time.time() > deadline:
                return False
            time.sleep(0.1)

    def close(self, keep):
        self.inst.stop()
        if self.mounted:
            subprocess.run(["umount", "-l", self.inst.queue])
        if keep:
            print("kept", self.inst.root)
        else:
            self.inst.cleanup()


def fill(path, leave):
    """Grows the file at `path` until `leave` bytes stay free on its file system."""
    st = os.statvfs(os.path.dirname(path))
    free = st.f_bavail * st.f_frsize
    have = os.path.getsize(path) if os.path.exists(path) else 0
    want = max(0, have + free - leave)
    with open(path, "ab") as f:
        f.truncate(have)
        chunk = b"\0" * (1 << 20)
        while f.tell() < want:
            f.write(chunk[:min(len(chunk), want - f.tell())])
        f.flush()
        os.fsync(f.fileno())
    os.truncate(path, want)


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def part_queue(build, keep):
    print("== queue file system (24 MB tmpfs)", flush=True)
    m = Mail(build, "message_size_limit = 2000000\nqueue_minfree = 0\n",
             ["@PORT@ inet n - n - - smtpd"], tmpfs="24m")
    filler = m.inst.queue + "/filler"
    try:
        r = [m.send() for _ in range(20)]
        check(all(isinstance(x, str) for x in r), f"plenty of space: 20 of 20 messages accepted ({r[-1]})")
        # Less than 1.5 x message_size_limit (3 MB) free.
        fill(filler, 2_500_000)
        r = m.send()
        check(r[0] == 452 and "4.3.1 Insufficient system storage" in r[1],
              f"{free_bytes(m.inst.queue) // 1000} KB free, below 1.5 x message_size_limit: MAIL FROM got {r}")
        check(m.log_has(r"warning: not enough free space in mail queue: \d+ bytes < 1.5\*message size limit"),
              "smtpd logged: not enough free space in mail queue")
        os.unlink(filler)
        r = m.send()
        check(isinstance(r, str), f"space again ({free_bytes(m.inst.queue) // 1000} KB free): accepted ({r})")
        # queue_minfree: more than 20 MB must be free.
        m.reconfigure(queue_minfree=20_000_000)
        fill(filler, 19_500_000)
        r = m.send()
        check(r[0] == 452 and "Insufficient system storage" in r[1],
              f"queue_minfree = 20000000 with {free_bytes(m.inst.queue) // 1000} KB free: MAIL FROM got {r}")
        m.reconfigure(queue_minfree=18_000_000)
        r = m.send()
        check(isinstance(r, str), f"queue_minfree = 18000000 with {free_bytes(m.inst.queue) // 1000} KB free: accepted ({r})")
        os.unlink(filler)
        # No size limit and no queue_minfree: the file system fills up while the message
        # is written (Postfix 3.7 does not hold an announced SIZE= against the free space).
        m.reconfigure(queue_minfree=0, message_size_limit=0)
        fill(filler, 1_000_000)
        before = set(m.queue_files())
        r = m.send(size=3_000_000, announce_size=False)
        check(isinstance(r, tuple) and r[0] == 451 and "4.3.0 Error: queue file write error" in r[1],
              f"3 MB message into {free_bytes(m.inst.queue) // 1000} KB: end of DATA got {r}")
        time.sleep(0.5)
        left = set(m.queue_files()) - before
        check(not left, f"no queue file left behind by the refused message {sorted(left)}")
        os.unlink(filler)
        r = [m.send(size=3_000_000), m.send()]
        check(all(isinstance(x, str) for x in r), f"space again: a 3 MB and a 2 KB message accepted ({r})")
        bad = re.findall(r"^.*(?:fatal|panic):.*$", m.inst.read_log(), re.M)
        check(not bad, f"no fatal or panic in the log {bad[:3]}")
        m.check_delivered("queue file system")
    finally:
        if os.path.exists(filler):
            os.unlink(filler)
        m.close(keep)


def part_process_limit(build, keep):
    print("== process limit (smtpd maxproc 3, 30 clients at once)", flush=True)
    m = Mail(build, "", ["@PORT@ inet n - n - 3 smtpd"])
    try:
        results = [None] * 30
        gate = threading.Barrier(30)

        def client(i):
            gate.wait()
            try:
                with smtplib.SMTP("127.0.0.1", m.port, timeout=120) as c:
                    c.ehlo(f"client{i}.example")
                    time.sleep(0.3)
                    m.seq += 1
                    tag = f"p{i}"
                    c.sendmail("sender@example.org", ["sink@exhaust.example"],
                               f"Subject: {tag}\r\nX-Tag: {tag}\r\n\r\nhello\r\n")
                    results[i] = tag
            except Exception as e:  # noqa: BLE001 - every failure is reported
                results[i] = e
        t0 = time.time()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(30)]
        for t in threads:
            t.start()
        # How many smtpd processes serve at once, sampled while the clients run.
        most = [0]
        while any(t.is_alive() for t in threads):
            most.append(len(m.inst.processes("smtpd")))
            time.sleep(0.05)
        for t in threads:
            t.join()
        took = time.time() - t0
        ok = [r for r in results if isinstance(r, str)]
        m.accepted += ok
        check(len(ok) == 30, f"30 clients, 3 processes: {len(ok)} accepted in {took:.1f} s"
              + ("" if len(ok) == 30 else f"; failures: {[repr(r) for r in results if not isinstance(r, str)][:3]}"))
        check(max(most) <= 3, f"never more than 3 smtpd processes (at most {max(most)} seen)")
        bad = re.findall(r"^.*(?:fatal|panic|error):.*$", m.inst.read_log(), re.M)
        check(not bad, f"no fatal, panic or error in the log {bad[:3]}")
        m.check_delivered("process limit")
    finally:
        m.close(keep)


def slow_client(port, script, seconds=20):
    """Runs `script` (a list of (bytes, pause) steps, or "read" to read a reply) against
    the port. Returns (what the server sent, seconds until it closed the connection)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=seconds)
    got = b""
    t0 = time.time()
    s.settimeout(seconds)
    try:
        for step in script:
            if step == "read":
                while not re.search(rb"(^|\n)\d{3} [^\n]*\n$", got):
                    chunk = s.recv(4096)
                    if not chunk:
                        return got.decode(), time.time() - t0
                    got += chunk
                continue
            data, pause = step
            if not pause:
                s.sendall(data)
                continue
            for b in data:
                s.sendall(bytes([b]))
                # What the server says meanwhile (the 421).
                s.settimeout(pause)
                try:
                    chunk = s.recv(4096)
                    if not chunk:
                        return got.decode(), time.time() - t0
                    got += chunk
                except socket.timeout:
                    pass
                except (ConnectionResetError, BrokenPipeError):
                    return got.decode(), time.time() - t0
                s.settimeout(seconds)
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    except (socket.timeout, ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()
    return got.decode(), time.time() - t0


def part_slow(build, keep):
    print("== slow clients (smtpd_timeout = 3s)", flush=True)
    m = Mail(build, "smtpd_timeout = 3s\n",
             ["@PORT@ inet n - n - 3 smtpd",
              "@PORT@ inet n - n - 3 smtpd -o smtpd_per_request_deadline=yes"])
    plain, deadline_port = m.ports
    try:
        got, took = slow_client(plain, ["read"])
        check("421 4.4.2 exhaust.example Error: timeout exceeded" in got and 2.5 < took < 6,
              f"silent client: cut off after {took:.1f} s with {got.splitlines()[-1]!r}")
        check(m.log_has(r"timeout after CONNECT from localhost\[127\.0\.0\.1\]"), "smtpd logged: timeout after CONNECT")
        # A command line, one byte every 0.5 s: each read is quick, the line is not.
        got, took = slow_client(deadline_port, ["read", (b"EHLO slow.example.org\r\n", 0.5)])
        check("421 4.4.2 exhaust.example Error: timeout exceeded" in got and 2.5 < took < 6,
              f"command a byte at a time, with a per-request deadline: cut off after {took:.1f} s")
        # Message content, one byte every 0.5 s (500 bytes a second would earn more time).
        t = [b"EHLO slow.example.org\r\n", b"MAIL FROM:<s@example.org>\r\n", b"RCPT TO:<sink@exhaust.example>\r\n", b"DATA\r\n"]
        script = ["read"]
        for line in t:
            script += [(line, 0), "read"]
        script.append((b"Subject: slow\r\n\r\n" + b"x" * 100, 0.5))
        got, took = slow_client(deadline_port, script)
        check("421 4.4.2 exhaust.example Error: timeout exceeded" in got and took < 12,
              f"message content a byte at a time: cut off {took:.1f} s into the session")
        check(m.log_has(r"timeout after DATA \(\d+ bytes\) from localhost\[127\.0\.0\.1\]"),
              "smtpd logged: timeout after DATA (N bytes)")
        # Three trickling clients hold all three processes; a fourth waits and is served.
        results = {}

        def loris(i):
            results[i] = slow_client(deadline_port, ["read", (b"HELO " + b"s" * 40 + b"\r\n", 0.5)])
        threads = [threading.Thread(target=loris, args=(i,)) for i in range(3)]
        for th in threads:
            th.start()
        time.sleep(0.5)
        t0 = time.time()
        r = m.send(port=deadline_port)
        waited = time.time() - t0
        for th in threads:
            th.join()
        cut = sum(1 for g, _ in results.values() if "Error: timeout exceeded" in g)
        check(isinstance(r, str) and cut == 3 and waited < 10,
              f"3 trickling clients on 3 processes: all cut off ({cut}), a normal client served after {waited:.1f} s ({r})")
        r = m.send(port=plain)
        check(isinstance(r, str), f"afterwards a normal client is served at once ({r})")
        bad = re.findall(r"^.*(?:fatal|panic):.*$", m.inst.read_log(), re.M)
        check(not bad, f"no fatal or panic in the log {bad[:3]}")
        m.check_delivered("slow clients")
    finally:
        m.close(keep)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, ".build/release"))
    ap.add_argument("--keep", action="store_true", help="keep the instances for a post-mortem")
    ap.add_argument("--reference", action="store_true",
                    help="run the reference Postfix's smtpd and cleanup instead of ours")
    ap.add_argument("--reference-dir", default=os.path.join(ROOT, ".ref/postfix"))
    ap.add_argument("parts", nargs="*", default=["queue", "process-limit", "slow"])
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    build = os.path.abspath(args.build)
    global REFERENCE
    REFERENCE = os.path.abspath(args.reference_dir) if args.reference else None
    parts = {"queue": part_queue, "process-limit": part_process_limit, "slow": part_slow}
    for p in args.parts:
        parts[p](build, args.keep)
    print(f"{len(failures)} failed" if failures else "all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
