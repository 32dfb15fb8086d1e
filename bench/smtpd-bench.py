#!/usr/bin/env python3
"""smtpd + cleanup against the reference Postfix's, in the same run: our master runs our
smtpd (feeding our cleanup) on one loopback port and Postfix 3.7's smtpd (feeding Postfix's
cleanup) on another, on the same configuration, with our trivial-rewrite. Mail is accepted
into incoming/ (there is no qmgr here), so this measures receiving only:
- throughput: C concurrent clients send N messages of about 2 KB (5 per session), runs
  alternating between the two servers, median of R runs;
- latency: single sessions one after another, connect to the 250 after DATA (median, p99);
- resident memory of one idle smtpd process of each.

Usage: python3 bench/smtpd-bench.py [--messages N] [--clients C] [--runs R] [--latency L]
Needs `make` (release build) and the reference in .ref/postfix (make test unpacks it). Root.
"""
import argparse, os, pwd, shutil, smtplib, socket, statistics, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".build/release")
REF = os.path.join(ROOT, ".ref/postfix")
BODY = "Subject: bench\r\nFrom: a@example.org\r\nTo: u@relay.example\r\n\r\n" + ("x" * 76 + "\r\n") * 26


def rss_each(name, conf):
    """The median resident size of the idle processes called `name` of this instance."""
    sizes = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            env = open(f"/proc/{pid}/environ", "rb").read()
            if os.path.basename(cmd[0].decode()) == name and conf.encode() in env:
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith("VmRSS:"):
                        sizes.append(int(line.split()[1]))
        except OSError:
            continue
    return statistics.median(sizes) if sizes else 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def send(port, messages):
    c = smtplib.SMTP("127.0.0.1", port)
    c.ehlo("client.example")
    for i in range(messages):
        c.sendmail("a@example.org", ["u%d@relay.example" % i], BODY)
    c.quit()


def throughput(port, total, clients):
    per = total // clients
    def worker():
        for _ in range(per // 5):
            send(port, 5)
    t = time.perf_counter()
    ths = [threading.Thread(target=worker) for _ in range(clients)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    return (per // 5) * 5 * clients / (time.perf_counter() - t)


def latency(port, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        send(port, 1)
        out.append(time.perf_counter() - t)
    out.sort()
    return statistics.median(out), out[min(len(out) - 1, int(len(out) * 0.99))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency", type=int, default=100)
    args = ap.parse_args()
    for p in (BIN + "/smtpd", REF + "/usr/lib/postfix/sbin/smtpd"):
        if not os.path.exists(p):
            sys.exit(f"missing {p}: run `make` and `make test` first")
    root = tempfile.mkdtemp(prefix="smtpd-bench-")
    master = None
    ours, theirs = free_port(), free_port()
    try:
        for d in ("etc", "q", "data", "libexec"):
            os.makedirs(f"{root}/{d}")
        for p in ("master", "postlogd", "postfix", "postconf", "trivial-rewrite", "smtpd", "cleanup"):
            os.symlink(f"{BIN}/{p}", f"{root}/libexec/{p}")
        for p in ("smtpd", "cleanup"):
            os.symlink(f"{REF}/usr/lib/postfix/sbin/{p}", f"{root}/libexec/ref-{p}")
        open(f"{root}/etc/main.cf", "w").write(f"""queue_directory = {root}/q
data_directory = {root}/data
daemon_directory = {root}/libexec
command_directory = {root}/libexec
meta_directory = {root}/etc
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = loopback-only
inet_protocols = ipv4
maillog_file = {root}/maillog
maillog_file_prefixes = /tmp
myhostname = mx.example.com
mydomain = example.com
compatibility_level = 3.7
relay_domains = relay.example
mynetworks = 127.0.0.0/8
alias_maps =
smtpd_client_connection_count_limit = 0
in_flow_delay = 0
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME LD_LIBRARY_PATH={REF}/usr/lib/postfix
""")
        open(f"{root}/etc/master.cf", "w").write(
            f"127.0.0.1:{ours} inet n - n - 30 smtpd\n"
            f"127.0.0.1:{theirs} inet n - n - 30 ref-smtpd -o cleanup_service_name=refcleanup\n"
            "cleanup unix n - n - 0 cleanup\nrefcleanup unix n - n - 0 ref-cleanup\n"
            "rewrite unix - - n - - trivial-rewrite\npostlog unix-dgram n - n - 1 postlogd\n")
        subprocess.run([f"{root}/libexec/postfix", "-c", f"{root}/etc", "check"], check=True,
                       stderr=subprocess.DEVNULL)
        pw = pwd.getpwnam("postfix")
        os.chmod(root, 0o755)
        os.chown(f"{root}/data", pw.pw_uid, pw.pw_gid)
        open(f"{root}/maillog", "a").close()
        os.chown(f"{root}/maillog", pw.pw_uid, pw.pw_gid)
        master = subprocess.Popen([f"{root}/libexec/master", "-c", f"{root}/etc", "-d"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.exists(f"{root}/q/public/refcleanup"):
                break
            time.sleep(0.05)
        send(ours, 1)
        send(theirs, 1)
        tp = {"swallow": [], "postfix": []}
        for _ in range(args.runs):
            for name, port in (("swallow", ours), ("postfix", theirs)):
                tp[name].append(throughput(port, args.messages, args.clients))
                for f in os.listdir(f"{root}/q/incoming"):
                    os.unlink(f"{root}/q/incoming/{f}")
        lat = {"swallow": latency(ours, args.latency), "postfix": latency(theirs, args.latency)}
        time.sleep(1)
        mem = {"swallow": rss_each("smtpd", f"{root}/etc"), "postfix": rss_each("ref-smtpd", f"{root}/etc")}
        print(f"{args.messages} messages of {len(BODY)} bytes, {args.clients} clients, 5 per session, {args.runs} runs")
        for name in ("swallow", "postfix"):
            r = tp[name]
            print(f"  {name:8} {statistics.median(r):8.0f} msg/s (runs {', '.join(f'{x:.0f}' for x in r)})"
                  f"   latency median {lat[name][0] * 1000:.1f} ms p99 {lat[name][1] * 1000:.1f} ms"
                  f"   idle smtpd resident {mem[name]} kB each")
        print(f"  ratio    {statistics.median(tp['swallow']) / statistics.median(tp['postfix']):8.2f} (throughput, swallow / postfix)"
              f"   latency ratio {lat['postfix'][0] / lat['swallow'][0]:.2f} (postfix / swallow median; above 1 is faster)")
    finally:
        if master:
            master.terminate()
            master.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
