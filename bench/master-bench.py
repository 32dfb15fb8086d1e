#!/usr/bin/env python3
"""master-bench: Swallow's master against the reference Postfix 3.7 master, same machine,
same run, same child program.

Both masters run the reference Postfix showq daemon (a single-client server) with
"-o max_use=1", so every client connection makes the master start a new child: the numbers measure what master adds to a
connection (notice the waiting client, spawn, hand over the listen socket). Also timed:
"postfix start" and "postfix stop" for each system, with postlogd running in both.

usage: bench/master-bench.py [--connections N] [--build .build/release] [--ref .ref/postfix]
Run as root (the reference master requires it). Prints a table and the ratios.
"""
import argparse, os, shutil, socket, statistics, subprocess, sys, tempfile, time

def instance(base, ours, build, ref):
    for d in ("etc", "queue/pid", "data", "libexec", "bin"):
        os.makedirs(os.path.join(base, d), exist_ok=True)
    libs = os.path.join(ref, "usr/lib/postfix")
    if ours:
        for p in ("master", "postlogd"):
            os.symlink(os.path.abspath(os.path.join(build, p)), os.path.join(base, "libexec", p))
        for p in ("postfix", "postconf", "postlog"):
            os.symlink(os.path.abspath(os.path.join(build, p)), os.path.join(base, "bin", p))
        daemon_dir, command_dir, meta, shlib = base + "/libexec", base + "/bin", base + "/etc", "no"
    else:
        daemon_dir, command_dir = ref + "/usr/lib/postfix/sbin", ref + "/usr/sbin"
        meta, shlib = ref + "/etc/postfix", libs
    if ours:
        os.symlink(ref + "/usr/lib/postfix/sbin/showq", os.path.join(base, "libexec", "ref-showq"))
    showq = "ref-showq" if ours else "showq"
    with open(os.path.join(base, "etc/main.cf"), "w") as f:
        f.write(f"""compatibility_level = 3.6
queue_directory = {base}/queue
data_directory = {base}/data
daemon_directory = {daemon_dir}
command_directory = {command_dir}
meta_directory = {meta}
shlib_directory = {shlib}
maillog_file = {base}/maillog
maillog_file_prefixes = /tmp
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME LD_LIBRARY_PATH={libs}
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = bench.example.test
mydestination =
""")
    with open(os.path.join(base, "etc/master.cf"), "w") as f:
        f.write(f"showq unix n - n - - {showq} -o max_use=1\n")
        f.write("postlog unix-dgram n - n - 1 postlogd\n")
    subprocess.run(["chown", "postfix", base + "/data"], check=True)
    return os.path.join(command_dir, "postfix")

def run(cmd, env, log):
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {r.stderr.decode()}\n" + open(log, errors="replace").read())
    return time.perf_counter() - t

def connections(path, n):
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        lat.append(time.perf_counter() - t)
        if not data:
            sys.exit("showq said nothing")
    return lat

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=300)
    ap.add_argument("--build", default=".build/release")
    ap.add_argument("--ref", default=".ref/postfix")
    a = ap.parse_args()
    ref = os.path.abspath(a.ref)
    if os.geteuid() != 0:
        sys.exit("run as root")
    if not os.path.exists(ref + "/usr/lib/postfix/sbin/master"):
        sys.exit(f"no reference Postfix in {ref} (make test unpacks it)")
    results = {}
    for name, ours in (("swallow", True), ("postfix", False)):
        base = tempfile.mkdtemp(prefix=f"master-bench-{name}-", dir="/tmp")
        os.chmod(base, 0o755)
        try:
            postfix = instance(base, ours, a.build, ref)
            env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": ref + "/usr/lib/postfix"}
            cfg = ["-c", base + "/etc"]
            start = run([postfix] + cfg + ["start"], env, base + "/maillog")
            time.sleep(0.5)
            pid = open(base + "/queue/pid/master.pid").read().split()[0]
            rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:"))
            connections(base + "/queue/public/showq", 20)          # warm-up
            t = time.perf_counter()
            lat = connections(base + "/queue/public/showq", a.connections)
            total = time.perf_counter() - t
            stop = run([postfix] + cfg + ["stop"], env, base + "/maillog")
            results[name] = dict(start=start, stop=stop, rate=a.connections / total, rss=rss,
                                 p50=statistics.median(lat) * 1000,
                                 p95=sorted(lat)[int(len(lat) * 0.95)] * 1000)
        finally:
            shutil.rmtree(base, ignore_errors=True)
    print(f"{'':10} {'postfix start':>14} {'postfix stop':>13} {'conn/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'master RSS kB':>14}")
    for name, r in results.items():
        print(f"{name:10} {r['start']:14.3f} {r['stop']:13.3f} {r['rate']:8.0f} {r['p50']:7.2f} {r['p95']:7.2f} {r['rss']:14d}")
    s, p = results["swallow"], results["postfix"]
    print(f"ratios (postfix / swallow, >1 = Swallow faster): start {p['start'] / s['start']:.2f}, "
          f"stop {p['stop'] / s['stop']:.2f}, connection latency p50 {p['p50'] / s['p50']:.2f}")

if __name__ == "__main__":
    main()
