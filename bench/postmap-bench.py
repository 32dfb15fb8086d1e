#!/usr/bin/env python3
"""postmap against the reference Postfix's, in the same run, on the same files:
building a hash: and a btree: table of N keys (default 100,000), then `postmap -q` of a
key (a new process each time: what a script or an admin pays), `postmap -q -` of 10,000
keys through one process, and `postmap -s` of the whole table.

Usage: python3 bench/postmap-bench.py [--keys N] [--queries Q]
Needs `make` (release build) and the reference in .ref/postfix (make test unpacks it).
"""
import argparse, os, random, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = os.path.join(ROOT, ".build/release/postmap")
REF = os.path.join(ROOT, ".ref/postfix")


def timed(argv, env, stdin=None):
    t = time.perf_counter()
    r = subprocess.run(argv, env=env, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    if r.returncode not in (0, 1):
        sys.exit(f"{argv}: exit {r.returncode}: {r.stderr.decode()}")
    return dt, r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=50)
    args = ap.parse_args()
    for p in (OURS, REF + "/usr/sbin/postmap"):
        if not os.path.exists(p):
            sys.exit(f"missing {p}: run `make` and `make test` first")

    work = tempfile.mkdtemp(prefix="postmap-bench-")
    try:
        with open(os.path.join(work, "main.cf"), "w") as f:
            f.write(f"queue_directory = {work}\ndata_directory = {work}\nmeta_directory = {work}\ncompatibility_level = 3.7\n")
        rnd = random.Random(7)
        keys = [f"user{i}@domain{rnd.randrange(1000)}.example" for i in range(args.keys)]
        with open(os.path.join(work, "table"), "w") as f:
            for i, k in enumerate(keys):
                f.write(f"{k}\tOK value {i}\n")
        probe = rnd.sample(keys, 10_000 if args.keys >= 10_000 else args.keys)
        probe_text = ("\n".join(probe) + "\n").encode()

        programs = {
            "swallow": ([OURS], dict(os.environ)),
            "postfix": ([REF + "/usr/sbin/postmap"], dict(os.environ, LD_LIBRARY_PATH=REF + "/usr/lib/postfix")),
        }
        results = {}
        # The two programs take turns at every step, so that drift in the machine's speed
        # hits both alike.
        for type_ in ("hash", "btree"):
            spec, base = {}, {}
            for name, (exe, env) in programs.items():
                tdir = os.path.join(work, name)
                os.makedirs(tdir, exist_ok=True)
                shutil.copy(os.path.join(work, "table"), os.path.join(tdir, "table"))
                spec[name] = f"{type_}:{tdir}/table"
                base[name] = exe + ["-c", work]
            builds = {n: [] for n in programs}
            queries = {n: [] for n in programs}
            for _ in range(5):
                for name, (exe, env) in programs.items():
                    builds[name].append(timed(base[name] + [spec[name]], env)[0])
            for i in range(args.queries):
                for name, (exe, env) in programs.items():
                    dt, out = timed(base[name] + ["-q", probe[i % len(probe)], spec[name]], env)
                    if not out.startswith(b"OK value"):
                        sys.exit(f"{name}: wrong answer {out!r}")
                    queries[name].append(dt)
            many = {n: [] for n in programs}
            dumps = {n: [] for n in programs}
            for _ in range(3):
                for name, (exe, env) in programs.items():
                    dt, out = timed(base[name] + ["-q", "-", spec[name]], env, probe_text)
                    answered = out.count(b"\n")
                    if answered != len(probe):
                        sys.exit(f"{name}: -q - answered {answered} of {len(probe)} keys")
                    many[name].append(dt)
                    dumps[name].append(timed(base[name] + ["-s", spec[name]], env)[0])
            for name in programs:
                results[(type_, name)] = tuple(statistics.median(x[name]) for x in (builds, queries, many, dumps))

        print(f"{args.keys} keys; medians of 5 builds, {args.queries} single queries, 3 of the rest; -q - with {len(probe)} keys")
        print(f"{'':8} {'':8} {'build s':>9} {'-q ms':>8} {'-q - s':>8} {'-s s':>8}")
        for type_ in ("hash", "btree"):
            for name in programs:
                b, q, m, d = results[(type_, name)]
                print(f"{type_:8} {name:8} {b:9.3f} {q*1000:8.2f} {m:8.3f} {d:8.3f}")
            s, p = results[(type_, "swallow")], results[(type_, "postfix")]
            print(f"{type_:8} {'ratio':8} {s[0]/p[0]:9.2f} {s[1]/p[1]:8.2f} {s[2]/p[2]:8.2f} {s[3]/p[3]:8.2f}"
                  "   (swallow / postfix; below 1 is faster)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
