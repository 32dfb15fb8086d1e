"""mailinstance: a whole mail system in a temporary directory, for test and benchmark scripts.

Our programs (from a build directory) and, when wanted, the reference Postfix 3.7's daemons
(linked in as ref-NAME) run under our master, on a configuration of the caller's; the log
goes to a file in the instance. With `dns` (a zone text), a fakedns.py server runs on a
fresh 127.53.x.y address and master runs in a private mount namespace whose
/etc/resolv.conf names it, so that every daemon's lookups reach that server and nothing
else. Needs root (the postfix account, port 53, mount namespaces).
"""
import glob, grp, os, pwd, random, shutil, subprocess, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

OUR_PROGRAMS = ["master", "postlogd", "postfix", "postconf", "postlog", "postmap", "postalias", "proxymap",
                "trivial-rewrite", "cleanup", "smtpd", "qmgr", "local", "bounce", "error", "discard", "virtual",
                "pipe", "smtp", "lmtp", "pickup", "showq", "postdrop", "postqueue", "postsuper", "postcat", "sendmail",
                "flush", "anvil", "verify", "scache", "spawn", "tlsmgr", "postkick", "postlock"]

SETGID_PROGRAMS = ("postdrop", "postqueue")

_given = set()


def core_services(prefix=""):
    """The master.cf lines of the queue's own services (pickup, cleanup, qmgr,
    trivial-rewrite, bounce/defer/trace), each program named with `prefix` ("ref-" for
    the reference's)."""
    p = prefix
    return [f"pickup unix n - n 60 1 {p}pickup",
            f"cleanup unix n - n - 0 {p}cleanup",
            f"qmgr unix n - n 300 1 {p}qmgr",
            f"rewrite unix - - n - - {p}trivial-rewrite",
            f"bounce unix - - n - 0 {p}bounce",
            f"defer unix - - n - 0 {p}bounce",
            f"trace unix - - n - 0 {p}bounce"]


def free_port():
    """A loopback port nobody listens on, never the same twice in one run.

    Chosen at random below the kernel's ephemeral range (32768 and up), so that no
    outgoing connection of a concurrent test can be holding it by the time master binds."""
    import socket
    while True:
        p = random.randint(20000, 26000)  # the Swift tests take 26001-32000
        if p in _given:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            s.close()
        _given.add(p)
        return p


class Instance:
    def __init__(self, bin_dir, main_cf, master_cf, reference=None, ref_programs=(), dns=None, files=None):
        bin_dir = os.path.abspath(bin_dir)
        reference = os.path.abspath(reference) if reference else None
        self.root = tempfile.mkdtemp(prefix="swallow-inst-")
        os.chmod(self.root, 0o755)
        self.etc, self.queue, self.data, self.libexec = (f"{self.root}/{d}" for d in ("etc", "queue", "data", "libexec"))
        self.log = f"{self.root}/maillog"
        self.master = None
        self.dns = None
        for d in (self.etc, self.queue, self.data, self.libexec, self.root + "/files"):
            os.makedirs(d)
        for p in OUR_PROGRAMS:
            if p in SETGID_PROGRAMS and os.path.exists(f"{bin_dir}/{p}"):
                # Installed set-gid postdrop, as Postfix installs them.
                shutil.copy(f"{bin_dir}/{p}", f"{self.libexec}/{p}")
                os.chown(f"{self.libexec}/{p}", 0, grp.getgrnam("postdrop").gr_gid)
                os.chmod(f"{self.libexec}/{p}", 0o2755)
            elif os.path.exists(f"{bin_dir}/{p}"):
                os.symlink(f"{bin_dir}/{p}", f"{self.libexec}/{p}")
        for p in ref_programs:
            os.symlink(f"{reference}/usr/lib/postfix/sbin/{p}", f"{self.libexec}/ref-{p}")
        if ref_programs:
            # Programs that look at their own name (smtp or lmtp) run as ref/NAME.
            os.makedirs(f"{self.libexec}/ref")
            for p in ref_programs:
                os.symlink(f"{reference}/usr/lib/postfix/sbin/{p}", f"{self.libexec}/ref/{p}")
        for name, text in (files or {}).items():
            open(f"{self.root}/files/{name}", "w").write(text.replace("@DIR@", self.root + "/files"))
        env_extra = f" LD_LIBRARY_PATH={reference}/usr/lib/postfix" if reference else ""
        base = f"""queue_directory = {self.queue}
data_directory = {self.data}
daemon_directory = {self.libexec}
command_directory = {self.libexec}
meta_directory = {self.etc}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = loopback-only
inet_protocols = ipv4
maillog_file = {self.log}
maillog_file_prefixes = /tmp
compatibility_level = 3.7
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME{env_extra}
"""
        open(f"{self.etc}/main.cf", "w").write(base + main_cf.replace("@DIR@", self.root + "/files"))
        open(f"{self.etc}/master.cf", "w").write(master_cf.replace("@DIR@", self.root + "/files"))
        subprocess.run([f"{self.libexec}/postfix", "-c", self.etc, "check"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pw = pwd.getpwnam("postfix")
        os.chown(self.data, pw.pw_uid, pw.pw_gid)
        open(self.log, "a").close()
        os.chown(self.log, pw.pw_uid, pw.pw_gid)
        if dns is not None:
            self.dns_dir = self.root + "/dns"
            os.makedirs(self.dns_dir)
            open(self.dns_dir + "/zone", "w").write(dns)
            self.dns_address = f"127.53.{random.randint(1, 254)}.{random.randint(1, 254)}"
            open(self.dns_dir + "/resolv.conf", "w").write(f"nameserver {self.dns_address}\noptions attempts:1 timeout:2\n")
            self.dns = subprocess.Popen(["python3", HERE + "/fakedns.py", self.dns_dir + "/zone", self.dns_address],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            if self.dns.stdout.readline().strip() != "ready":
                raise RuntimeError("fakedns did not start")

    def start(self, wait_for=None):
        argv = [f"{self.libexec}/master", "-c", self.etc, "-d"]
        if self.dns:
            argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                    f'mount --bind {self.dns_dir}/resolv.conf /etc/resolv.conf && exec "$0" "$@"'] + argv
        self.master = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=open(self.root + "/master.stderr", "w"))
        deadline = time.time() + 10
        while time.time() < deadline:
            if "daemon started" in self.read_log() and (wait_for is None or os.path.exists(self.queue + "/" + wait_for)):
                return
            time.sleep(0.05)
        raise RuntimeError("master did not start:\n" + self.read_log()[-2000:] + open(self.root + "/master.stderr").read())

    def processes(self, name):
        """PIDs of this instance's processes running program `name` (its executable, and
        the configuration directory in its arguments or MAIL_CONFIG)."""
        out = []
        for d in glob.glob("/proc/[0-9]*"):
            try:
                if os.path.basename(os.readlink(d + "/exe")) != name:
                    continue
                cmdline = open(d + "/cmdline", "rb").read().decode(errors="replace")
                environ = open(d + "/environ", "rb").read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if self.etc in cmdline or f"MAIL_CONFIG={self.etc}" in environ:
                out.append(int(d[6:]))
        return out

    def queue_files(self):
        """Every file in the queues that hold messages."""
        return [f for q in ("maildrop", "incoming", "active", "deferred", "hold")
                for f in glob.glob(f"{self.queue}/{q}/**", recursive=True) if os.path.isfile(f)]

    def read_log(self):
        try:
            return open(self.log, encoding="utf-8", errors="replace").read()
        except OSError:
            return ""

    def stop(self):
        if self.master:
            self.master.terminate()
            try:
                self.master.wait(10)
            except subprocess.TimeoutExpired:
                self.master.kill()
            self.master = None
        if self.dns:
            self.dns.terminate()
            self.dns.wait()
            self.dns = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
