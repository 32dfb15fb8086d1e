#!/usr/bin/env python3
"""Queue listing and inspection: our showq/postqueue/postcat against the reference's.

One instance of ours gets N deferred messages (copies of one real queue file, each with
a defer logfile); then, alternating, it times `postqueue -p` and `postqueue -j` through
our showq and through the reference showq (running under our master as "refshowq"), each
with its own postqueue, and `postcat -q` of one file. Prints medians over the runs and
the ratios (reference time / our time: above 1 means we are faster).

Usage (as root, after make and make test): python3 bench/queue-bench.py [--messages N] [--runs R]
"""
import argparse, os, shutil, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, f"{ROOT}/Tests/Support")
import mailinstance  # noqa: E402

MASTER = """postlog unix-dgram n - n - 1 postlogd
cleanup unix n - n - 0 cleanup
rewrite unix - - n - - trivial-rewrite
qmgr unix n - n 300 1 qmgr
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
retry unix - - n - - error
pickup unix n - n 60 1 pickup
showq unix n - n - - showq
refshowq unix n - n - - ref-showq
"""
MAIN = """mail_name = Postfix
myhostname = mx.example.com
mydestination =
default_transport = retry:4.4.1 destination down
minimal_backoff_time = 3600s
maximal_backoff_time = 7200s
queue_run_delay = 3600s
"""


def timed(argv, env):
    t = time.perf_counter()
    r = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError(f"{argv}: exit {r.returncode}")
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--build", default=f"{ROOT}/.build/release")
    ap.add_argument("--reference", default=f"{ROOT}/.ref/postfix")
    a = ap.parse_args()
    ref = os.path.abspath(a.reference)
    inst = mailinstance.Instance(a.build, MAIN, MASTER, reference=ref, ref_programs=("showq",))
    try:
        inst.start()
        env = dict(os.environ, MAIL_CONFIG=inst.etc, TZ="UTC")
        renv = dict(env, LD_LIBRARY_PATH=f"{ref}/usr/lib/postfix")
        subprocess.run([f"{inst.libexec}/sendmail", "-f", "alice@x.example", "bob@a.example", "carol@b.example"],
                           input=b"Subject: bench\n\n" + b"x" * 2000 + b"\n", env=env)
        deadline = time.time() + 20
        while time.time() < deadline:
            files = [f"{d}/{n}" for d, _, ns in os.walk(inst.queue + "/deferred") for n in ns]
            logs = [f"{d}/{n}" for d, _, ns in os.walk(inst.queue + "/defer") for n in ns]
            if files and logs:
                break
            time.sleep(0.2)
        inst.stop()
        src, log = files[0], logs[0]
        data, logdata = open(src, "rb").read(), open(log, "rb").read()
        st = os.stat(src)
        for i in range(a.messages):
            qid = "%05X%X" % (i % 0xFFFFF, 0x100000 + i)
            for q, body in (("deferred", data), ("defer", logdata)):
                d = f"{inst.queue}/{q}/{qid[0]}"
                os.makedirs(d, exist_ok=True)
                path = f"{d}/{qid}"
                open(path, "wb").write(body)
                os.chown(path, st.st_uid, st.st_gid)
                os.chmod(path, 0o700 if q == "deferred" else 0o600)
        open(inst.etc + "/master.cf", "w").write("\n".join(l for l in MASTER.splitlines()
                                                           if not l.startswith(("qmgr", "pickup"))) + "\n")
        inst.start()
        refq = f"{inst.root}/etc-refshowq"
        os.makedirs(refq)
        shutil.copy(inst.etc + "/master.cf", refq)
        open(refq + "/main.cf", "w").write(open(inst.etc + "/main.cf").read() + "showq_service_name = refshowq\n")
        one = os.path.basename(files[0])
        cases = [
            ("postqueue -p", [f"{inst.libexec}/postqueue", "-p"], env, [f"{ref}/usr/sbin/postqueue", "-c", refq, "-p"], renv),
            ("postqueue -j", [f"{inst.libexec}/postqueue", "-j"], env, [f"{ref}/usr/sbin/postqueue", "-c", refq, "-j"], renv),
            ("postcat -q (x20)", [f"{inst.libexec}/postcat", "-q", one], env, [f"{ref}/usr/sbin/postcat", "-q", one], renv),
        ]
        print(f"{a.messages + 1} messages in the queue, {a.runs} runs, medians (spread)")
        for name, ours, oenv, theirs, tenv in cases:
            reps = 20 if name.startswith("postcat") else 1
            o, t = [], []
            for _ in range(a.runs):
                o.append(sum(timed(ours, oenv) for _ in range(reps)))
                t.append(sum(timed(theirs, tenv) for _ in range(reps)))
            mo, mt = statistics.median(o), statistics.median(t)
            print(f"{name:18} ours {mo * 1000:8.1f} ms ({min(o) * 1000:.1f}-{max(o) * 1000:.1f})   "
                  f"reference {mt * 1000:8.1f} ms ({min(t) * 1000:.1f}-{max(t) * 1000:.1f})   ratio {mt / mo:.2f}")
    finally:
        if os.environ.get("KEEP"):
            print("kept", inst.root)
        else:
            inst.cleanup()


if __name__ == "__main__":
    main()
