#!/usr/bin/env python3
"""Killing the queue manager and delivery agents in the middle of a run loses no mail and
delivers nothing twice; and pflogsumm reads the log that results.

Thirty messages go over SMTP to an alias whose command waits a moment, then appends the
message's Message-ID to a file. While they are being delivered, the qmgr process is
killed (the next trigger makes master start a new one, which finds files still locked
by agents of the old one)
and local processes are killed together with their commands while the command still
waits (so that the delivery they were making never happened). At the end every
Message-ID must be in the file exactly once, and the queue empty.

Usage: crashes.py BUILD_DIR       (exit status 0 when all is well)
"""
import os, re, shutil, signal, smtplib, socket, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "..", "Support"))
import mailinstance  # noqa: E402

N = 30


def pids(inst, program):
    """The running PROGRAM processes that our master started."""
    out = []
    for p in children(inst.master.pid):
        try:
            argv0 = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")[0].decode()
        except OSError:
            continue
        if os.path.basename(argv0) == program:
            out.append(p)
    return out


def children(pid):
    try:
        return [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def main():
    build = os.path.abspath(sys.argv[1])
    port = mailinstance.free_port()
    main_cf = """myhostname = mx.example.com
mydestination = $myhostname, localhost
mynetworks = 127.0.0.0/8
alias_maps = hash:@DIR@/aliases
alias_database = hash:@DIR@/aliases
local_recipient_maps =
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
transport_retry_time = 1s
biff = no
"""
    master_cf = f"""127.0.0.1:{port} inet n - n - - smtpd
cleanup unix n - n - 0 cleanup
rewrite unix - - n - - trivial-rewrite
proxymap unix - - n - - proxymap
postlog unix-dgram n - n - 1 postlogd
qmgr unix n - n 300 1 qmgr
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
error unix - - n - - error
retry unix - - n - - error
local unix - n n - - local
"""
    files = {"aliases": "postmaster: root\nslow: \"|/bin/sh @DIR@/slow.sh\"\n",
             "slow.sh": "id=$(grep -i -m1 '^Message-ID:' | tr -d '\\r')\nsleep 0.4\necho \"$id\" >> @DIR@/out/delivered\n"}
    inst = mailinstance.Instance(build, main_cf, master_cf, files=files)
    problems = []
    try:
        os.makedirs(inst.root + "/files/out")
        os.chmod(inst.root + "/files/out", 0o1777)
        os.chmod(inst.root + "/files", 0o755)
        subprocess.run([f"{build}/postalias", "-c", inst.etc, f"hash:{inst.root}/files/aliases"], check=True)
        inst.start(wait_for="public/qmgr")
        s = smtplib.SMTP("127.0.0.1", port, timeout=30)
        for i in range(N):
            s.sendmail("sender@example.org", ["slow@mx.example.com"],
                       f"Subject: {i}\r\nMessage-ID: <crash{i}@example.org>\r\n\r\nbody {i}\r\n")
        s.quit()
        killed_qmgr = killed_local = 0
        deadline = time.time() + 90
        step = 0
        while time.time() < deadline:
            time.sleep(0.5)
            step += 1
            if step in (2, 6):
                for p in pids(inst, "qmgr"):
                    os.kill(p, signal.SIGKILL)
                    killed_qmgr += 1
            if step in (3, 7, 12, 20):
                # As new mail or "postqueue -f" would: master starts a new queue manager.
                trigger = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                trigger.connect(f"{inst.queue}/public/qmgr")
                trigger.sendall(b"W")
                trigger.close()
            if step in (3, 4, 8):
                for p in pids(inst, "local")[:1]:
                    # The agent and the command it runs, before the command has written.
                    group = [c for c in children(p)]
                    for c in group:
                        try:
                            os.killpg(os.getpgid(c), signal.SIGKILL)
                        except OSError:
                            pass
                    os.kill(p, signal.SIGKILL)
                    killed_local += 1
            delivered = open(inst.root + "/files/out/delivered").read().split("\n") if os.path.exists(
                inst.root + "/files/out/delivered") else []
            left = [f for q in ("incoming", "active", "deferred") for _, _, fs in os.walk(f"{inst.queue}/{q}") for f in fs]
            if step > 8 and not left and len([d for d in delivered if d]) >= N:
                break
        delivered = [d for d in open(inst.root + "/files/out/delivered").read().split("\n") if d]
        ids = [re.sub(r"(?i)^message-id:\s*", "", d) for d in delivered]
        for i in range(N):
            n = ids.count(f"<crash{i}@example.org>")
            if n != 1:
                problems.append(f"<crash{i}@example.org> delivered {n} times")
        left = [f for q in ("incoming", "active", "deferred", "corrupt") for _, _, fs in os.walk(f"{inst.queue}/{q}") for f in fs]
        if left:
            problems.append(f"left in the queue: {left}")
        if killed_qmgr == 0 or killed_local == 0:
            problems.append(f"nothing was killed (qmgr {killed_qmgr}, local {killed_local})")
        log = inst.read_log()
        summary = subprocess.run([shutil.which("pflogsumm") or "/usr/sbin/pflogsumm", "--problems_first", inst.log], capture_output=True, text=True)
        m = re.search(r"^\s*(\d+)\s+delivered", summary.stdout, re.M)
        if summary.returncode != 0 or not m or int(m.group(1)) < N:
            problems.append("pflogsumm did not count the deliveries:\n" + summary.stdout[:2000] + summary.stderr[:500])
        print(f"killed qmgr {killed_qmgr} times and local {killed_local} times; {len(ids)} deliveries of {N} messages")
        if problems:
            print("\n".join(problems))
            print(log[-6000:])
    finally:
        inst.cleanup()
    print("ok" if not problems else "FAILED")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
