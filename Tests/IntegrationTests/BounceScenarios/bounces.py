#!/usr/bin/env python3
"""Requests to the bounce, defer and trace services, against our bounce daemon and the
reference Postfix 3.7's, compared with recorded transcripts.

Each *.scenario here submits one message over SMTP (our smtpd and cleanup), moves its
queue file to active/ as the queue manager would, then sends the requests it lists to the
bounce daemon under test. The transcript holds every reply, each logfile after the step
that wrote it, the queue file's recipient records, every notification the daemon posted
(as queue file records) and the bounce daemon's log lines, normalised (queue IDs, dates,
times, process IDs) and compared with NAME.expected, recorded from the reference.

Usage: bounces.py BUILD_DIR [--reference DIR] [--record] [NAME...]

Scenario syntax (one directive a line; "#" lines are comments):
  -o NAME=VALUE          a main.cf setting for this scenario
  mail ADDR [PARAM...]   MAIL FROM with ESMTP parameters
  rcpt ADDR [PARAM...]   RCPT TO
  data                   message lines follow, up to a line "."
  append SERVICE ADDR key=value...   BOUNCE_CMD_APPEND for the recipient ADDR; keys:
                         status action reason diag_type diag_text mta_type mta_mname
                         orig (original_recipient, default ADDR) flags
  one ADDR key=value...  BOUNCE_CMD_ONE (same keys)
  flush SERVICE [key=value...]   BOUNCE_CMD_FLUSH; keys: flags sender encoding
                         envid ret smtputf8 queue
  warn SERVICE [...]     BOUNCE_CMD_WARN
  trace SERVICE [...]    BOUNCE_CMD_TRACE
  verp SERVICE delims=+= [...]   BOUNCE_CMD_VERP
  log SERVICE            show the logfile SERVICE/ID
"""
import argparse, difflib, glob, os, re, shlex, smtplib, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "..", "Support"))
import mailinstance  # noqa: E402
import postfixproto as pp  # noqa: E402

MAIN_CF = """myhostname = mx.example.com
# No queue manager hands out flow tokens here: cleanup must not wait for them.
in_flow_delay = 0
mydomain = example.com
mydestination = $myhostname, localhost
mynetworks = 127.0.0.0/8
smtpd_banner = $myhostname ESMTP
mail_name = Postfix
alias_maps =
alias_database =
local_recipient_maps =
smtpd_relay_restrictions = permit_mynetworks, reject
"""


def master_cf(port, bounce):
    return (f"127.0.0.1:{port} inet n - n - - smtpd\n"
            "cleanup unix n - n - 0 cleanup\n"
            "rewrite unix - - n - - trivial-rewrite\n"
            "proxymap unix - - n - - proxymap\n"
            "postlog unix-dgram n - n - 1 postlogd\n"
            f"bounce unix - - n - 0 {bounce}\n"
            f"defer unix - - n - 0 {bounce}\n"
            f"trace unix - - n - 0 {bounce}\n")


class Scenario:
    def __init__(self, path):
        self.name = os.path.basename(path)[:-9]
        self.options, self.steps = [], []
        lines = open(path).read().split("\n")
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            if not line.strip() or line.startswith("#"):
                continue
            if line.startswith("-o "):
                self.options.append(line[3:])
            elif line == "data":
                body = []
                while lines[i] != ".":
                    body.append(lines[i])
                    i += 1
                i += 1
                self.steps.append(("data", body))
            else:
                self.steps.append(tuple(shlex.split(line)))


def kv(words):
    out = {}
    for w in words:
        k, _, v = w.partition("=")
        out[k] = v
    return out


def records_text(path):
    out = []
    for off, t, d in pp.read_records(path):
        text = d.decode("utf-8", "replace")
        if t == "C":
            text = "(size)"
        out.append(f"{t} {text}")
    return out


def run_scenario(inst, port, scn):
    out = []
    mail, rcpts, body = None, [], None
    for st in scn.steps:
        if st[0] == "mail":
            mail = st
        elif st[0] == "rcpt":
            rcpts.append(st)
        elif st[0] == "data":
            body = st[1]
    before = set(os.listdir(inst.queue + "/incoming"))
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    s.ehlo("client.example")
    s.mail(mail[1], list(mail[2:]))
    for r in rcpts:
        s.rcpt(r[1], list(r[2:]))
    s.data("\r\n".join(body).encode() + b"\r\n")
    s.quit()
    new = sorted(set(os.listdir(inst.queue + "/incoming")) - before)
    if len(new) != 1:
        return [f"(harness: {len(new)} new queue files)"], []
    qid = new[0]
    os.rename(f"{inst.queue}/incoming/{qid}", f"{inst.queue}/active/{qid}")
    qpath = f"{inst.queue}/active/{qid}"
    offsets = {d.decode(): o for o, t, d in pp.read_records(qpath) if t == "R"}
    seen = set(os.listdir(inst.queue + "/incoming"))
    posted = []

    def logfile(service):
        paths = glob.glob(f"{inst.queue}/{service}/{qid}") + glob.glob(f"{inst.queue}/{service}/*/{qid}")
        if not paths:
            return [f"{service} log: (none)"]
        return [f"{service} log: {l}" for l in open(paths[0], errors="replace").read().split("\n")]

    for st in scn.steps:
        verb = st[0]
        if verb in ("mail", "rcpt", "data"):
            continue
        if verb == "log":
            out += logfile(st[1])
            continue
        if verb in ("append", "one"):
            service = st[1] if verb == "append" else "bounce"
            addr = st[2] if verb == "append" else st[1]
            a = kv(st[3:] if verb == "append" else st[2:])
            rcpt = [("original_recipient", a.get("orig", addr)), ("recipient", addr),
                    ("offset", offsets.get(addr, 0)), ("dsn_orig_rcpt", a.get("dsn_orig", "")),
                    ("notify_flags", a.get("notify", 0))]
            dsn = [("status", a.get("status", "5.0.0")), ("diag_type", a.get("diag_type", "")),
                   ("diag_text", a.get("diag_text", "")), ("mta_type", a.get("mta_type", "")),
                   ("mta_mname", a.get("mta_mname", "")), ("action", a.get("action", "")),
                   ("reason", a.get("reason", ""))]
            if verb == "append":
                req = [("nrequest", 0), ("flags", a.get("flags", 0)), ("queue_id", qid)] + rcpt + dsn
            else:
                req = [("nrequest", 4), ("flags", a.get("flags", 0)), ("queue_name", "active"), ("queue_id", qid),
                       ("encoding", a.get("encoding", "")), ("smtputf8", 0), ("sender", a.get("sender", mail[1])),
                       ("envelope_id", a.get("envid", "")), ("ret_flags", a.get("ret", 0))] + rcpt + dsn
        else:
            service = st[1]
            a = kv(st[2:])
            nreq = {"flush": 1, "warn": 2, "verp": 3, "trace": 5}[verb]
            req = [("nrequest", nreq), ("flags", a.get("flags", 0)), ("queue_name", a.get("queue", "active")),
                   ("queue_id", qid), ("encoding", a.get("encoding", "")), ("smtputf8", a.get("smtputf8", 0)),
                   ("sender", a.get("sender", mail[1])), ("envelope_id", a.get("envid", "")),
                   ("ret_flags", a.get("ret", 0))]
            if verb == "verp":
                req.append(("verp_delimiters", a.get("delims", "+=")))
        try:
            reply = pp.request(f"{inst.queue}/private/{service}", req, "delivery_status_protocol")
        except Exception as e:
            reply = [("error", repr(e))]
        out.append(f"{' '.join(st)} -> {reply}")
        time.sleep(0.2)
        now = set(os.listdir(inst.queue + "/incoming"))
        # In the order they were written: a queue ID's first digits are microseconds,
        # which start again every second, so the names need not sort that way.
        for f in sorted(now - seen, key=lambda f: os.stat(f"{inst.queue}/incoming/{f}").st_mtime_ns):
            posted.append(f)
            out.append(f"posted {f}:")
            out += ["  " + l for l in records_text(f"{inst.queue}/incoming/{f}")]
        seen = now
    if os.path.exists(qpath):
        out.append("queue file recipients: " + " ".join(f"{t}:{d.decode()}" for o, t, d in pp.read_records(qpath) if t in "RD"))
    else:
        out.append("queue file: (gone)")
    return out, [qid] + posted


def normalise(lines, idlist):
    text = "\n".join(lines)
    text = re.sub(r"^(  )?T \d+ \d+$", r"\1T TIME", text, flags=re.M)
    text = re.sub(r"create_time=\d+", "create_time=TIME", text)
    text = re.sub(r"^(  )?W +\d+$", r"\1W TIME", text, flags=re.M)
    text = re.sub(r"log: offset=\d+$", "log: offset=OFFSET", text, flags=re.M)
    for i, k in enumerate(idlist):
        text = text.replace(k, f"QID{i}")
    text = re.sub(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [ \d]\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4} \(\w+\)", "DATE", text)
    text = re.sub(r"\b\d{14}\.QID", "STAMP.QID", text)
    text = re.sub(r"QID(\d+)\.\d{9,10}/", r"QID\1.TIME/", text)
    return text.split("\n")


def log_lines(inst, program, since):
    out = []
    for line in inst.read_log()[since:].split("\n"):
        m = re.match(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ postfix/([\w-]+)\[\d+\]: (.*)$", line)
        if m and m.group(1) in (program, "cleanup"):
            out.append(f"log: {m.group(1).replace('ref-', '')}: {m.group(2)}")
    return out


def run_one(build, reference, scn):
    port = mailinstance.free_port()
    bounce = "ref-bounce" if reference else "bounce"
    main = MAIN_CF + "".join(o + "\n" for o in scn.options)
    inst = mailinstance.Instance(build, main, master_cf(port, bounce), reference=reference,
                                 ref_programs=("bounce",) if reference else ())
    try:
        inst.start(wait_for="private/trace")
        since = len(inst.read_log())
        try:
            lines, ids = run_scenario(inst, port, scn)
        except Exception as e:
            lines, ids = [f"(harness error: {e!r})"], []
        time.sleep(0.2)
        logs = log_lines(inst, bounce, since)
        logs = [l for l in logs if "unable to look up public/qmgr" not in l]
        for l in logs:
            m = re.match(r"log: cleanup: (\w+): message-id=", l)
            if m and m.group(1) not in ids:
                ids.append(m.group(1))
        return normalise(lines + logs, ids)
    finally:
        if os.environ.get("KEEP_LOG"):
            print(inst.read_log())
        inst.cleanup()


def run_side(build, reference, scenarios):
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(4) as pool:
        futures = {scn.name: pool.submit(run_one, build, reference, scn) for scn in scenarios}
    return {name: f.result() for name, f in futures.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--reference")
    ap.add_argument("--record", action="store_true")
    ap.add_argument("names", nargs="*")
    args = ap.parse_intermixed_args()
    if args.record and not args.reference:
        sys.exit("--record needs --reference")
    names = args.names or sorted(f[:-9] for f in os.listdir(HERE) if f.endswith(".scenario"))
    scenarios = [Scenario(f"{HERE}/{n}.scenario") for n in names]
    sides = [("ours", None)] if not args.record else []
    if args.reference:
        sides.append(("reference", args.reference))
    failures = []
    for side, ref in sides:
        results = run_side(args.build, ref, scenarios)
        for scn in scenarios:
            path = f"{HERE}/{scn.name}.expected"
            got = results[scn.name]
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
