#!/usr/bin/env python3
"""relay-bench: the delivery side of relaying, ours against the reference Postfix 3.7.

N messages of about 2 KB are accepted by our smtpd and cleanup while no queue manager
runs; then master.cf gets its qmgr line, master reloads, and the clock runs until the
queue is empty: qmgr, smtp and scache (ours, or the reference's under our master) relay
everything to a sink on another loopback port through relayhost. The two sides
alternate, run by run. Run as root after `make` and `make test` (which unpacks the
reference into .ref/):

    python3 bench/relay-bench.py [--messages N] [--runs R] [--build .build/release]
                                 [--cache on-demand|always|off]
"""
import argparse, glob, os, signal, smtplib, statistics, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "Tests", "Support"))
import mailinstance  # noqa: E402
import smtpsink  # noqa: E402

BODY = "\r\n".join(["Subject: relay bench", "From: sender@example.org", ""] +
                   [("x" * 70) for _ in range(28)]) + "\r\n"


def master_cf(port, p, qmgr):
    lines = [f"127.0.0.1:{port} inet n - n - - smtpd",
             "cleanup unix n - n - 0 cleanup",
             "rewrite unix - - n - - trivial-rewrite",
             "proxymap unix - - n - - proxymap",
             "postlog unix-dgram n - n - 1 postlogd",
             f"bounce unix - - n - 0 {p}bounce",
             f"defer unix - - n - 0 {p}bounce",
             f"trace unix - - n - 0 {p}bounce",
             f"smtp unix - - n - - {p}smtp",
             f"scache unix - - n - 1 {p}scache"]
    if qmgr:
        lines.append(f"qmgr unix n - n 300 1 {p}qmgr")
    return "\n".join(lines) + "\n"


def queued(inst):
    return sum(len([f for f in glob.glob(f"{inst.queue}/{q}/**", recursive=True) if os.path.isfile(f)])
               for q in ("incoming", "active", "deferred"))


def one_run(build, reference, n, cache):
    port, sport = mailinstance.free_port(), mailinstance.free_port()
    p = "ref/" if reference else ""
    # Mail is accepted before there is a qmgr to hand out flow tokens.
    main = f"relayhost = [127.0.0.1]:{sport}\nqueue_run_delay = 3600s\nin_flow_delay = 0\n"
    if cache == "always":
        main += "smtp_connection_cache_destinations = 127.0.0.1\n"
    elif cache == "off":
        main += "smtp_connection_cache_on_demand = no\n"
    inst = mailinstance.Instance(build, main, master_cf(port, p, False), reference=reference,
                                 ref_programs=("qmgr", "smtp", "scache", "bounce") if reference else ())
    sink = smtpsink.Sink(sport, f"{inst.root}/sink.log")
    try:
        inst.start()
        s = smtplib.SMTP("127.0.0.1", port, timeout=60)
        s.ehlo("bench.example")
        for i in range(n):
            s.sendmail("sender@example.org", [f"rcpt{i}@remote.example"], BODY)
        s.quit()
        open(f"{inst.etc}/master.cf", "w").write(master_cf(port, p, True))
        start = time.time()
        os.kill(inst.master.pid, signal.SIGHUP)
        deadline = start + 600
        while queued(inst) and time.time() < deadline:
            time.sleep(0.02)
        elapsed = time.time() - start
        left = queued(inst)
        log = inst.read_log()
        sent = log.count("status=sent")
        reused = log.count("conn_use=")
        return elapsed, sent, reused, left
    finally:
        sink.close()
        inst.cleanup()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--build", default=os.path.join(HERE, "..", ".build", "release"))
    ap.add_argument("--reference", default=os.path.join(HERE, "..", ".ref", "postfix"))
    ap.add_argument("--cache", choices=("on-demand", "always", "off"), default="on-demand")
    args = ap.parse_args()
    build, ref = os.path.abspath(args.build), os.path.abspath(args.reference)
    results = {"ours": [], "reference": []}
    for r in range(args.runs):
        for side, reference in (("ours", None), ("reference", ref)) if r % 2 == 0 else (("reference", ref), ("ours", None)):
            elapsed, sent, reused, left = one_run(build, reference, args.messages, args.cache)
            results[side].append(args.messages / elapsed)
            print(f"run {r + 1} {side:9}: {elapsed:6.2f} s, {args.messages / elapsed:7.1f} msg/s, "
                  f"sent {sent}, over reused connections {reused}, left {left}", flush=True)
    ours, theirs = statistics.median(results["ours"]), statistics.median(results["reference"])
    print(f"relay ({args.cache} caching, {args.messages} messages, median of {args.runs}): "
          f"ours {ours:.1f} msg/s (spread {min(results['ours']):.1f}-{max(results['ours']):.1f}), "
          f"reference {theirs:.1f} msg/s (spread {min(results['reference']):.1f}-{max(results['reference']):.1f}), "
          f"ratio {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
