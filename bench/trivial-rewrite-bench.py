#!/usr/bin/env python3
"""trivial-rewrite against the reference Postfix's, in the same run: both daemons run
under our master on the same configuration (a transport table of 10,000 domains, virtual
and relay domains); one client connection each sends N rewrite and N resolve requests
over a mix of addresses, one request at a time as Postfix clients do. Reports requests
per second, the ratio, and each daemon's resident memory afterwards.

Usage: python3 bench/trivial-rewrite-bench.py [--requests N]
Needs `make` (release build) and the reference in .ref/postfix (make test unpacks it). Root.
"""
import argparse, os, pwd, shutil, socket, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".build/release")
REF = os.path.join(ROOT, ".ref/postfix")


def enc(pairs):
    return b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in pairs) + b"\0"


class Client:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.buf = b""
        self.read()

    def read(self):
        items = []
        while True:
            while b"\0" not in self.buf:
                d = self.s.recv(65536)
                if not d:
                    raise EOFError
                self.buf += d
            i = self.buf.index(b"\0")
            name, self.buf = self.buf[:i], self.buf[i + 1:]
            if not name:
                return items
            while b"\0" not in self.buf:
                self.buf += self.s.recv(65536)
            i = self.buf.index(b"\0")
            items.append((name, self.buf[:i]))
            self.buf = self.buf[i + 1:]

    def ask(self, pairs):
        self.s.sendall(enc(pairs))
        return self.read()


def rss_kb(name, conf):
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            env = open(f"/proc/{pid}/environ", "rb").read()
        except OSError:
            continue
        if os.path.basename(cmd[0].decode()) == name and conf.encode() in env:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    args = ap.parse_args()
    for p in (BIN + "/trivial-rewrite", REF + "/usr/lib/postfix/sbin/trivial-rewrite"):
        if not os.path.exists(p):
            sys.exit(f"missing {p}: run `make` and `make test` first")
    root = tempfile.mkdtemp(prefix="tr-bench-")
    master = None
    try:
        for d in ("etc", "q", "data", "libexec"):
            os.makedirs(f"{root}/{d}")
        for p in ("master", "postlogd", "postfix", "postconf", "trivial-rewrite"):
            os.symlink(f"{BIN}/{p}", f"{root}/libexec/{p}")
        os.symlink(f"{REF}/usr/lib/postfix/sbin/trivial-rewrite", f"{root}/libexec/ref-trivial-rewrite")
        with open(f"{root}/transport", "w") as f:
            for i in range(10000):
                f.write(f"dom{i}.example\trelay:[hop{i}.example]\n")
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
virtual_alias_domains = valias.example
virtual_mailbox_domains = vmbox.example
relay_domains = relay.example
transport_maps = hash:{root}/transport
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME LD_LIBRARY_PATH={REF}/usr/lib/postfix
""")
        subprocess.run([f"{BIN}/postmap", "-c", f"{root}/etc", f"hash:{root}/transport"], check=True)
        open(f"{root}/etc/master.cf", "w").write(
            "rewrite unix - - n - - trivial-rewrite\nrefrewrite unix - - n - - ref-trivial-rewrite\n"
            "postlog unix-dgram n - n - 1 postlogd\n")
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
            if os.path.exists(f"{root}/q/private/refrewrite"):
                break
            time.sleep(0.05)
        addrs = ["user", "user@host", "a!b@c", "user%x@mx.example.com", "u@valias.example", "u@vmbox.example",
                 "u@relay.example", "u@mx.example.com", "u@foreign.com"] + [f"u{i}@dom{i * 7 % 10000}.example" for i in range(50)]
        results = {}
        for name, service in (("swallow", "rewrite"), ("postfix", "refrewrite")):
            c = Client(f"{root}/q/private/{service}")
            c.ask([("request", "resolve"), ("sender", ""), ("address", "warm@up.example")])
            t = time.perf_counter()
            for i in range(args.requests):
                a = addrs[i % len(addrs)]
                c.ask([("request", "rewrite"), ("rule", "local"), ("address", a)])
                c.ask([("request", "resolve"), ("sender", "s@example.org"), ("address", a + ("" if "@" in a else "@x.example"))])
            dt = time.perf_counter() - t
            results[name] = (2 * args.requests / dt, rss_kb(os.path.basename(f"{'trivial-rewrite' if name == 'swallow' else 'ref-trivial-rewrite'}"), f"{root}/etc"))
        print(f"{2 * args.requests} requests (half rewrite, half resolve) over one connection")
        for name, (rps, rss) in results.items():
            print(f"  {name:8} {rps:10.0f} requests/s   resident {rss} kB")
        print(f"  ratio    {results['swallow'][0] / results['postfix'][0]:10.2f} (swallow / postfix throughput; above 1 is faster)")
    finally:
        if master:
            master.terminate()
            master.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
