#!/usr/bin/env python3
"""sendmail and postdrop against the reference Postfix 3.7's, case by case.

sendmail cases run our sendmail and the reference's with a stand-in postdrop (and
postqueue, postalias, postfix, smtpd) that saves the arguments it got and the record
stream sendmail sent; postdrop cases feed one record stream to our postdrop and to the
reference's and keep its answer and the maildrop file it made. Exit status, standard
output and error, and what was captured are normalised and compared with
submit.expected, recorded from the reference.

Usage: submit.py BUILD_DIR [--reference DIR] [--record]
"""
import argparse, difflib, os, shutil, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "..", "Support"))
import postfixproto as pp  # noqa: E402

FAKE = f"{HERE}/fake-command.py"

MSG = b"Subject: hello\n\nbody line\n"


def rec(t, data=b""):
    if isinstance(data, str):
        data = data.encode()
    out, n = bytearray(t.encode()), len(data)
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes(out) + data


# (name, argv0, args, stdin, extra environment, extra main.cf)
SENDMAIL_CASES = [
    ("plain", "sendmail", ["-f", "alice", "bob"], MSG, {}, ""),
    ("several-per-argument", "sendmail", ["-f", "alice@example.org", "Bob <bob@example.com>, carol", "dave (Dave)"], MSG, {}, ""),
    ("empty-argument", "sendmail", ["-f", "alice", ""], MSG, {}, ""),
    ("null-sender", "sendmail", ["-f", "<>", "bob"], MSG, {}, ""),
    ("two-senders", "sendmail", ["-f", "a@x, b@y", "bob"], MSG, {}, ""),
    ("quoted-sender", "sendmail", ["-f", '"a b"@example.org', "bob"], MSG, {}, ""),
    ("login-name", "sendmail", ["bob"], MSG, {}, ""),
    ("fullname-option", "sendmail", ["-F", "Alice Example", "-f", "alice", "bob"], MSG, {}, ""),
    ("fullname-env", "sendmail", ["-f", "alice", "bob"], MSG, {"NAME": "From Env"}, ""),
    ("extract", "sendmail", ["-t", "-f", "alice"],
     b"To: bob@example.com, Carol <carol@example.com>\nCc: dave\nBcc: eve@example.net\nSubject: x\n\nbody\n", {}, ""),
    ("extract-plus-arguments", "sendmail", ["-t", "-f", "alice", "zed"], b"To: bob\nSubject: x\n\nbody\n", {}, ""),
    ("extract-resent", "sendmail", ["-t", "-f", "alice"],
     b"To: bob\nResent-From: x\nResent-To: carol\nResent-Cc: dave\nCc: eve\n\nbody\n", {}, ""),
    ("extract-folded", "sendmail", ["-t", "-f", "alice"], b"To: bob,\n  carol,\n\tdave\nSubject: x\n\nTo: nobody\n", {}, ""),
    ("extract-none", "sendmail", ["-t", "-f", "alice"], b"Subject: x\n\nbody\n", {}, ""),
    ("extract-with-bv", "sendmail", ["-t", "-bv", "bob"], MSG, {}, ""),
    ("no-recipients", "sendmail", ["-f", "alice"], MSG, {}, ""),
    ("from-lines", "sendmail", ["-f", "alice", "bob"], b"From alice  Mon Jan  1\n>From again\nSubject: x\n\nFrom inside\n", {}, ""),
    ("crlf", "sendmail", ["-f", "alice", "bob"], b"Subject: x\r\n\r\nline\r\r\n", {}, ""),
    ("crlf-strict", "sendmail", ["-f", "alice", "bob"], b"Subject: x\n\nline\r\n", {}, "sendmail_fix_line_endings = strict\n"),
    ("crlf-never", "sendmail", ["-f", "alice", "bob"], b"Subject: x\r\n\r\nline\r\n", {}, "sendmail_fix_line_endings = never\n"),
    ("fix-eol-bad", "sendmail", ["-f", "alice", "bob"], MSG, {}, "sendmail_fix_line_endings = sometimes\n"),
    ("dot-ends", "sendmail", ["-f", "alice", "bob"], b"Subject: x\n\nbefore\n.\nafter\n", {}, ""),
    ("dot-kept-i", "sendmail", ["-i", "-f", "alice", "bob"], b"Subject: x\n\nbefore\n.\nafter\n", {}, ""),
    ("dot-kept-oi", "sendmail", ["-oi", "-f", "alice", "bob"], b"Subject: x\n\n.\n..\n", {}, ""),
    ("no-final-newline", "sendmail", ["-f", "alice", "bob"], b"Subject: x\n\nlast", {}, ""),
    ("empty-input", "sendmail", ["-f", "alice", "bob"], b"", {}, ""),
    ("long-lines", "sendmail", ["-f", "alice", "bob"],
     b"Subject: x\n\n" + b"a" * 2048 + b"\n" + b"b" * 2047 + b"\n" + b"c" * 5000 + b"\n", {}, ""),
    ("long-header-extract", "sendmail", ["-t", "-f", "alice"], b"To: bob\nX-Long: " + b"h" * 3000 + b"\n\nbody\n", {}, ""),
    ("nul-and-8bit", "sendmail", ["-f", "alice", "bob"], b"Subject: x\n\nnul\0here caf\xc3\xa9 bare\rcr\n", {}, ""),
    ("notify", "sendmail", ["-N", "success, delay", "-f", "alice", "bob", "carol"], MSG, {}, ""),
    ("notify-never", "sendmail", ["-N", "never", "-f", "alice", "bob"], MSG, {}, ""),
    ("notify-bad", "sendmail", ["-N", "sometimes", "-f", "alice", "bob"], MSG, {}, ""),
    ("notify-extract", "sendmail", ["-t", "-N", "failure", "-f", "alice"], b"To: bob\n\nbody\n", {}, ""),
    ("envid", "sendmail", ["-V", "env-id.1", "-f", "alice", "bob"], MSG, {}, ""),
    ("envid-too-long", "sendmail", ["-V", "x" * 101, "-f", "alice", "bob"], MSG, {}, ""),
    ("envid-bad", "sendmail", ["-V", "a\tb", "-f", "alice", "bob"], MSG, {}, ""),
    ("verp", "sendmail", ["-XV", "-f", "alice", "bob"], MSG, {}, ""),
    ("verp-chars", "sendmail", ["-XV=+", "-f", "alice", "bob"], MSG, {}, ""),
    ("verp-old-option", "sendmail", ["-V", "+=", "-f", "alice", "bob"], MSG, {}, ""),
    ("verp-old-glued", "sendmail", ["-V+=", "-f", "alice", "bob"], MSG, {}, ""),
    ("verp-bad", "sendmail", ["-XVab", "-f", "alice", "bob"], MSG, {}, ""),
    ("verp-null-sender", "sendmail", ["-XV", "-f", "", "bob"], MSG, {}, ""),
    ("body-8bit", "sendmail", ["-B", "8BITMIME", "-f", "alice", "bob"], MSG, {}, ""),
    ("body-7bit", "sendmail", ["-B", "7BIT", "-f", "alice", "bob"], MSG, {}, ""),
    ("body-bad", "sendmail", ["-B", "BINARYMIME", "-f", "alice", "bob"], MSG, {}, ""),
    ("ret-full", "sendmail", ["-R", "full", "-V", "id", "-f", "alice", "bob"], MSG, {}, ""),
    ("ret-bad", "sendmail", ["-R", "some", "-f", "alice", "bob"], MSG, {}, ""),
    ("gateway", "sendmail", ["-G", "-f", "alice", "bob"], MSG, {}, ""),
    ("verify", "sendmail", ["-bv", "-f", "alice", "bob", "carol, dave"], b"ignored\n", {}, ""),
    ("verify-null-sender", "sendmail", ["-bv", "-f", "<>", "bob"], b"", {}, ""),
    ("verify-notify", "sendmail", ["-bv", "-N", "success", "bob"], b"", {}, ""),
    ("verify-verbose", "sendmail", ["-bv", "-v", "bob"], b"", {}, ""),
    ("verbose", "sendmail", ["-v", "-f", "alice", "bob"], MSG, {}, ""),
    ("ignored-options", "sendmail", ["-oem", "-om", "-o7", "-o8", "-U", "-c", "-x", "-h", "5", "-L", "tag", "-O", "a=b",
                                     "-R", "hdrs", "-A", "c", "-e", "m", "-p", "smtp", "-bm", "-f", "alice", "bob"], MSG, {}, ""),
    ("double-dash", "sendmail", ["-f", "alice", "--", "-bob"], MSG, {}, ""),
    ("unknown-option", "sendmail", ["-z", "bob"], MSG, {}, ""),
    ("missing-value", "sendmail", ["bob", "-f"], MSG, {}, ""),
    ("missing-value-end", "sendmail", ["-f"], MSG, {}, ""),
    ("n-option", "sendmail", ["-n", "bob"], MSG, {}, ""),
    ("b-unsupported", "sendmail", ["-bz", "bob"], MSG, {}, ""),
    ("X-unsupported", "sendmail", ["-XA", "bob"], MSG, {}, ""),
    ("mailq-mode", "sendmail", ["-bp"], b"", {}, ""),
    ("mailq-mode-recipient", "sendmail", ["-bp", "bob"], b"", {}, ""),
    ("mailq-name", "mailq", [], b"", {}, ""),
    ("mailq-name-verbose", "mailq", ["-v", "-v"], b"", {}, ""),
    ("flush", "sendmail", ["-q"], b"", {}, ""),
    ("flush-recipient", "sendmail", ["-q", "bob"], b"", {}, ""),
    ("flush-interval", "sendmail", ["-q30m", "bob"], b"", {}, ""),
    ("flush-site", "sendmail", ["-qRexample.com"], b"", {}, ""),
    ("flush-site-empty", "sendmail", ["-qR"], b"", {}, ""),
    ("flush-site-recipient", "sendmail", ["-qRexample.com", "bob"], b"", {}, ""),
    ("flush-id", "sendmail", ["-qIABCDEF"], b"", {}, ""),
    ("flush-other", "sendmail", ["-qS"], b"", {}, ""),
    ("flush-site-not-enqueue", "sendmail", ["-bp", "-qRexample.com"], b"", {}, ""),
    ("extract-not-enqueue", "sendmail", ["-bp", "-t"], b"", {}, ""),
    ("newaliases-mode", "sendmail", ["-bi"], b"", {}, "alias_database = hash:/etc/aliases, cdb:/etc/more\n"),
    ("newaliases-I", "sendmail", ["-I"], b"", {}, "alias_database = hash:/etc/aliases\n"),
    ("newaliases-verbose", "sendmail", ["-bi", "-v"], b"", {}, "alias_database = hash:/etc/aliases\n"),
    ("newaliases-name", "newaliases", [], b"", {}, "alias_database = hash:/etc/aliases\n"),
    ("newaliases-oA", "newaliases", ["-oAhash:/tmp/other"], b"", {}, "alias_database = hash:/etc/aliases\n"),
    ("newaliases-oA-empty", "newaliases", ["-oA"], b"", {}, ""),
    ("newaliases-none", "newaliases", [], b"", {}, "alias_database =\n"),
    ("newaliases-recipient", "newaliases", ["bob"], b"", {}, "alias_database = hash:/etc/aliases\n"),
    ("standalone", "sendmail", ["-bs"], b"", {}, ""),
    ("standalone-recipient", "sendmail", ["-bs", "bob"], b"", {}, ""),
    ("host-status", "sendmail", ["-bh"], b"", {}, ""),
    ("daemon", "sendmail", ["-bd"], b"", {}, ""),
    ("daemon-flush", "sendmail", ["-q", "-bd"], b"", {}, ""),
    ("postdrop-refuses", "sendmail", ["-f", "alice", "bob"], MSG, {"FAKE_POSTDROP": "fail"}, ""),
    ("postdrop-status-bad", "sendmail", ["-f", "alice", "bob"], MSG, {"FAKE_STATUS": "1"}, ""),
    ("postdrop-status-write", "sendmail", ["-f", "alice", "bob"], MSG, {"FAKE_STATUS": "2"}, ""),
    ("postdrop-status-other", "sendmail", ["-f", "alice", "bob"], MSG, {"FAKE_STATUS": "4"}, ""),
    ("submit-acl", "sendmail", ["-f", "alice", "bob"], MSG, {}, "authorized_submit_users = !root, static:all\n"),
    ("submit-acl-list", "sendmail", ["-f", "alice", "bob"], MSG, {}, "authorized_submit_users = nobody\n"),
]

GOOD_ENVELOPE = rec("A", "rewrite_context=local") + rec("S", "alice") + rec("R", "bob")
GOOD_CONTENT = rec("M") + rec("N", "Subject: x") + rec("N") + rec("N", "body") + rec("X")

# (name, record stream, extra main.cf)
POSTDROP_CASES = [
    ("good", GOOD_ENVELOPE + GOOD_CONTENT + rec("E"), ""),
    ("caller-time-dropped", rec("T", "1 2") + GOOD_ENVELOPE + GOOD_CONTENT + rec("E"), ""),
    ("attributes", rec("A", "envelope_id=xyz") + rec("A", "ret_flags=1") + rec("A", "rewrite_context=remote")
     + rec("F", "Full") + rec("S", "alice") + rec("A", "encoding=8bit") + rec("A", "trace_flags=1024")
     + rec("V", "+=") + rec("A", "notify_flags=6") + rec("R", "bob") + GOOD_CONTENT
     + rec("A", "notify_flags=2") + rec("R", "carol") + rec("E"), ""),
    ("attribute-not-allowed", rec("A", "log_client_address=1.2.3.4") + GOOD_ENVELOPE + GOOD_CONTENT + rec("E"), ""),
    ("attribute-bad-value", rec("A", "rewrite_context=elsewhere") + rec("A", "encoding=binary") + GOOD_ENVELOPE
     + GOOD_CONTENT + rec("E"), ""),
    ("trace-flags-other", rec("A", "trace_flags=256") + GOOD_ENVELOPE + GOOD_CONTENT + rec("E"), ""),
    ("attribute-malformed", rec("A", "noequals") + GOOD_ENVELOPE + GOOD_CONTENT + rec("E"), ""),
    ("cancelled", GOOD_ENVELOPE + rec("M") + rec("N", "partial"), ""),
    ("empty-input", b"", ""),
    ("no-sender", rec("R", "bob") + GOOD_CONTENT + rec("E"), ""),
    ("no-recipient", rec("S", "alice") + GOOD_CONTENT + rec("E"), ""),
    ("wrong-segment", GOOD_ENVELOPE + rec("M") + rec("R", "x") + rec("X") + rec("E"), ""),
    ("pointer-record", GOOD_ENVELOPE + rec("p", "0") + GOOD_CONTENT + rec("E"), ""),
    ("truncated-length", GOOD_ENVELOPE + b"N", ""),
    ("record-too-long", rec("S", "a" * 3000) + rec("R", "bob") + GOOD_CONTENT + rec("E"), ""),
    ("nul-in-sender", rec("S", "ali\0ce") + rec("R", "bob") + GOOD_CONTENT + rec("E"), ""),
    ("nul-in-text", GOOD_ENVELOPE + rec("M") + rec("N", "a\0b") + rec("X") + rec("E"), ""),
    ("long-text", GOOD_ENVELOPE + rec("M") + rec("L", "x" * 2048) + rec("N", "y") + rec("X") + rec("E"), ""),
    ("after-end", GOOD_ENVELOPE + GOOD_CONTENT + rec("E") + rec("N", "more"), ""),
    ("submit-acl", GOOD_ENVELOPE + GOOD_CONTENT + rec("E"), "authorized_submit_users = !root, static:all\n"),
]

# Where we refuse what Postfix 3.7 accepts, as later Postfix versions do: record type 0,
# and CR, LF or NUL inside envelope records. Ours must end with a fatal error and leave
# no file.
HARDENED_CASES = [
    ("type-zero", GOOD_ENVELOPE + rec("\0", "x") + GOOD_CONTENT + rec("E")),
    ("newline-in-recipient", rec("S", "alice") + rec("R", "bob\nX-Evil: yes") + GOOD_CONTENT + rec("E")),
    ("cr-in-sender", rec("S", "alice\r") + rec("R", "bob") + GOOD_CONTENT + rec("E")),
    ("nul-in-attribute", rec("A", "envelope_id=a\0b") + GOOD_ENVELOPE + GOOD_CONTENT + rec("E")),
]


def attr0(data):
    """attr0 lists as text lines."""
    out, lst, parts = [], [], data.split(b"\0")
    i = 0
    while i < len(parts) - 1:
        if parts[i] == b"":
            out.append("[" + ", ".join(lst) + "]")
            lst = []
            i += 1
            continue
        lst.append(f"{parts[i].decode(errors='replace')}={parts[i + 1].decode(errors='replace') if i + 1 < len(parts) else ''}")
        i += 2
    if lst or (parts and parts[-1]):
        out.append("partial: " + ", ".join(lst) + repr(parts[-1]))
    return out


def records(data):
    return [f"  {t} {payload!r}" for _, t, payload in pp.parse_records(data)]


def setup(root, ref, main_extra):
    etc, q, bind = f"{root}/etc", f"{root}/q", f"{root}/bin"
    for d in (etc, q, bind, f"{root}/cap"):
        os.makedirs(d)
    os.makedirs(f"{q}/maildrop", 0o730)
    os.makedirs(f"{q}/public", 0o710)
    open(f"{etc}/main.cf", "w").write(
        f"queue_directory = {q}\ncommand_directory = {bind}\ndaemon_directory = {bind}\n"
        f"compatibility_level = 3.7\nmyhostname = mx.example.com\nmail_owner = postfix\nsetgid_group = postdrop\n"
        f"export_environment = TZ MAIL_CONFIG LANG CAPTURE_DIR FAKE_POSTDROP FAKE_STATUS\n"
        + main_extra)
    for p in ("postdrop", "postqueue", "postalias", "postfix", "smtpd"):
        os.symlink(FAKE, f"{bind}/{p}")
    return etc


def env_for(ref, root, extra):
    env = {"PATH": "/usr/bin:/bin", "LANG": "C", "CAPTURE_DIR": f"{root}/cap"}
    if ref:
        env["LD_LIBRARY_PATH"] = f"{ref}/usr/lib/postfix"
    env.update(extra)
    return env


def clean_stderr(text, root):
    return [l.replace(root, "ROOT") for l in text.decode(errors="replace").splitlines()]


def run_sendmail(build, ref, case):
    name, argv0, args, stdin, env_extra, main_extra = case
    root = tempfile.mkdtemp(prefix="swallow-submit-")
    try:
        etc = setup(root, ref, main_extra)
        prog = f"{ref}/usr/sbin/sendmail" if ref else f"{build}/sendmail"
        link = f"{root}/{argv0}"
        os.symlink(prog, link)
        r = subprocess.run([link, "-C", etc] + args, input=stdin, capture_output=True, timeout=30,
                           env=env_for(ref, root, env_extra))
        out = [f"== sendmail {name}", f"exit {r.returncode}"]
        out += ["stdout: " + l for l in r.stdout.decode(errors="replace").splitlines()]
        out += ["stderr: " + l for l in clean_stderr(r.stderr, root)]
        for f in ("argv", "records"):
            p = f"{root}/cap/{f}"
            if os.path.exists(p):
                data = open(p, "rb").read()
                out += ["ran: " + l for l in data.decode(errors="replace").splitlines()] if f == "argv" else ["records:"] + records(data)
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_postdrop(build, ref, case):
    name, stream, main_extra = case
    root = tempfile.mkdtemp(prefix="swallow-submit-")
    try:
        etc = setup(root, ref, main_extra)
        prog = f"{ref}/usr/sbin/postdrop" if ref else f"{build}/postdrop"
        r = subprocess.run([prog, "-c", etc], input=stream, capture_output=True, timeout=30, env=env_for(ref, root, {}))
        out = [f"== postdrop {name}", f"exit {r.returncode}"]
        ids = []
        for l in attr0(r.stdout):
            for part in l.strip("[]").split(", "):
                if part.startswith("queue_id="):
                    ids.append(part[9:])
            out.append("stdout: " + l)
        out += ["stderr: " + l for l in clean_stderr(r.stderr, root)]
        files = sorted(os.listdir(f"{root}/q/maildrop"))
        for f in files:
            st = os.stat(f"{root}/q/maildrop/{f}")
            # Postfix 3.7 leaves a refused submission behind, incomplete (0644, which
            # pickup skips); we remove it. Only complete files are compared.
            if st.st_mode & 0o700 != 0o700:
                continue
            out.append(f"maildrop file: mode={oct(st.st_mode & 0o7777)} named as announced={f in ids}")
            recs = records(open(f"{root}/q/maildrop/{f}", "rb").read())
            if recs and recs[0].startswith("  T "):
                recs[0] = "  T (arrival time)"
            out += recs
        text = "\n".join(out)
        for i, q in enumerate(ids):
            text = text.replace(q, f"QID{i}")
        return text.split("\n")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_all(build, ref):
    out = []
    for c in SENDMAIL_CASES:
        out += run_sendmail(build, ref, c)
    for c in POSTDROP_CASES:
        out += run_postdrop(build, ref, c)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--reference")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    ref = os.path.abspath(args.reference) if args.reference else None
    expected_path = f"{HERE}/submit.expected"
    if args.record:
        if not ref:
            sys.exit("--record needs --reference")
        open(expected_path, "w").write("\n".join(run_all(build, ref)) + "\n")
        print("recorded")
        return 0
    expected = open(expected_path).read().rstrip("\n").split("\n")
    failures = []
    for side, r in [("ours", None)] + ([("reference", ref)] if ref else []):
        got = run_all(build, r)
        if got != expected:
            failures.append(side)
            print(f"=== {side} differs from submit.expected")
            sys.stdout.writelines(l + "\n" for l in difflib.unified_diff(expected, got, "expected", side, lineterm="", n=3))
    for name, stream in HARDENED_CASES:
        got = run_postdrop(build, None, (name, stream, ""))
        if got[1] != "exit 1" or not any("malformed input" in l or "unexpected record type: 0" in l for l in got) or any(l.startswith("maildrop") for l in got):
            failures.append(f"hardened {name}")
            print(f"=== hardened case {name}: ours accepted it or left a file:\n" + "\n".join(got))
    n = len(SENDMAIL_CASES) + len(POSTDROP_CASES) + len(HARDENED_CASES)
    print(f"{n} cases, {len(failures)} differences" + (": " + ", ".join(failures) if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
