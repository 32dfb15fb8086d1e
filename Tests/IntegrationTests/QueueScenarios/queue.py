#!/usr/bin/env python3
"""Queue administration against the reference Postfix 3.7: showq, postqueue, postsuper, postcat.

One instance of ours gets mail in every queue: deferred with reasons from two retry
destinations (and a defer log that misses a recipient), one message made active, one on
hold, one force-expired, one left in maildrop and one maildrop file its owner alone may
read. Then, on that queue:

* listings: postqueue -p and -j, short and long layouts, by our postqueue and the
  reference's, each with our showq and with the reference's showq (which runs under our
  master as service "refshowq"): all four must print the same bytes;
* postcat on every queue file with each option set, ours and the reference's;
* postsuper: each operation on two copies of the stopped queue, ours on one and the
  reference's on the other; messages, exit codes and the resulting trees must match;
* the errors: usage, bad arguments, users who may not look, a stopped mail system.

Without the reference only our own programs run, with checks of what they print.

Usage: queue.py BUILD_DIR [--reference DIR] [-v]
"""
import argparse, difflib, grp, hashlib, os, pwd, re, shutil, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "..", "Support"))
import mailinstance  # noqa: E402

# mail_name: ours defaults to Swallow, and it shows in postqueue's messages.
MAIN_CF = """mail_name = Postfix
myhostname = mx.example.com
mydomain = example.com
mydestination =
relay_domains = a.example
transport_maps = texthash:@DIR@/transport
header_checks = regexp:@DIR@/header_checks
default_transport = retry:4.4.1 default destination down
minimal_backoff_time = 3600s
maximal_backoff_time = 7200s
queue_run_delay = 3600s
"""

TRANSPORT = """a.example retry:4.4.1 host a.example[192.0.2.1] refused to talk to me: 421 busy
b.example retry:4.2.2 mailbox "b" is full \\ really
"""
HEADER_CHECKS = "/^Subject: filtered/ FILTER retry:4.3.0 content filter is down\n"

MASTER_BASE = """postlog unix-dgram n - n - 1 postlogd
cleanup unix n - n - 0 cleanup
rewrite unix - - n - - trivial-rewrite
showq unix n - n - - showq
refshowq unix n - n - - ref-showq
"""
MASTER_RUN = MASTER_BASE + """pickup unix n - n 60 1 pickup
qmgr unix n - n 300 1 qmgr
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
retry unix - - n - - error
error unix - - n - - error
"""

# (sender, recipients, body size, subject)
MESSAGES = [
    ("alice@x.example", ["bob@a.example"], 200, "one"),
    ("<>", ["carol@a.example", "dave@b.example"], 300, "bounce-like"),
    ('"odd name"@x.example', ["eve@b.example", "Fred.Q@b.example"], 400, "quoted"),
    ("frank@x.example", ["g1@a.example", "g2@a.example", "g3@a.example"], 5000, "big"),
    ("henry@x.example", ["ivan@c.example"], 100, "filtered"),
    ("judy@x.example", ["kim@c.example"], 100, "held"),
]


class Failures:
    def __init__(self, verbose):
        self.count = 0
        self.cases = 0
        self.verbose = verbose

    def same(self, name, outputs):
        """outputs: [(label, text)], all texts must be equal."""
        self.cases += 1
        base_label, base = outputs[0]
        for label, text in outputs[1:]:
            if text != base:
                self.count += 1
                print(f"DIFFERENT {name}: {base_label} vs {label}")
                for line in difflib.unified_diff(base.splitlines(), text.splitlines(), base_label, label, lineterm=""):
                    print("  " + line)
                return
        if self.verbose:
            print(f"same {name}:\n" + "".join("    " + l + "\n" for l in base.splitlines()))

    def check(self, name, ok, detail=""):
        self.cases += 1
        if not ok:
            self.count += 1
            print(f"FAILED {name}: {detail}")
        elif self.verbose:
            print(f"ok {name}")


def run(argv, env=None, user=None, stdin=b"", cwd=None):
    """Runs a program; standard input comes from a file (seekable, as a shell's "<" gives)."""
    def demote():
        if user:
            pw = pwd.getpwnam(user)
            os.setgid(pw.pw_gid)
            # The reference's postqueue is not installed set-gid: lend it the group instead.
            os.setgroups([grp.getgrnam("postdrop").gr_gid] if "postqueue" in argv[0] else [])
            os.setuid(pw.pw_uid)
    import tempfile
    with tempfile.TemporaryFile() as tf:
        tf.write(stdin)
        tf.seek(0)
        r = subprocess.run(argv, stdin=tf, capture_output=True, env=env, preexec_fn=demote if user else None,
                           cwd=cwd, timeout=60)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def show(result, replace=(), quiet=False):
    """The exit code and output as text; `quiet` drops -v debug lines from standard error."""
    code, out, err = result
    if quiet:
        err = "".join(l for l in err.splitlines(True)
                      if not re.search(r": (name_mask|inet_addr_local|mynetworks_core|dict_\w+|mail_conf\w*): ", l))
    text = f"exit {code}\n--- stdout\n{out}--- stderr\n{err}"
    for a, b in replace:
        text = text.replace(a, b)
    return text


class Setup:
    def __init__(self, build, ref):
        self.build, self.ref = build, ref
        files = {"transport": TRANSPORT, "header_checks": HEADER_CHECKS}
        self.inst = mailinstance.Instance(build, MAIN_CF, MASTER_RUN, reference=ref,
                                          ref_programs=("showq",) if ref else (), files=files)
        self.etc = self.inst.etc
        self.env = dict(os.environ, MAIL_CONFIG=self.etc, TZ="UTC", LANG="C")
        self.ref_env = dict(self.env, LD_LIBRARY_PATH=f"{ref}/usr/lib/postfix") if ref else None
        self.configs = {}

    def config(self, name, extra):
        """A configuration directory beside the instance's with extra main.cf lines."""
        d = f"{self.inst.root}/{name}"
        if not os.path.exists(d):
            os.makedirs(d)
            shutil.copy(f"{self.etc}/master.cf", d)
            # Settings replace the instance's lines of the same names.
            names = {l.split("=")[0].strip() for l in extra.splitlines() if "=" in l}
            base = [l for l in open(f"{self.etc}/main.cf").read().splitlines(True)
                    if l.split("=")[0].strip() not in names]
            open(f"{d}/main.cf", "w").write("".join(base) + extra)
        return d

    def ours(self, program):
        return f"{self.inst.libexec}/{program}"

    def theirs(self, program):
        return f"{self.ref}/usr/sbin/{program}"

    def ids(self):
        """Queue ID -> queue name, for every message file."""
        out = {}
        for q in ("maildrop", "incoming", "active", "deferred", "hold"):
            for dirpath, _, names in os.walk(f"{self.inst.queue}/{q}"):
                for n in names:
                    out[n] = q
        return out

    def submit(self, sender, rcpts, size, subject, user=None):
        body = f"Subject: {subject}\nFrom: someone\n\n" + ("x" * 70 + "\n") * (size // 71 + 1)
        code, out, err = run([self.ours("sendmail"), "-f", sender] + rcpts, env=self.env, user=user, stdin=body.encode())
        if code != 0:
            raise RuntimeError(f"sendmail failed: {out} {err}")

    def log_ids(self):
        """sender -> queue ID, from the cleanup/qmgr "from=<...>" lines."""
        out = {}
        for m in re.finditer(r"\]: ([0-9A-Za-z]+): from=<(.*?)>, size", self.inst.read_log()):
            out.setdefault(m.group(2), m.group(1))
        return out


def build_queue(s):
    s.inst.start()
    for sender, rcpts, size, subject in MESSAGES:
        s.submit(sender, rcpts, size, subject)
    deadline = time.time() + 30
    while time.time() < deadline:
        ids = s.ids()
        defer_logs = sum(len(n) for _, _, n in os.walk(s.inst.queue + "/defer"))
        if len(ids) == len(MESSAGES) and all(q == "deferred" for q in ids.values()) and defer_logs == len(MESSAGES):
            break
        time.sleep(0.2)
    else:
        raise RuntimeError(f"mail did not reach the deferred queue: {s.ids()}\n{s.inst.read_log()}")
    s.inst.stop()
    by_sender = s.log_ids()
    q = s.inst.queue
    # One message becomes active, one is held, one force-expired; one defer log loses a line.
    frank = by_sender["frank@x.example"]
    log = [p for p in walk_files(q + "/defer") if p.endswith("/" + frank)][0]
    text = open(log).read()
    records = [r for r in text.split("\n\n") if r.strip()]
    open(log, "w").write("\n" + records[0].strip("\n") + "\n\n")
    alice = by_sender["alice@x.example"]
    src = [p for p in walk_files(q + "/deferred") if p.endswith("/" + alice)][0]
    os.rename(src, f"{q}/active/{alice}")
    code, out, err = run([s.ours("postsuper"), "-h", by_sender["judy@x.example"]], env=s.env)
    if code != 0:
        raise RuntimeError(f"postsuper -h: {out}{err}")
    code, out, err = run([s.ours("postsuper"), "-e", by_sender['"odd name"@x.example']], env=s.env)
    if code != 0:
        raise RuntimeError(f"postsuper -e: {out}{err}")
    # Mail that stays in maildrop, under long queue IDs: no pickup or qmgr from now on.
    open(s.etc + "/master.cf", "w").write(MASTER_BASE)
    open(s.etc + "/main.cf", "a").write("enable_long_queue_ids = yes\n")
    s.inst.start()
    s.submit("lisa@x.example", ["mike@a.example"], 150, "in maildrop")
    s.submit("nina@x.example", ["oscar@a.example"], 150, "private", user="nobody")
    private = [p for p in walk_files(q + "/maildrop") if os.stat(p).st_uid == pwd.getpwnam("nobody").pw_uid][0]
    os.chmod(private, 0o700)
    return by_sender


def walk_files(top):
    for dirpath, _, names in os.walk(top):
        for n in names:
            yield f"{dirpath}/{n}"


def listings(s, f):
    """postqueue -p/-j: ours and the reference's, each with both showq daemons."""
    short_ours = s.config("etc-short", "enable_long_queue_ids = no\n")
    long_ours = s.config("etc-long", "enable_long_queue_ids = yes\n")
    refq = s.config("etc-refshowq", "enable_long_queue_ids = no\nshowq_service_name = refshowq\n")
    long_refq = s.config("etc-long-refshowq", "enable_long_queue_ids = yes\nshowq_service_name = refshowq\n")
    for opt in ("-p", "-j"):
        for layout, (cfg, cfg_refq) in (("short", (short_ours, refq)), ("long", (long_ours, long_refq))):
            outs = [("ours+our showq", show(run([s.ours("postqueue"), "-c", cfg, opt], env=s.env)))]
            if s.ref:
                outs.append(("reference+reference showq", show(run([s.theirs("postqueue"), "-c", cfg_refq, opt], env=s.ref_env))))
                outs.append(("reference+our showq", show(run([s.theirs("postqueue"), "-c", cfg, opt], env=s.ref_env))))
                outs.append(("ours+reference showq", show(run([s.ours("postqueue"), "-c", cfg_refq, opt], env=s.env))))
            f.same(f"postqueue {opt} ({layout})", outs)
            text = outs[0][1]
            if opt == "-p" and layout == "short":
                f.check("mailq shows the queue", "-- " in text and " Kbytes in 7 Requests." in text
                        and "*" in text and "!" in text and "#" in text and "(reason unavailable)" in text
                        and "MAILER-DAEMON" in text and '"odd name"@x.example' in text
                        and "host a.example[192.0.2.1] refused to talk to me: 421 busy)" in text, text)
            if opt == "-j" and layout == "short":
                lines = [l for l in text.split("--- stdout\n")[1].split("--- stderr")[0].splitlines() if l]
                import json
                try:
                    objs = [json.loads(l) for l in lines]
                    f.check("postqueue -j is JSON", len(objs) == 7 and {o["queue_name"] for o in objs}
                            == {"maildrop", "active", "deferred", "hold"}, text)
                except ValueError as e:
                    f.check("postqueue -j is JSON", False, f"{e}: {text}")
    # mailq through sendmail.
    f.check("mailq = postqueue -p", run([s.ours("sendmail"), "-bp"], env=s.env)[1] ==
            run([s.ours("postqueue"), "-p"], env=s.env)[1])
    # Our postcat -j: one JSON object per record, every section named.
    import json
    some = sorted(s.ids())[0]
    text = run([s.ours("postcat"), "-j", "-q", some], env=s.env)[1]
    try:
        objs = [json.loads(l) for l in text.splitlines()]
        f.check("postcat -j", {o["section"] for o in objs} >= {"envelope", "header", "body", "message contents"}
                and any(o.get("name") == "sender" for o in objs), text)
    except ValueError as e:
        f.check("postcat -j", False, f"{e}: {text}")


def errors(s, f, ids):
    """Usage and permission errors, ours against the reference's."""
    deferred = [i for i, q in ids.items() if q == "deferred"][0]
    acl = s.config("etc-acl", "authorized_mailq_users = root\nauthorized_flush_users = root\n")
    cases = [
        ("postqueue", [], None, s.etc),
        ("postqueue", ["-x"], None, s.etc),
        ("postqueue", ["-p", "-f"], None, s.etc),
        ("postqueue", ["-p", "extra"], None, s.etc),
        ("postqueue", ["-s", "bad..site"], None, s.etc),
        ("postqueue", ["-s", "x" * 120], None, s.etc),
        ("postqueue", ["-i", "bad/id"], None, s.etc),
        ("postqueue", ["-s", "c.example"], None, s.etc),
        ("postqueue", ["-s", "a.example"], None, s.etc),
        ("postqueue", ["-i", deferred], None, s.etc),
        ("postqueue", ["-p"], "nobody", s.etc),
        ("postqueue", ["-j"], "nobody", s.etc),
        ("postqueue", ["-p"], "nobody", acl),
        ("postqueue", ["-f"], "nobody", acl),
        ("postqueue", ["-s", "a.example"], "nobody", acl),
        ("postcat", ["-q", deferred], "nobody", s.etc),
        ("postcat", ["-q", "NOSUCHID"], None, s.etc),
        ("postcat", ["-q", "bad/id"], None, s.etc),
        ("postcat", ["-s", "x1", "/dev/null"], None, s.etc),
        ("postcat", ["-z"], None, s.etc),
        ("postcat", ["/nonexistent/file"], None, s.etc),
        ("postsuper", [], "nobody", s.etc),
        ("postsuper", ["-c", "relative", "-p"], None, s.etc),
        ("postsuper", ["-x"], None, s.etc),
        ("postsuper", ["-d", deferred, "nosuchqueue"], None, s.etc),
    ]
    for program, args, user, cfg in cases:
        name = f"{program} {' '.join(args)}" + (f" as {user}" if user else "") + (" (acl)" if cfg == acl else "")
        env = dict(s.env, MAIL_CONFIG=cfg)
        ours = s.ours(program)
        outs = [("ours", show(run([ours] + args, env=env, user=user), [(ours, program)]))]
        if s.ref:
            theirs = s.theirs(program)
            renv = dict(s.ref_env, MAIL_CONFIG=cfg)
            outs.append(("reference", show(run([theirs] + args, env=renv, user=user), [(theirs, program)])))
        f.same(name, outs)
        if not s.ref:
            f.check(f"{name} fails", outs[0][1].startswith("exit 0") == (user == "nobody" and cfg == s.etc and program == "postqueue"),
                    outs[0][1])


def postcat_cases(s, f, ids):
    option_sets = [[], ["-e"], ["-h"], ["-b"], ["-bh"], ["-o"], ["-d"], ["-od"], ["-v"], ["-v", "-r"],
                   ["-e", "-o"], ["-s", "0"], ["-h", "-o"], ["-b", "-v"]]
    for qid, queue in sorted(ids.items()):
        for opts in option_sets:
            if queue == "maildrop" and opts == ["-v", "-r"]:
                continue
            args = opts + ["-q", qid]
            quiet = "-v" in opts
            outs = [("ours", show(run([s.ours("postcat")] + args, env=s.env), [(s.ours("postcat"), "postcat")], quiet))]
            if s.ref:
                outs.append(("reference", show(run([s.theirs("postcat")] + args, env=s.ref_env),
                                               [(s.theirs("postcat"), "postcat")], quiet)))
            f.same(f"postcat {' '.join(args)} ({queue})", outs)
            if not s.ref and not opts:
                f.check(f"postcat -q {qid} shows the file", "*** ENVELOPE RECORDS " in outs[0][1]
                        and "*** MESSAGE FILE END " in outs[0][1], outs[0][1])
    # By path, from standard input, from an offset, and things that are not queue files.
    some = [p for p in walk_files(s.inst.queue + "/deferred")][0]
    data = open(some, "rb").read()
    m = data.find(b"M\x00")
    junk = s.inst.root + "/files/junk"
    open(junk, "wb").write(b"hello world\n")
    broken = s.inst.root + "/files/broken"
    open(broken, "wb").write(data[:len(data) // 2])
    for name, args, stdin in [("path", [some], b""), ("stdin", [], data), ("stdin-offset", ["-s", str(m)], data),
                              ("offset", ["-s", str(m), some], b""), ("junk", [junk], b""), ("truncated", [broken], b""),
                              ("empty-stdin", [], b"")]:
        outs = [("ours", show(run([s.ours("postcat")] + args, env=s.env, stdin=stdin), [(s.ours("postcat"), "postcat")]))]
        if s.ref:
            outs.append(("reference", show(run([s.theirs("postcat")] + args, env=s.ref_env, stdin=stdin),
                                           [(s.theirs("postcat"), "postcat")])))
        f.same(f"postcat {name}", outs)


ID_RE = re.compile(r"\b[0-9A-Za-z]{10,}\b")


def tree(root, anonymous=False):
    """Relative path, mode and content digest of everything under the queue directories;
    `anonymous` hides file names (copies have other inodes, so -s names files otherwise)."""
    out = []
    for q in ("maildrop", "incoming", "active", "deferred", "hold", "defer", "bounce", "trace", "flush"):
        for dirpath, dirs, names in os.walk(f"{root}/{q}"):
            rel = os.path.relpath(dirpath, root)
            for d in sorted(dirs):
                out.append(f"{rel}/{d}/")
            for n in sorted(names):
                st = os.lstat(f"{dirpath}/{n}")
                digest = hashlib.sha1(open(f"{dirpath}/{n}", "rb").read()).hexdigest()[:12] if os.path.isfile(f"{dirpath}/{n}") else "-"
                shown = ID_RE.sub("ID", n) if anonymous else n
                out.append(f"{rel}/{shown} {oct(st.st_mode & 0o7777)} sha:{digest}")
    return sorted(out)


def postsuper_cases(s, f, ids):
    """Each case on two fresh copies of the stopped queue: ours on one, the reference's on the other."""
    s.inst.stop()
    by_queue = {}
    for i, q in sorted(ids.items()):
        by_queue.setdefault(q, []).append(i)
    deferred, held, active = by_queue["deferred"][0], by_queue["hold"][0], by_queue["active"][0]
    maildrop = by_queue["maildrop"][0]
    snapshot = s.inst.root + "/snapshot"
    os.makedirs(snapshot)
    for q in ("maildrop", "incoming", "active", "deferred", "hold", "corrupt", "defer", "bounce", "trace", "flush", "saved"):
        if os.path.exists(f"{s.inst.queue}/{q}"):
            subprocess.run(["cp", "-a", f"{s.inst.queue}/{q}", snapshot], check=True)

    def prepare(dst, extra):
        subprocess.run(["cp", "-a", snapshot, dst], check=True)
        cfg = s.config(os.path.basename(dst) + "-etc", f"queue_directory = {dst}\n" + extra)
        return cfg

    cases = [
        ("delete one", ["-d", deferred], b"", ""),
        ("delete held", ["-d", held], b"", ""),
        ("delete two by stdin", ["-d", "-"], f"{deferred}\n{active}\nNOSUCH\n".encode(), ""),
        ("delete all", ["-d", "ALL"], b"", ""),
        ("delete all deferred", ["-d", "ALL", "deferred"], b"", ""),
        ("delete unknown", ["-d", "NOSUCHID"], b"", ""),
        ("delete bad id", ["-d", "bad/id"], b"", ""),
        ("hold one", ["-h", deferred], b"", ""),
        ("hold maildrop", ["-h", maildrop], b"", ""),
        ("hold all", ["-h", "ALL"], b"", ""),
        ("release one", ["-H", held], b"", ""),
        ("release all", ["-H", "ALL"], b"", ""),
        ("requeue one", ["-r", deferred], b"", ""),
        ("requeue all", ["-r", "ALL"], b"", ""),
        ("requeue all hold", ["-r", "ALL", "hold"], b"", ""),
        ("expire one", ["-e", deferred], b"", ""),
        ("expire all", ["-e", "ALL"], b"", ""),
        ("expire and release", ["-f", held], b"", ""),
        ("expire and release all", ["-f", "ALL"], b"", ""),
        ("several in order", ["-h", deferred, "-H", held, "-d", active, "-v"], b"", ""),
        ("purge", ["-p"], b"", ""),
        ("hash depth 2", ["-s"], b"", "hash_queue_depth = 2\n"),
        ("hash incoming", ["-s"], b"", "hash_queue_names = deferred, defer, incoming, hold\n"),
        ("hash maildrop", ["-s"], b"", "hash_queue_names = maildrop\n"),
        ("redundant structure check", ["-S"], b"", ""),
        ("long names to short", ["-s"], b"", "enable_long_queue_ids = no\n"),
        ("default repair", [], b"", ""),
        ("repair then hold", ["-s", "-h", deferred], b"", ""),
    ]
    for name, args, stdin, extra in cases:
        results, trees = [], []
        sides = [("ours", s.ours("postsuper"), s.env)] + ([("reference", s.theirs("postsuper"), s.ref_env)] if s.ref else [])
        for label, program, env in sides:
            dst = f"{s.inst.root}/q-{label}-{len(results)}-{abs(hash(name))}"
            cfg = prepare(dst, extra)
            if name == "purge":
                # A stale temporary file, and a fresh one.
                old = f"{dst}/incoming/1234.5678"
                open(old, "w").write("x")
                os.utime(old, (time.time() - 8 * 86400,) * 2)
                open(f"{dst}/incoming/99.1", "w").write("y")
                os.mkfifo(f"{dst}/deferred/fifo")
                pw = pwd.getpwnam("postfix")
                for p in (old, f"{dst}/incoming/99.1", f"{dst}/deferred/fifo"):
                    os.chown(p, pw.pw_uid, pw.pw_gid)
            r = run([program, "-c", cfg] + args, env=dict(env, MAIL_CONFIG=cfg), stdin=stdin)
            text = show(r, [(program, "postsuper"), (dst, "QUEUE")], quiet="-v" in args)
            renames = not args or "-s" in args or "-S" in args
            results.append((label, ID_RE.sub("ID", text) if renames else text))
            trees.append((label, "\n".join(tree(dst, anonymous=renames)) + "\n"))
        f.same(f"postsuper {name}", results)
        f.same(f"postsuper {name}: queue", trees)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--reference")
    ap.add_argument("-v", action="store_true")
    args = ap.parse_args()
    ref = os.path.abspath(args.reference) if args.reference else None
    if ref and not os.path.exists(f"{ref}/usr/sbin/postqueue"):
        ref = None
    f = Failures(args.v)
    s = Setup(os.path.abspath(args.build), ref)
    try:
        build_queue(s)
        ids = s.ids()
        listings(s, f)
        errors(s, f, ids)
        postcat_cases(s, f, ids)
        postsuper_cases(s, f, ids)
        # The mail system down: root reads the queue directly, others cannot.
        s.inst.stop()
        for user in (None, "nobody"):
            for opt in ("-p", "-f"):
                outs = [("ours", show(run([s.ours("postqueue"), opt], env=s.env, user=user), [(s.ours("postqueue"), "postqueue")]))]
                if ref:
                    outs.append(("reference", show(run([s.theirs("postqueue"), opt], env=s.ref_env, user=user),
                                                   [(s.theirs("postqueue"), "postqueue")])))
                f.same(f"postqueue {opt} with the mail system down" + (f" as {user}" if user else ""), outs)
    finally:
        s.inst.cleanup()
    print(f"{f.cases} cases, {f.count} differences" + ("" if ref else " (reference unavailable: our programs only)"))
    sys.exit(1 if f.count else 0)


if __name__ == "__main__":
    main()
