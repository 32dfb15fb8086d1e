#!/usr/bin/env python3
"""Mail delivery end to end: our qmgr, local, bounce, error and discard against the
reference Postfix 3.7's, compared with recorded transcripts.

Each *.scenario here configures an instance (our smtpd, cleanup and trivial-rewrite in
front, then either our delivery programs or the reference's), submits messages over SMTP
one at a time, waits until the queue is empty (or for a given time), and records the log
lines of the delivery programs, the mailboxes, Maildirs and files the messages reached,
and what is left in the queue, normalised (queue IDs, dates, delays, process IDs,
Maildir file names) and compared with NAME.expected, recorded from the reference.

Test accounts swtalice, swtbob and swtcarol are made when missing (their home
directories live under /var/tmp/swallow-homes and are emptied for every scenario).

Usage: deliveries.py BUILD_DIR [--reference DIR] [--record] [NAME...]

Scenario syntax (one directive a line; "#" lines are comments):
  -o NAME=VALUE          a main.cf setting
  file NAME              the following lines, up to "end", become files/NAME
                         (@DIR@ = the files directory, @HOME@ = the homes directory)
  home USER NAME         the following lines, up to "end", become ~USER/NAME
  mode PATH OCTAL        chmod a file under files/
  service LINE           a master.cf line of the scenario's own; {p} becomes "ref/" on
                         the reference side, {r} on both sides (a reference program as
                         a peer; the scenario is skipped without the reference);
                         the reference side (@DIR@ = the files directory)
  mkdir PATH             a world-writable directory under files/
  send FROM TO[,TO...]   submit a message; its lines follow, up to "."
  sendmail [-u USER] ARGS...
                         submit a message with our sendmail (as USER, default root), the
                         reference pickup or ours picking it up; its lines follow, up to "."
                         ("\\r" at the end of a line is a CR, "\\z" a missing final newline,
                         a line "\\." a lone dot)
  wait [SECONDS]         until the queue is empty (at most SECONDS, default 20)
  sleep SECONDS
  flush                  postqueue -f: send F A D I to public/qmgr
  show PATH              a file or Maildir (new/) under the homes or files directory,
                         as ~USER/PATH, spool/USER or files/PATH
  queue                  list the files left in the queue directories
  until STATE [SECONDS]  wait until the queue holds STATE as "queue" prints it (commas for spaces)
  run COMMAND            a shell command (@DIR@ = the files directory, and the sinks' names)
  sink NAME [K=V...]     an SMTP/LMTP sink (Tests/Support/smtpsink.py) on a port of its own
                         (port=OTHER: sink OTHER's port, on the sink's own addr=...);
                         @SINK:NAME@ = [ADDR]:PORT and @SINKPORT:NAME@ = PORT in
                         options, services and files (unix=yes: a UNIX-domain socket,
                         @SINKSOCK:NAME@); its transcript is files/sink-NAME.log
  port NAME              a free port for a service line (@PORT:NAME@)
  dovecot NAME           Dovecot's LMTP server (Tests/Support/dovecotlmtp.py) on a socket
                         (@DOVECOT:NAME@), Maildirs in files/dovecot-NAME/mail/LOCALPART
  dns ... end            the zone of a DNS server that the instance alone asks
"""
import argparse, difflib, glob, os, pwd, re, shutil, smtplib, socket, subprocess, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "..", "Support"))
import mailinstance  # noqa: E402
import smtpsink  # noqa: E402
import dovecotlmtp  # noqa: E402
import postfixproto as pp  # noqa: E402

HOMES = "/var/tmp/swallow-homes"
USERS = ("swtalice", "swtbob", "swtcarol")
DELIVERY = ("qmgr", "local", "bounce", "error", "discard", "virtual", "pipe", "pickup", "flush", "smtp", "lmtp", "scache", "verify")

MAIN_CF = """myhostname = mx.example.com
mydomain = example.com
myorigin = $myhostname
mydestination = $myhostname, localhost
mynetworks = 127.0.0.0/8
smtpd_banner = $myhostname ESMTP
mail_name = Postfix
alias_maps = hash:@DIR@/aliases
alias_database = hash:@DIR@/aliases
local_recipient_maps =
mail_spool_directory = @DIR@/spool
relayhost = [127.0.0.1]:9
smtp_connect_timeout = 1s
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
biff = no
"""


REFERENCE = None


def master_cf(port, ref, extra=()):
    # The reference's programs run under their own names (smtp and lmtp choose their
    # protocol by name), from a directory of their own.
    p = "ref/" if ref else ""
    lines = [f"127.0.0.1:{port} inet n - n - - smtpd",
             "cleanup unix n - n - 0 cleanup",
             "rewrite unix - - n - - trivial-rewrite",
             "proxymap unix - - n - - proxymap",
             "postlog unix-dgram n - n - 1 postlogd",
             f"qmgr unix n - n 300 1 {p}qmgr",
             f"pickup unix n - n 60 1 {p}pickup",
             f"bounce unix - - n - 0 {p}bounce",
             f"defer unix - - n - 0 {p}bounce",
             f"trace unix - - n - 0 {p}bounce",
             f"error unix - - n - - {p}error",
             f"retry unix - - n - - {p}error",
             f"discard unix - - n - - {p}discard",
             f"local unix - n n - - {p}local",
             f"mailbox unix - n n - - {p}local",
             f"virtual unix - n n - - {p}virtual",
             f"scache unix - - n - 1 {p}scache",
             f"verify unix - - n - 1 {p}verify",
             # Both sides' smtp and smtpd get their session keys and caches (the
             # reference's also its entropy) from our tlsmgr.
             "tlsmgr unix - - n 1000? 1 tlsmgr",
             "smtp unix - - n - - error"]
    names = {l.split()[0] for l in extra if l.strip()}
    lines = [l for l in lines if l.split()[0] not in names]
    lines += [l.replace("{p}", p).replace("{r}", "ref/") for l in extra]
    return "\n".join(lines) + "\n"


def ensure_users():
    os.makedirs(HOMES, exist_ok=True)
    os.chmod(HOMES, 0o755)
    for u in USERS:
        try:
            pwd.getpwnam(u)
        except KeyError:
            subprocess.run(["useradd", "--no-create-home", "--home-dir", f"{HOMES}/{u}", "--shell", "/bin/sh", u],
                           check=True)


def reset_homes():
    for u in USERS:
        pw = pwd.getpwnam(u)
        h = f"{HOMES}/{u}"
        shutil.rmtree(h, ignore_errors=True)
        os.makedirs(h)
        os.chown(h, pw.pw_uid, pw.pw_gid)
        os.chmod(h, 0o755)


class Scenario:
    def __init__(self, path):
        self.name = os.path.basename(path)[:-9]
        self.options, self.files, self.homefiles, self.steps, self.services = [], {}, [], [], []
        self.sinks = []
        self.ports = []
        self.dns = None
        self.dovecots = []
        lines = open(path).read().split("\n")
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            if not line.strip() or line.startswith("#"):
                continue
            w = line.split()
            if w[0] == "-o":
                self.options.append(line[3:])
            elif w[0] == "service":
                self.services.append(line[8:])
            elif w[0] == "sink":
                # sink NAME [key=value...]: an SMTP sink on a port of its own (@SINK:NAME@ = [127.0.0.1]:port).
                opts = {}
                for kv in w[2:]:
                    k, _, v = kv.partition("=")
                    opts[k] = {"yes": True, "no": False}.get(v, v) if v else True
                self.sinks.append((w[1], opts))
            elif w[0] == "dovecot":
                # dovecot NAME: Dovecot's LMTP server on files/dovecot-NAME/lmtp (@DOVECOT:NAME@).
                self.dovecots.append(w[1])
            elif w[0] == "port":
                # port NAME: a free port for a service of the scenario's (@PORT:NAME@).
                self.ports.append(w[1])
            elif w[0] == "dns":
                # dns: the zone (up to "end") of a DNS server that the instance alone asks.
                body = []
                while lines[i] != "end":
                    body.append(lines[i])
                    i += 1
                i += 1
                self.dns = "\n".join(body) + "\n"
            elif w[0] in ("file", "home"):
                body = []
                while lines[i] != "end":
                    body.append(lines[i])
                    i += 1
                i += 1
                if w[0] == "file":
                    self.files[w[1]] = "\n".join(body) + "\n"
                else:
                    self.homefiles.append((w[1], w[2], "\n".join(body) + "\n"))
            elif w[0] in ("send", "sendmail"):
                body = []
                while lines[i] != ".":
                    body.append(lines[i])
                    i += 1
                i += 1
                if w[0] == "send":
                    self.steps.append(("send", w[1], w[2].split(","), w[3:], body))
                else:
                    self.steps.append(("sendmail", w[1:], body))
            else:
                self.steps.append(tuple(w))


def queue_files(inst):
    out = []
    for q in ("maildrop", "incoming", "active", "deferred", "hold", "corrupt"):
        n = len([f for f in glob.glob(f"{inst.queue}/{q}/**", recursive=True) if os.path.isfile(f)])
        if n:
            out.append(f"{q}={n}")
    return out


def wait_empty(inst, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not queue_files(inst):
            time.sleep(0.3)
            if not queue_files(inst):
                return True
        time.sleep(0.1)
    return False


def show(inst, spec):
    if spec.startswith("~"):
        user, _, rest = spec[1:].partition("/")
        path = f"{HOMES}/{user}/{rest}"
    elif spec.startswith("spool/"):
        path = f"{inst.root}/files/{spec}"
    else:
        path = f"{inst.root}/files/{spec.partition('/')[2]}"
    if os.path.isdir(path):
        out = [f"{spec}: (maildir)"]
        for sub in ("tmp", "cur", "new"):
            for f in sorted(os.listdir(f"{path}/{sub}")):
                out.append(f"{spec}{sub}/MAILDIRFILE:")
                out += ["  " + l for l in open(f"{path}/{sub}/{f}", errors="replace").read().split("\n")]
        return out
    if not os.path.exists(path):
        return [f"{spec}: (none)"]
    st = os.stat(path)
    owner = pwd.getpwuid(st.st_uid).pw_name
    text = open(path, errors="replace").read()
    if os.path.basename(path).startswith("sink-"):
        # Sessions of parallel deliveries end in either order: sort them (queue IDs aside).
        blocks = ["session\n" + b for b in text.split("session\n") if b]
        text = "".join(sorted(blocks, key=lambda b: re.sub(r"\b[0-9A-F]{10,12}\b", "", b)))
        # The client's port, forwarded with XFORWARD, changes from run to run.
        text = re.sub(r"^(C: XFORWARD .*PORT=)\d+", r"\1N", text, flags=re.M)
    return [f"{spec}: owner={owner} mode={oct(st.st_mode & 0o7777)}"] + ["  " + l for l in text.split("\n")]


def run_scenario(inst, port, scn, steps):
    out = []
    for st in steps:
        if st[0] == "send":
            _, frm, rcpts, params, body = st
            try:
                s = smtplib.SMTP("127.0.0.1", port, timeout=30)
                s.ehlo("client.example")
                mparams = [p for p in params if not p.startswith("NOTIFY=") and not p.startswith("ORCPT=")]
                rparams = [p for p in params if p.startswith("NOTIFY=") or p.startswith("ORCPT=")]
                s.mail("" if frm == "<>" else frm, mparams)
                for r in rcpts:
                    s.rcpt(r, rparams)
                s.data(("\r\n".join(body) + "\r\n").encode())
                s.quit()
                out.append(f"send {frm} {','.join(rcpts)}: ok")
            except Exception as e:
                out.append(f"send {frm} {','.join(rcpts)}: {e!r}")
        elif st[0] == "sendmail":
            _, args, body = st
            user = "root"
            if args[:1] == ["-u"]:
                user, args = args[1], args[2:]
            data = "\n".join("." if l == "\\." else l for l in body) + "\n"
            data = data.replace("\\r\n", "\r\n").replace("\\z\n", "")
            argv = [f"{inst.libexec}/sendmail", "-C", inst.etc] + [a.replace("@DIR@", inst.root + "/files") for a in args]
            if user != "root":
                argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"] + argv
            r = subprocess.run(argv, input=data.encode(), capture_output=True, timeout=30,
                               env={"PATH": "/usr/bin:/bin", "LANG": "C"})
            out.append(f"sendmail {' '.join(args)}: exit {r.returncode}")
            out += ["  " + l for l in r.stdout.decode(errors="replace").splitlines()]
            out += ["  stderr: " + l for l in r.stderr.decode(errors="replace").splitlines()]
        elif st[0] == "wait":
            ok = wait_empty(inst, float(st[1]) if len(st) > 1 else 20)
            out.append("wait: " + ("queue empty" if ok else "queue not empty: " + " ".join(queue_files(inst))))
        elif st[0] == "sleep":
            time.sleep(float(st[1]))
        elif st[0] == "until":
            # until STATE [seconds]: poll until the queue holds exactly STATE (as "queue" prints it),
            # so that a slow machine does not change what the next step sees.
            deadline = time.time() + (float(st[2]) if len(st) > 2 else 30)
            want = st[1].replace(",", " ")
            while time.time() < deadline and (" ".join(queue_files(inst)) or "empty") != want:
                time.sleep(0.2)
            time.sleep(0.5)
        elif st[0] == "flush":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(f"{inst.queue}/public/qmgr")
            s.sendall(b"FADI")
            s.close()
        elif st[0] == "show":
            out += show(inst, st[1])
        elif st[0] == "run":
            subprocess.run(["/bin/sh", "-c", " ".join(st[1:]).replace("@DIR@", inst.root + "/files")], check=False)
        elif st[0] == "queue":
            out.append("queue: " + (" ".join(queue_files(inst)) or "empty"))
    return out


LOG_RE = re.compile(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ postfix/([\w-]+)\[\d+\]: (.*)$")


def normalise(lines, log, root):
    ids = []
    for l in log:
        m = LOG_RE.match(l)
        if m:
            for q in re.findall(r"\b([0-9A-F]{10,12}): ", m.group(2)):
                if q not in ids:
                    ids.append(q)
    text = "\n".join(lines)
    logs = []
    for l in log:
        m = LOG_RE.match(l)
        if not m:
            continue
        prog = m.group(1)
        if prog not in DELIVERY + ("cleanup",):
            continue
        msg = m.group(2)
        if "unable to look up public/qmgr" in msg or "record is in \"key: value\" format" in msg:
            continue
        # The reference flush complains about our master's wakeup connection (ours takes
        # it as the refresh request it is).
        if "end-of-input while reading request from flush socket" in msg or "overriding earlier entry" in msg:
            continue
        logs.append(f"log: {prog}: {msg}")
    # Concurrent deliveries log in either order: sort each run of one program's lines.
    runs, cur = [], []
    for l in logs:
        if cur and l.split(":")[1] != cur[-1].split(":")[1]:
            runs.append(cur)
            cur = []
        cur.append(l)
    if cur:
        runs.append(cur)
    agents = ("log: local:", "log: virtual:", "log: pipe:", "log: error:", "log: discard:")
    logs = [l for r in runs for l in (sorted(r) if r[0].startswith(agents) else r)]
    # Messages are handled in parallel by different programs: keep each message's lines
    # in their order, the messages in the order they appeared.
    groups, order = {}, []
    for l in logs:
        m = re.match(r"log: [\w-]+: ([0-9A-F]{10,12}): ", l)
        key = m.group(1) if m else ""
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(l)
    logs = [l for k in order for l in groups[k]]
    text += "\n" + "\n".join(logs)
    for i, q in enumerate(ids):
        text = text.replace(q, f"QID{i}")
    text = text.replace(root, "INST")
    # Maildrop IDs (sendmail -bs) appear in no log line.
    text = re.sub(r"\b(queued as|with E?SMTP id) [0-9A-Za-z]{10,}\b", r"\1 MAILDROPID", text)
    for u in USERS + ("postfix",):
        uid = pwd.getpwnam(u).pw_uid
        text = re.sub(rf"\b(uid=|userid ){uid}\b", rf"\g<1>UID({u})", text)
    text = re.sub(r"delay=[\d.]+, delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+", "delay=D, delays=D", text)
    text = re.sub(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [ \d]\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4} \(\w+\)", "DATE", text)
    text = re.sub(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun) \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}", "ASCTIME", text)
    # Dovecot: its dates carry no zone name, its session IDs are random.
    text = re.sub(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [ \d]\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}", "DATE", text)
    text = re.sub(r"(id |> )[A-Za-z0-9+/]{22}(:R\d+)?\b", r"\1DOVECOTID", text)
    text = re.sub(r"\b\d{14}\.QID", "STAMP.QID", text)
    text = re.sub(r"QID(\d+)\.\d{9,10}/", r"QID\1.TIME/", text)
    out, seen = [], set()
    for l in text.split("\n"):
        # A retry repeats log lines exactly; how many retries happen depends on timing.
        if l.startswith("log: "):
            if l in seen:
                continue
            seen.add(l)
        out.append(l)
    return out


def run_one(build, reference, scn):
    port = mailinstance.free_port()
    sink_ports, sink_addrs = {}, {}
    for name, opts in scn.sinks:
        # port=OTHER: the same port as sink OTHER, on another address (MX hosts share a port).
        sink_ports[name] = sink_ports[opts["port"]] if "port" in opts else mailinstance.free_port()
        sink_addrs[name] = opts.get("addr", "127.0.0.1")
    sink_ports.update({name: mailinstance.free_port() for name in scn.ports})

    def sinks_in(text):
        for name in scn.dovecots:
            text = text.replace(f"@DOVECOT:{name}@", f"@DIR@/dovecot-{name}/lmtp")
        for name, sp in sink_ports.items():
            a = sink_addrs.get(name, "127.0.0.1")
            text = text.replace(f"@SINK:{name}@", f"[{'ipv6:' if ':' in a else ''}{a}]:{sp}")
            text = text.replace(f"@SINKPORT:{name}@", str(sp))
            text = text.replace(f"@SINKSOCK:{name}@", f"@DIR@/sink-{name}.sock").replace(f"@PORT:{name}@", str(sp))
        return text
    files = {k: sinks_in(v) for k, v in scn.files.items()}
    files.setdefault("aliases", "postmaster: root\n")
    steps = [[sinks_in(w) for w in st] if st[0] == "run" else st for st in scn.steps]
    main = MAIN_CF + "".join(sinks_in(o) + "\n" for o in scn.options)
    main = main.replace("@HOME@", HOMES)
    # {r}NAME: a reference program as a peer on our side too.
    peers = tuple(sorted({w[3:] for l in scn.services for w in l.split() if w.startswith("{r}")}))
    ref_programs = tuple(sorted(set(DELIVERY + ("tlsmgr",) if reference else ()) | set(peers)))
    inst = mailinstance.Instance(build, main, master_cf(port, reference is not None, [sinks_in(l) for l in scn.services]),
                                 reference=reference or (REFERENCE if peers else None), ref_programs=ref_programs, files=files,
                                 dns=scn.dns)
    sinks = [dovecotlmtp.Dovecot(f"{inst.root}/files/dovecot-{name}") for name in scn.dovecots]
    for name, opts in scn.sinks:
        opts = {k: v.replace("@DIR@", inst.root + "/files") if isinstance(v, str) else v for k, v in opts.items()}
        if opts.get("unix"):
            opts = dict(opts, path=f"{inst.root}/files/sink-{name}.sock")
        sinks.append(smtpsink.Sink(sink_ports[name], f"{inst.root}/files/sink-{name}.log", opts))
    try:
        os.makedirs(inst.root + "/files/spool")
        os.chmod(inst.root + "/files/spool", 0o1777)
        os.makedirs(inst.root + "/files/out")
        os.chmod(inst.root + "/files/out", 0o1777)
        os.chmod(inst.root + "/files", 0o755)
        subprocess.run([f"{build}/postalias", "-c", inst.etc, f"hash:{inst.root}/files/aliases"], check=True)
        for st in scn.steps:
            if st[0] == "mode":
                os.chmod(f"{inst.root}/files/{st[1]}", int(st[2], 8))
            elif st[0] == "mkdir":
                os.makedirs(f"{inst.root}/files/{st[1]}")
                os.chmod(f"{inst.root}/files/{st[1]}", 0o1777)
        reset_homes()
        for user, name, text in scn.homefiles:
            pw = pwd.getpwnam(user)
            p = f"{HOMES}/{user}/{name}"
            open(p, "w").write(text.replace("@DIR@", inst.root + "/files").replace("@HOME@", HOMES))
            os.chown(p, pw.pw_uid, pw.pw_gid)
            os.chmod(p, 0o644)
        inst.start(wait_for="public/qmgr")
        since = len(inst.read_log())
        try:
            lines = run_scenario(inst, port, scn, steps)
        except Exception as e:
            lines = [f"(harness error: {e!r})"]
        time.sleep(0.3)
        log = inst.read_log()[since:].split("\n")
        out = normalise(lines, log, inst.root)
        seen_ports = set()
        for name, sp in sink_ports.items():
            if sp not in seen_ports:
                seen_ports.add(sp)
                out = [l.replace(f"]:{sp}", f"]:PORT({name})") for l in out]
        return out
    finally:
        if os.environ.get("KEEP_LOG"):
            print(inst.read_log())
        for k in sinks:
            k.close()
        inst.cleanup()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--reference")
    ap.add_argument("--record", action="store_true")
    ap.add_argument("names", nargs="*")
    args = ap.parse_intermixed_args()
    if args.record and not args.reference:
        sys.exit("--record needs --reference")
    build = os.path.abspath(args.build)
    ensure_users()
    names = args.names or sorted(f[:-9] for f in os.listdir(HERE) if f.endswith(".scenario"))
    scenarios = [Scenario(f"{HERE}/{n}.scenario") for n in names]
    global REFERENCE
    REFERENCE = os.path.abspath(args.reference) if args.reference else None
    if not dovecotlmtp.available():
        for scn in [s for s in scenarios if s.dovecots]:
            print(f"skipped {scn.name}: Dovecot's LMTP server (dovecot-lmtpd) is not installed")
            scenarios.remove(scn)
    if not REFERENCE:
        for scn in [s for s in scenarios if any("{r}" in l for l in s.services)]:
            print(f"skipped {scn.name}: it needs the reference Postfix as a peer")
            scenarios.remove(scn)
    sides = [] if args.record else [("ours", None)]
    if args.reference:
        sides.append(("reference", os.path.abspath(args.reference)))
    failures = []
    for side, ref in sides:
        for scn in scenarios:
            got = run_one(build, ref, scn)
            path = f"{HERE}/{scn.name}.expected"
            if args.record:
                open(path, "w").write("\n".join(got) + "\n")
                continue
            expected = open(path).read().rstrip("\n").split("\n") if os.path.exists(path) else []
            if got != expected:
                failures.append(f"{scn.name} ({side})")
                print(f"=== {scn.name}: {side} differs from {scn.name}.expected")
                sys.stdout.writelines(l + "\n" for l in difflib.unified_diff(expected, got, "expected", side, lineterm="", n=2))
    if args.record:
        print(f"recorded {len(scenarios)} transcripts")
        return 0
    print(f"{len(scenarios)} scenarios, {len(failures)} differences" + (": " + ", ".join(failures) if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
