"""dovecotlmtp: Dovecot's LMTP server (Debian's dovecot-lmtpd) for tests, on a UNIX-domain
socket of its own, delivering every recipient to DIR/mail/LOCALPART as a Maildir owned
by nobody. Only its own master process is started and stopped (by PID).
"""
import os, pwd, shutil, subprocess, time

DOVECOT = "/usr/sbin/dovecot"

CONF = """base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = lmtp
ssl = no
listen = 127.0.0.1
hostname = lmtp.example
mail_location = maildir:{d}/mail/%n
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/mail/%n
}}
passdb {{
  driver = static
  args = nopassword=y
}}
service lmtp {{
  inet_listener lmtp {{
    port = 0
  }}
  unix_listener {d}/lmtp {{
    mode = 0666
  }}
}}
"""


AUTH_CONF = """base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols =
ssl = no
auth_mechanisms = plain login
disable_plaintext_auth = no
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  unix_listener {d}/auth {{
    mode = 0666
  }}
}}
"""


def available():
    return os.path.exists(DOVECOT) and os.path.exists("/usr/lib/dovecot/lmtp")


class Dovecot:
    def __init__(self, directory, users=None):
        """Dovecot's LMTP server; or, given users ({name: password}), only its
        authentication service, with the auth-client socket at DIRECTORY/auth."""
        self.dir = directory
        for sub in ("run", "state", "mail"):
            os.makedirs(f"{directory}/{sub}", exist_ok=True)
        nobody = pwd.getpwnam("nobody")
        os.chown(f"{directory}/mail", nobody.pw_uid, nobody.pw_gid)
        os.chmod(directory, 0o755)
        conf = CONF if users is None else AUTH_CONF
        if users is not None:
            open(f"{directory}/users", "w").write("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in users.items()))
        open(f"{directory}/dovecot.conf", "w").write(conf.format(d=directory))
        subprocess.run([DOVECOT, "-c", f"{directory}/dovecot.conf"], check=True)
        self.socket = f"{directory}/lmtp" if users is None else f"{directory}/auth"
        deadline = time.time() + 10
        while not os.path.exists(self.socket) and time.time() < deadline:
            time.sleep(0.1)

    def close(self):
        try:
            pid = int(open(f"{self.dir}/run/master.pid").read())
            os.kill(pid, 15)
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)
        except (OSError, ValueError):
            pass
