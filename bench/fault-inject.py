#!/usr/bin/env python3
"""fault-inject: kill -9 the mail system's processes under load, and count what was lost.

A 2,000-message load (swallow-source, 10 sessions) goes into our instance; half the
messages are delivered by local(8) into a Maildir, the other half go through smtp(8) to a
second smtpd of the same instance, whose cleanup rewrites them to the same Maildir. While
the load runs, every process of smtpd, cleanup, qmgr, local, smtp, trivial-rewrite and
then master is killed with SIGKILL in turn, at random moments; after master, the system
is started again with `postfix start`. When the load is over the queue is run until it is
empty. Every message that got a 250 must then be in the Maildir: the script reports
losses (acknowledged, never delivered) and duplicates (delivered more than once)
separately, and what is left in the queue. Exit status 0 when nothing was lost and nothing
is stuck.

Run as root after `make`:

    python3 bench/fault-inject.py [--messages 2000] [--rounds 1] [--seed N] [--build .build/release]
"""
import argparse, collections, glob, os, pwd, random, re, signal, subprocess, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "Tests", "Support"))
import mailinstance  # noqa: E402

VICTIMS = ["smtpd", "cleanup", "qmgr", "local", "smtp", "trivial-rewrite", "master"]


def master_cf(port, port2):
    return "\n".join([
        f"127.0.0.1:{port} inet n - n - - smtpd",
        f"127.0.0.1:{port2} inet n - n - - smtpd -o cleanup_service_name=cleanup2",
        "cleanup2 unix n - n - 0 cleanup -o virtual_alias_maps=texthash:@DIR@/rewrite",
    ] + mailinstance.core_services() + [
        "local unix - n n - - local",
        "smtp unix - - n - - smtp",
        "retry unix - - n - - error",
        "scache unix - - n - 1 scache",
        "proxymap unix - - n - - proxymap",
        "postlog unix-dgram n - n - 1 postlogd",
    ]) + "\n"


def master_running(inst):
    return bool(inst.processes("master"))


def postfix(inst, cmd):
    return subprocess.run([f"{inst.libexec}/postfix", "-c", inst.etc, cmd], capture_output=True, text=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, ".build/release"))
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1, help="times through the list of victims")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--keep", action="store_true", help="keep the instance for a post-mortem")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    random.seed(args.seed)
    build = os.path.abspath(args.build)
    port, port2 = mailinstance.free_port(), mailinstance.free_port()
    main_cf = ("myhostname = fault.example\nmydomain = example\nmydestination = fault.example\n"
               "alias_maps = hash:@DIR@/aliases\nalias_database = hash:@DIR@/aliases\n"
               "transport_maps = texthash:@DIR@/transport\n"
               "local_recipient_maps =\nsmtpd_client_connection_count_limit = 0\n"
               "minimal_backoff_time = 2s\nmaximal_backoff_time = 4s\nqueue_run_delay = 2s\n"
               "smtp_connection_cache_on_demand = no\n"
               # A killed process that had not served anyone throttles its service for
               # service_throttle_time, as in Postfix; shorter here, to keep the load going.
               "service_throttle_time = 3s\n")
    files = {"aliases": "sink: @DIR@/mail/\npostmaster: root\n",
             "transport": f"relay.example smtp:[127.0.0.1]:{port2}\n",
             "rewrite": "sink@relay.example sink@fault.example\n"}
    inst = mailinstance.Instance(build, main_cf, master_cf(port, port2), files=files)
    nobody = pwd.getpwnam("nobody")
    os.makedirs(inst.root + "/files/mail")
    os.chown(inst.root + "/files/mail", nobody.pw_uid, nobody.pw_gid)
    subprocess.run([f"{inst.libexec}/postalias", "-c", inst.etc, f"hash:{inst.root}/files/aliases"], check=True)
    acks = inst.root + "/acks"
    print(f"seed {args.seed}, instance {inst.root}", flush=True)
    inst.start()
    killed = []
    done = threading.Event()

    def killer():
        for _ in range(args.rounds):
            for victim in VICTIMS:
                if done.wait(random.uniform(0.2, 0.9)):
                    return
                pids = inst.processes(victim)
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                killed.append((victim, len(pids)))
                if victim == "master":
                    # Its children notice and leave; then the system starts again.
                    deadline = time.time() + 10
                    while any(inst.processes(p) for p in ("qmgr", "pickup")) and time.time() < deadline:
                        time.sleep(0.1)
                    # Children busy with a session keep the listen sockets until it ends
                    # (as with Postfix): start again until the ports are free.
                    deadline = time.time() + 60
                    while True:
                        r = postfix(inst, "start")
                        if r.returncode == 0 or time.time() > deadline:
                            break
                        time.sleep(0.5)
                    if r.returncode != 0:
                        print("postfix start:", r.stdout, r.stderr, flush=True)
    t = threading.Thread(target=killer)
    t.start()
    # Half the messages to the local Maildir, half through smtp (odd sequence numbers).
    half = args.messages // 2  # per path
    procs = [subprocess.Popen([f"{build}/swallow-source", "-s", str(max(1, args.sessions // 2)), "-m", str(half),
                               "-w", "30", "-r", "50", "-o", f"{acks}.{name}", "-t", to, f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for name, to in (("local", "sink@fault.example"), ("smtp", "sink@relay.example"))]
    for p in procs:
        _, err = p.communicate()
        print(err.strip(), flush=True)
    done.set()
    t.join()
    if not master_running(inst):
        postfix(inst, "start")
    # Run the queue until it is empty (at most two minutes).
    deadline = time.time() + 120
    while inst.queue_files() and time.time() < deadline:
        subprocess.run([f"{inst.libexec}/postqueue", "-c", inst.etc, "-f"], capture_output=True)
        time.sleep(2)
    # A file that a killed cleanup was writing never became ready (its owner-execute
    # bit is not set): no message, but a temporary file that postsuper -p removes once it
    # is old, as in Postfix. Ready files left behind are messages that are stuck.
    left = inst.queue_files()
    stuck = [f for f in left if os.stat(f).st_mode & 0o100]
    temporary = [f for f in left if f not in stuck]
    # What was acknowledged, and what arrived.
    # Each attempt at a message is a message of its own ("N.A": attempt A of message N).
    acked = set()
    for name in ("local", "smtp"):
        try:
            for line in open(f"{acks}.{name}"):
                acked.add((name, line.split("\t")[0]))
        except OSError:
            pass
    seen = collections.Counter()
    for f in glob.glob(inst.root + "/files/mail/new/*") + glob.glob(inst.root + "/files/mail/cur/*"):
        text = open(f, errors="replace").read()
        m = re.search(r"^X-Seq: ([\d.]+)$", text, re.M)
        to = re.search(r"^To: <([^>]+)>", text, re.M)
        if m:
            seen[("smtp" if to and to.group(1).endswith("@relay.example") else "local", m.group(1))] += 1
    lost = sorted(acked - set(seen))
    dups = sorted(n for n, c in seen.items() if c > 1)
    unacked_delivered = len(set(seen) - acked)
    print("killed: " + ", ".join(f"{v} ({n})" for v, n in killed))
    print(f"acknowledged {len(acked)}, delivered {len(seen)} distinct "
          f"({sum(seen.values())} files; {unacked_delivered} of them never acknowledged)")
    print(f"lost {len(lost)}" + (f": {lost[:20]}" if lost else ""))
    print(f"duplicates {len(dups)}" + (f": {dups[:20]}" if dups else ""))
    print(f"left in the queue {len(stuck)}" + (f": {[os.path.relpath(f, inst.queue) for f in stuck[:10]]}" if stuck else ""))
    print(f"unfinished temporary files {len(temporary)}" + (f": {[os.path.relpath(f, inst.queue) for f in temporary[:10]]}" if temporary else ""))
    postfix(inst, "stop")
    if args.keep:
        print("kept", inst.root)
    else:
        inst.cleanup()
    return 0 if not lost and not stuck else 1


if __name__ == "__main__":
    sys.exit(main())
