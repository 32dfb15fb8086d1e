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
  postmap TYPE:NAME    build files/NAME into a TYPE table in files/pf/ (@DIR@/pf/NAME-...),
                       a directory of mail_owner's, which may then update it
  cleanup NAME=VALUE   a cleanup option: the scenario gets cleanup services of its own
  client ADDRESS       connect from this loopback address (default 127.0.0.1)
  early                do not wait for the greeting before the first send
  tlswrap              TLS from the start (smtpd_tls_wrappermode)
  dovecot-auth         a Dovecot authentication service for the scenario's smtpd_sasl_type=dovecot
                       (socket @DIR@/dovecot-auth/auth), with the SASL users below
  tls [VERSION] [cert=NAME]
                       the TLS handshake (after "> STARTTLS"), at most VERSION (TLSv1.2),
                       presenting the client certificate @DIR@/NAME.pem; the server
                       certificates are @DIR@/tls-rsa.pem and @DIR@/tls-ec.pem, the client
                       ones tls-client.pem (also a CA file of itself) and tls-stranger.pem;
                       in files, @CCERT_FP@ and @CCERT_PKEY_FP@ are tls-client.pem's
                       SHA-256 certificate and public key fingerprints
  SASL users (sasldb @DIR@/sasldb2 made by saslpasswd2, realm mx.example.com, named in
  $config_directory/sasl/smtpd.conf; and Dovecot's): alice/secret, bob/hunter2.
  > TEXT               send TEXT and CRLF, then read one reply
  | TEXT               send TEXT and CRLF without reading a reply
  = PYTHON-BYTES       send raw bytes written as a Python bytes literal body (b"..." inside)
  <                    read one reply
  sleep SECONDS
  close                read until the server closes the connection
"""
import argparse, difflib, glob, grp, os, pwd, re, shutil, socket, ssl, subprocess, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "..", "Support"))
import mailinstance  # noqa: E402
import dovecotlmtp  # noqa: E402
import postfixproto as pp  # noqa: E402

MAIN_CF = """myhostname = mx.example.com
# No queue manager hands out flow tokens here: cleanup must not wait for them.
in_flow_delay = 0
mail_name = Postfix
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


POLICY = ["inet:127.0.0.1:0"]
SASL_USERS = {"alice": "secret", "bob": "hunter2"}
FILES = [""]


def policy_server():
    """A policy server whose answer depends on the recipient's local part; "polecho"
    gets the request attributes back, so that both servers are seen to send the same."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    POLICY[0] = f"inet:127.0.0.1:{srv.getsockname()[1]}"

    def client(c):
        f = c.makefile("rwb")
        try:
            while True:
                attrs = {}
                while True:
                    line = f.readline()
                    if not line:
                        return
                    line = line.rstrip(b"\n").decode("utf-8", "replace")
                    if not line:
                        break
                    k, _, v = line.partition("=")
                    attrs[k] = v
                who = attrs.get("recipient", "").split("@")[0]
                if attrs.get("protocol_state") in ("DATA", "END-OF-MESSAGE") or not who:
                    who = attrs.get("sender", "").split("@")[0]
                if who == "polhang":
                    time.sleep(30)
                    return
                action = {
                    "polreject": "REJECT policy says no",
                    "poldefer": "DEFER_IF_PERMIT policy says later",
                    "polok": "OK",
                    "polwarn": "WARN policy is watching",
                    "pol550": "550 5.7.0 policy refuses",
                    "polbad": "FROBNICATE",
                    "polprepend": "PREPEND X-Policy: seen",
                }.get(who, "DUNNO")
                if who == "polecho":
                    keys = ["request", "protocol_state", "protocol_name", "helo_name", "sender", "recipient",
                            "recipient_count", "client_address", "client_name", "reverse_client_name", "sasl_method",
                            "size", "etrn_domain", "stress", "policy_context"]
                    action = "REJECT " + " ".join(f"{k}=[{attrs.get(k, '(none)')}]" for k in keys) + \
                        " queue_id=" + ("set" if attrs.get("queue_id") else "empty") + \
                        " instance=" + ("set" if attrs.get("instance") else "empty")
                f.write(f"action={action}\n\n".encode())
                f.flush()
        except OSError:
            pass
        finally:
            c.close()

    def serve():
        while True:
            c, _ = srv.accept()
            threading.Thread(target=client, args=(c,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()


class Scenario:
    def __init__(self, path):
        self.name = os.path.basename(path)[:-len(".dialogue")]
        self.options, self.files, self.steps, self.services = [], {}, [], []
        self.cleanup_options = []
        self.postmaps = []
        self.client, self.early, self.tlswrap = "127.0.0.1", False, False
        self.dovecot_auth = False
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
            elif line.startswith("postmap "):
                kind, _, name = line[8:].strip().partition(":")
                self.postmaps.append((kind, f"{self.name}-{name}"))
            elif line.startswith("cleanup "):
                self.cleanup_options.append(line[8:].strip())
            elif line.startswith("service "):
                self.services.append(line[8:].strip().replace("NAME-", self.name + "-"))
            elif line.startswith("client "):
                self.client = line[7:].strip()
            elif line.strip() == "early":
                self.early = True
            elif line.strip() == "tlswrap":
                self.tlswrap = True
            elif line.strip() == "dovecot-auth":
                self.dovecot_auth = True
            else:
                self.steps.append(line)

    def expand(self, value):
        return (value.strip().replace("@FILE@", f"@DIR@/{self.name}-").replace("NAME-", self.name + "-")
                .replace("@POLICY@", POLICY[0]))

    def options_text(self, options):
        out = []
        for o in options:
            name, value = o.split("=", 1)
            out.append(f"-o {{ {name.strip()} = {self.expand(value)} }}")
        return " ".join(out)

    def master_lines(self, port_ours, port_ref, index):
        common = self.options_text(self.options)
        # Each side has cleanup services of its own, logging under the scenario's tag.
        c = self.options_text(self.cleanup_options)
        ours_cleanup, ref_cleanup = f"{self.name}-cleanup", f"{self.name}-refcleanup"
        lines = (f"{ours_cleanup} unix n - n - 0 cleanup -o syslog_name=postfix/t{index}a {c}\n"
                 f"{ref_cleanup} unix n - n - 0 ref-cleanup -o syslog_name=postfix/t{index}b {c}\n")
        return lines + (f"127.0.0.1:{port_ours} inet n - n - - smtpd -o syslog_name=postfix/t{index}a "
                        f"-o cleanup_service_name={ours_cleanup} {common}\n"
                        f"127.0.0.1:{port_ref} inet n - n - - ref-smtpd -o syslog_name=postfix/t{index}b "
                        f"-o cleanup_service_name={ref_cleanup} {common}\n")


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

    def handshake(sock, args=""):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        words = args.split()
        version = next((w for w in words if not w.startswith("cert=")), None)
        for w in words:
            if w.startswith("cert="):
                ctx.load_cert_chain(f"{FILES[0]}/{w[5:]}.pem")
        if version == "TLSv1.2":
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        try:
            t = ctx.wrap_socket(sock)
        except (ssl.SSLError, OSError) as e:
            out.append(f"(TLS handshake failed: {type(e).__name__})")
            return sock, False
        out.append(f"(TLS: {t.version()})")
        return t, True

    alive = True
    if scn.tlswrap:
        s, alive = handshake(s)
    alive = alive and (scn.early or read_reply(s, buf, out, timeout=5))
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
            elif step == "tls" or step.startswith("tls "):
                s, alive = handshake(s, step[4:].strip())
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


CLOCK_WARNING = re.compile(r"^clog: warning: (file system clock is -?\d+ seconds? ahead of local clock|resetting file time stamps - this hurts performance)$")
QUEUED_AS = re.compile(r"queued as [0-9A-Za-z]+")
QUEUED_ID = re.compile(r"queued as ([0-9A-Za-z]+)")
DATE = re.compile(r"\w{3}, [ \d]\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4} \(\w+\)")
GENERATED_ID = re.compile(r"<\d{14}\.")
INSTANCE_DIR = re.compile(r"/tmp/swallow-inst-[^/]+/files")
LOG_ID = re.compile(r"\b[0-9A-F]{8,}\b")


def normalise(lines):
    """Queue IDs differ from run to run."""
    out = []
    for line in lines:
        line = QUEUED_AS.sub("queued as QUEUEID", line)
        if line.startswith("log: ") or line.startswith("clog: ") or line.startswith("q: "):
            line = LOG_ID.sub("QUEUEID", line)
            line = INSTANCE_DIR.sub("@DIR@", line)
            line = DATE.sub("DATE", line)
            line = GENERATED_ID.sub("<DATETIME.", line)
        elif line.startswith("< (error: "):
            line = "< (closed)"
        out.append(line)
    return out


def log_lines(inst, tag, deadline):
    """smtpd's lines ("log:"), then cleanup's ("clog:"), each in their own order."""
    pattern = re.compile(r"^\S+\s+\d+ [\d:]+ \S+ postfix/" + tag + r"/(?:ref-)?(smtpd|cleanup)\[\d+\]: (.*)$")
    while True:
        found = [m.groups() for m in map(pattern.match, inst.read_log().split("\n")) if m]
        smtpd = [t for p, t in found if p == "smtpd"]
        if any(l.startswith("disconnect from ") for l in smtpd) or time.time() > deadline:
            return ["log: " + l for l in smtpd] + ["clog: " + t for p, t in found if p == "cleanup"]
        time.sleep(0.05)


def queue_file(inst, queue_id):
    """The records of a queue file, one line each; what varies from run to run is masked."""
    for q in ("incoming", "hold"):
        path = f"{inst.queue}/{q}/{queue_id}"
        if os.path.exists(path):
            break
    else:
        return [f"q: {queue_id} (not in incoming or hold)"]
    data = open(path, "rb").read()
    out = [f"q: ({q})"]
    for _, kind, payload in pp.parse_records(data):
        text = payload.decode("utf-8", "replace")
        if kind == "C":
            f = text.split()
            text = f"recipients={f[2]} flags={f[3]} sendopts={f[5] if len(f) > 5 else ''}"
        elif kind == "T" or (kind == "A" and text.split("=")[0] in ("create_time", "log_client_port", "client_port", "server_port")):
            text = text.split("=")[0] + "=(varies)" if kind == "A" else "(time)"
        out.append(f"q: {kind} {text.encode('unicode_escape').decode('ascii')}")
    return out


CLEANUP_ID_LINE = re.compile(r"^clog: ([0-9A-F]{8,}): message-id=")


def transcript(inst, scn, port, tag):
    replies = converse(scn, port)
    logs = log_lines(inst, tag, time.time() + 20)
    files, queued = [], set()
    for line in replies:
        m = QUEUED_ID.search(line)
        if m and line.startswith("< 250"):
            queued.add(m.group(1))
            files += queue_file(inst, m.group(1))
    # cleanup logs a Message-ID only if it read the headers before smtpd dropped an
    # unfinished message: that is a race, so only messages that were queued count.
    logs = [l for l in logs if not (CLEANUP_ID_LINE.match(l) and CLEANUP_ID_LINE.match(l).group(1) not in queued)]
    # The reference cleanup's warnings about the machine's clocks say nothing of the dialogue.
    logs = [l for l in logs if not CLOCK_WARNING.match(l)]
    return normalise(replies + logs + files)


def make_certificates(d):
    """Self-signed keys and certificates, each in one PEM file: the server's RSA and
    ECDSA ones, and two clients'."""
    for name, args in (("tls-rsa", ["-newkey", "rsa:2048"]), ("tls-ec", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]),
                       ("tls-client", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-subj", "/CN=client.example.test/O=Client Org"]),
                       ("tls-stranger", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-subj", "/CN=stranger.example.test"])):
        subject = [] if "-subj" in args else ["-subj", "/CN=mx.example.com"]
        subprocess.run(["openssl", "req", "-x509", "-nodes", "-days", "30"] + subject + [
                        "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.crt"] + args, check=True, capture_output=True)
        with open(f"{d}/{name}.pem", "w") as f:
            f.write(open(f"{d}/{name}.key").read() + open(f"{d}/{name}.crt").read())
        os.chmod(f"{d}/{name}.pem", 0o600)
    os.chmod(f"{d}/tls-client.crt", 0o644)
    # The client's fingerprints, for the tables that name them.
    fp = subprocess.run(["openssl", "x509", "-in", f"{d}/tls-client.crt", "-noout", "-fingerprint", "-sha256"],
                        capture_output=True, text=True, check=True).stdout.strip().split("=", 1)[1]
    der = subprocess.run(["openssl", "x509", "-in", f"{d}/tls-client.crt", "-noout", "-pubkey"], capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=der, capture_output=True, check=True).stdout
    import hashlib
    pkey = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    for f in glob.glob(f"{d}/*"):
        if os.path.isfile(f) and not f.endswith((".pem", ".key", ".crt")):
            try:
                text = open(f).read()
            except UnicodeDecodeError:
                continue
            if "@CCERT_FP@" in text or "@CCERT_PKEY_FP@" in text:
                open(f, "w").write(text.replace("@CCERT_FP@", fp).replace("@CCERT_PKEY_FP@", pkey))


def make_sasl(d, etc):
    """The Cyrus SASL set-up: smtpd.conf in etc/sasl (where both smtpds look when
    cyrus_sasl_config_path is empty), the users in the sasldb d/sasldb2."""
    for conf in (f"{etc}/sasl",):
        os.makedirs(conf, exist_ok=True)
        open(f"{conf}/smtpd.conf", "w").write(f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\n"
                                              f"sasldb_path: {d}/sasldb2\nmech_list: PLAIN LOGIN CRAM-MD5\n")
    for user, password in SASL_USERS.items():
        subprocess.run(["saslpasswd2", "-c", "-p", "-f", f"{d}/sasldb2", "-u", "mx.example.com", user],
                       input=password.encode(), check=True)
    os.chown(f"{d}/sasldb2", pwd.getpwnam("postfix").pw_uid, grp.getgrnam("postfix").gr_gid)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--reference")
    ap.add_argument("--record", action="store_true")
    ap.add_argument("names", nargs="*")
    args = ap.parse_intermixed_args()
    if args.record and not args.reference:
        sys.exit("--record needs --reference")
    policy_server()
    names = args.names or sorted(f[:-9] for f in os.listdir(HERE) if f.endswith(".dialogue"))
    scenarios = [Scenario(f"{HERE}/{n}.dialogue") for n in names]
    files = {"local-users": LOCAL_USERS, "virtual": VIRTUAL, "vmailbox": VMAILBOX}
    master = ("cleanup unix n - n - 0 cleanup\n"
              "rewrite unix - - n - - trivial-rewrite\n"
              "proxymap unix - - n - - proxymap\n"
              "postlog unix-dgram n - n - 1 postlogd\n")
    # Both smtpds get their session ticket keys (the reference's also its entropy) from
    # our tlsmgr.
    master += "tlsmgr unix - - n 1000? 1 tlsmgr\n"
    ports = []
    for i, scn in enumerate(scenarios):
        files.update(scn.files)
        p = (mailinstance.free_port(), mailinstance.free_port())
        ports.append(p)
        text = scn.master_lines(p[0], p[1], i)
        master += "".join(l + "\n" for l in scn.services)
        master += text if args.reference else "".join(l + "\n" for l in text.split("\n") if l and "ref-" not in l)
    inst = mailinstance.Instance(args.build, MAIN_CF, master, reference=args.reference,
                                 ref_programs=("smtpd", "cleanup", "tlsmgr") if args.reference else (),
                                 dns=open(f"{HERE}/zone").read(), files=files)
    failures = []
    FILES[0] = f"{inst.root}/files"
    make_certificates(f"{inst.root}/files")
    make_sasl(f"{inst.root}/files", inst.etc)
    dovecots = []
    if any(scn.dovecot_auth for scn in scenarios):
        dovecots.append(dovecotlmtp.Dovecot(f"{inst.root}/files/dovecot-auth", users=SASL_USERS))
    for scn in scenarios:
        for kind, name in scn.postmaps:
            # Into files/pf/, a directory of mail_owner's (verify keeps tables elsewhere).
            pf = f"{inst.root}/files/pf"
            owner = (pwd.getpwnam("postfix").pw_uid, grp.getgrnam("postfix").gr_gid)
            os.makedirs(pf, exist_ok=True)
            os.chown(pf, *owner)
            shutil.copy(f"{inst.root}/files/{name}", f"{pf}/{name}")
            subprocess.run([f"{args.build}/postmap", "-c", inst.etc, f"{kind}:{pf}/{name}"], check=True)
            for f in glob.glob(f"{pf}/{name}*"):
                os.chown(f, *owner)
    try:
        inst.start(wait_for=f"public/{scenarios[-1].name}-cleanup")
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
        for d in dovecots:
            d.close()
        if os.environ.get("KEEP_LOG"):
            print(inst.read_log())
        if os.environ.get("KEEP_INSTANCE"):
            inst.stop()
            print("instance kept in", inst.root)
        else:
            if os.environ.get("KEEP_LOG"):
                print(inst.read_log())
            inst.cleanup()
    if args.record:
        print(f"recorded {len(scenarios)} transcripts")
        return 0
    print(f"{len(scenarios)} scenarios, {len(failures)} differences" + (": " + ", ".join(failures) if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
