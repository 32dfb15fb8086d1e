#!/usr/bin/env python3
"""mail-bench: the mail system end to end, ours against the reference Postfix 3.7.

Each side runs in a temporary instance of its own (its own configuration, loopback port
and queue) under our master: our programs, or the reference's smtpd, cleanup,
trivial-rewrite, qmgr, virtual, bounce, pickup, sendmail and postdrop. The load comes
from swallow-source (built with the project), the same for both. Sides alternate run by
run; each figure is the median of the runs, with the spread (min-max). Figures:

  e2e        5,000 messages of ~2 KB over 20 concurrent sessions, from the first
             connection until every message is in the Maildir (virtual(8)), msg/s
  cpu        CPU seconds of the whole machine per 1,000 of those messages, less the
             load generator's own
  latency    200 one-message sessions, one at a time: connect to the 250 after DATA,
             median and p99 (ms)
  submit     500 sendmail invocations, one after another, until all are in the Maildir, msg/s
  smtpd      PSS and RSS of an smtpd process that has greeted a client and waits (KB)
  pss        total PSS of the instance's processes at idle and at the peak of the e2e run (KB)

Run as root after `make` and `make test` (which unpacks the reference into .ref/):

    python3 bench/mail-bench.py [--runs 3] [--messages 5000] [--sessions 20]
                                [--build .build/release] [--only e2e,latency,...]
"""
import argparse, glob, os, pwd, re, resource, shutil, statistics, subprocess, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "Tests", "Support"))
import mailinstance  # noqa: E402

REF_PROGRAMS = ("smtpd", "cleanup", "trivial-rewrite", "qmgr", "virtual", "bounce", "pickup", "sendmail", "postdrop")


def master_cf(port, p):
    return "\n".join([
        f"127.0.0.1:{port} inet n - n - - {p}smtpd",
    ] + mailinstance.core_services(p) + [
        f"virtual unix - n n - - {p}virtual",
        "proxymap unix - - n - - proxymap",
        "postlog unix-dgram n - n - 1 postlogd",
    ]) + "\n"


def cpu_jiffies():
    """All CPUs' busy time (user, nice, system, irq, softirq, steal), in seconds."""
    f = open("/proc/stat").readline().split()[1:]
    v = [int(x) for x in f]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def descendants(pid):
    kids = {}
    for d in glob.glob("/proc/[0-9]*"):
        try:
            st = open(d + "/stat").read()
            ppid = int(st[st.rfind(")") + 2:].split()[1])
            kids.setdefault(ppid, []).append(int(d[6:]))
        except (OSError, ValueError):
            pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def mem(pid):
    """(PSS, RSS) in KB."""
    try:
        text = open(f"/proc/{pid}/smaps_rollup").read()
    except OSError:
        return 0, 0
    pss = int(re.search(r"^Pss:\s+(\d+)", text, re.M).group(1))
    rss = int(re.search(r"^Rss:\s+(\d+)", text, re.M).group(1))
    return pss, rss


class Side:
    def __init__(self, build, reference, sessions):
        self.build, self.reference = build, reference
        self.port = mailinstance.free_port()
        p = "ref-" if reference else ""
        main = ("myhostname = bench.example\nmydomain = example\nmydestination =\n"
                "virtual_mailbox_domains = bench.example\nvirtual_mailbox_maps = texthash:@DIR@/vmailbox\n"
                "virtual_mailbox_base = @DIR@/mail\n"
                f"virtual_uid_maps = static:{pwd.getpwnam('nobody').pw_uid}\n"
                f"virtual_gid_maps = static:{pwd.getpwnam('nobody').pw_gid}\n"
                f"default_process_limit = {max(100, sessions + 10)}\n"
                "smtpd_client_connection_count_limit = 0\n")
        self.inst = mailinstance.Instance(build, main, master_cf(self.port, p), reference=reference,
                                          ref_programs=REF_PROGRAMS if reference else (),
                                          files={"vmailbox": "sink@bench.example sink/\n"})
        mail = self.inst.root + "/files/mail"
        os.makedirs(mail)
        nobody = pwd.getpwnam("nobody")
        os.chown(mail, nobody.pw_uid, nobody.pw_gid)
        self.maildir = mail + "/sink"
        if reference:
            # The reference's sendmail finds the reference postdrop here (run as root, so
            # it needs no set-gid bit, which would keep it from its shared libraries).
            cmd = self.inst.root + "/refcmd"
            os.makedirs(cmd)
            for prog in ("sendmail", "postdrop"):
                os.symlink(f"{reference}/usr/sbin/{prog}", f"{cmd}/{prog}")
            with open(self.inst.etc + "/main.cf", "a") as f:
                f.write(f"command_directory = {cmd}\n"
                        "export_environment = TZ MAIL_CONFIG LANG LD_LIBRARY_PATH\n")
            self.sendmail = f"{cmd}/sendmail"
            self.env = dict(os.environ, MAIL_CONFIG=self.inst.etc, LD_LIBRARY_PATH=f"{reference}/usr/lib/postfix")
        else:
            self.sendmail = self.inst.libexec + "/sendmail"
            self.env = dict(os.environ, MAIL_CONFIG=self.inst.etc)
        self.inst.start()

    def delivered(self):
        return sum(len(os.listdir(f"{self.maildir}/{d}")) for d in ("new", "cur") if os.path.isdir(f"{self.maildir}/{d}"))

    def wait_delivered(self, n, limit=600):
        deadline = time.time() + limit
        while self.delivered() < n and time.time() < deadline:
            time.sleep(0.01)
        return self.delivered() >= n

    def source(self, *args):
        start = time.time()
        p = subprocess.Popen([f"{self.build}/swallow-source", *args, f"127.0.0.1:{self.port}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = p.communicate()
        return out, err, time.time() - start

    def pss_total(self):
        return sum(mem(pid)[0] for pid in descendants(self.inst.master.pid))

    def close(self):
        self.inst.cleanup()


def source_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_e2e(side, n, sessions):
    before = side.delivered()
    idle = side.pss_total()
    peak = [idle]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], side.pss_total())
            time.sleep(0.25)
    t = threading.Thread(target=sample)
    t.start()
    cpu0, src0, start = cpu_jiffies(), source_cpu(), time.time()
    out, err, _ = side.source("-s", str(sessions), "-m", str(n), "-l", "2048", "-t", "sink@bench.example")
    ok = side.wait_delivered(before + n)
    elapsed = time.time() - start
    cpu = cpu_jiffies() - cpu0 - (source_cpu() - src0)
    stop.set()
    t.join()
    if not ok:
        raise RuntimeError(f"e2e: only {side.delivered() - before} of {n} delivered: {err}")
    return {"e2e": n / elapsed, "cpu": cpu / n * 1000, "pss_idle": idle, "pss_peak": peak[0]}


def run_latency(side, n=200):
    before = side.delivered()
    out, err, _ = side.source("-s", "1", "-m", str(n), "-T", "-t", "sink@bench.example")
    lat = sorted(int(x) / 1000 for x in out.split())
    side.wait_delivered(before + n)
    if len(lat) != n:
        raise RuntimeError(f"latency: {len(lat)} of {n} answered: {err}")
    return {"lat_median": statistics.median(lat), "lat_p99": lat[int(len(lat) * 0.99) - 1]}


def run_submit(side, n=500):
    before = side.delivered()
    msg = b"From: root\nTo: sink@bench.example\nSubject: submission bench\n\n" + b"x" * 1900 + b"\n"
    start = time.time()
    for _ in range(n):
        p = subprocess.run([side.sendmail, "-f", "root@bench.example", "sink@bench.example"], input=msg, env=side.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if p.returncode != 0:
            raise RuntimeError(f"sendmail: {p.stderr.decode()}")
    # pickup is woken by postdrop; the clock runs until the last one is delivered.
    ok = side.wait_delivered(before + n)
    if not ok:
        raise RuntimeError("submit: not all delivered")
    return {"submit": n / (time.time() - start)}


def run_memory(side):
    import socket
    s = socket.create_connection(("127.0.0.1", side.port))
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"EHLO bench.example\r\n")
    while True:
        line = f.readline()
        if line[3:4] != b"-":
            break
    time.sleep(0.5)
    found = []
    for pid in descendants(side.inst.master.pid):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0]
        except OSError:
            continue
        if cmd.endswith(b"smtpd"):
            found.append(mem(pid))
    s.sendall(b"QUIT\r\n")
    s.close()
    pss, rss = min(found) if found else (0, 0)
    return {"smtpd_pss": pss, "smtpd_rss": rss}


FIGURES = [("e2e", "end-to-end msg/s", True), ("cpu", "CPU s per 1000 msgs", False),
           ("lat_median", "latency median ms", False), ("lat_p99", "latency p99 ms", False),
           ("submit", "sendmail msg/s", True), ("smtpd_pss", "idle smtpd PSS KB", False),
           ("smtpd_rss", "idle smtpd RSS KB", False), ("pss_idle", "system PSS idle KB", False),
           ("pss_peak", "system PSS peak KB", False)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, ".build/release"))
    ap.add_argument("--reference", default=os.path.join(ROOT, ".ref/postfix"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--only", default="e2e,latency,submit,memory")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    build = os.path.abspath(args.build)
    results = {"ours": [], "reference": []}
    only = set(args.only.split(","))
    for run in range(args.runs):
        for name, ref in (("ours", None), ("reference", args.reference))[::1 if run % 2 == 0 else -1]:
            side = Side(build, ref, args.sessions)
            try:
                r = {}
                if "memory" in only:
                    r.update(run_memory(side))
                if "e2e" in only:
                    r.update(run_e2e(side, args.messages, args.sessions))
                if "latency" in only:
                    r.update(run_latency(side))
                if "submit" in only:
                    r.update(run_submit(side))
            finally:
                side.close()
            results[name].append(r)
            print(f"run {run + 1} {name}: " + ", ".join(f"{k}={v:.1f}" for k, v in sorted(r.items())), flush=True)
    print(f"\n{args.runs} runs, medians (min-max); ratio > 1 means ours is better")
    for key, label, higher in FIGURES:
        if not all(key in r for side in results.values() for r in side):
            continue
        o = [r[key] for r in results["ours"]]
        f = [r[key] for r in results["reference"]]
        mo, mf = statistics.median(o), statistics.median(f)
        ratio = (mo / mf if higher else mf / mo) if mo and mf else 0
        print(f"  {label:22} ours {mo:9.1f} ({min(o):.1f}-{max(o):.1f})   reference {mf:9.1f} ({min(f):.1f}-{max(f):.1f})   ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
