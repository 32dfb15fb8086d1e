"""smtpsink: a small SMTP/LMTP server for tests, on loopback, that answers by rule and
records what each client said.

Rules come from the recipients' and sender's local parts and the sink's options:
  reject*  RCPT -> 550 5.1.1      defer*  RCPT -> 450 4.2.1      multi* RCPT -> a 550 in two lines
  badsender (MAIL FROM) -> 553 5.7.1                 lmtpfail* -> 452 after DATA (LMTP)
Options (a dict): addr (the loopback address, default 127.0.0.1; ::1 for IPv6), path (a UNIX-domain
socket instead), greet (a greeting code, default 220), ehlo=False (500 to EHLO),
pipelining=False, size (a SIZE limit), data (the reply code after the message),
lmtp=True (LHLO, one reply per accepted recipient after the message), rcpt (a reply code
for every RCPT TO: 450 or 550), xforward=True (announce and accept XFORWARD), eightbit=False (no 8BITMIME),
peer=True (the client's address in the transcript), tls=PEMFILE (offer STARTTLS with this key
and certificate; the transcript notes the TLS version), tlswrap=PEMFILE (TLS from the first
byte, SMTPS), auth=USER:PASSWORD (offer AUTH with the
mechanisms in authmechs, default "PLAIN,LOGIN", and accept only these credentials; the
transcript shows the decoded exchange with the password as "(password)"), stall ("greet": no greeting, "dot": no reply to the end of the message; the sink
waits for the client to hang up).
The transcript (the client's lines, the message as received) goes to `log_path`, one
session after another.
"""
import base64, os, socket, ssl, threading


class Sink:
    def __init__(self, port, log_path, options=None):
        self.options = options or {}
        self.tls_context = None
        self.log_path = log_path
        self.lock = threading.Lock()
        if self.options.get("path"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(self.options["path"])
            os.chmod(self.options["path"], 0o666)
        else:
            addr = self.options.get("addr", "127.0.0.1")
            self.sock = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((self.options.get("addr", "127.0.0.1"), port))
        self.sock.listen(16)
        self.port = port
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def serve(self):
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.session, args=(conn, peer), daemon=True).start()

    def tls(self, pem):
        """One server context for all sessions, so that clients can resume theirs."""
        if self.tls_context is None:
            self.tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls_context.load_cert_chain(pem)
        return self.tls_context

    def session(self, conn, peer=None):
        o = self.options
        lines = []
        if conn.family != socket.AF_UNIX:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if o.get("peer") and peer:
            lines.append(f"(connection from {peer[0]})")
        f = conn.makefile("rb")

        def say(text):
            conn.sendall(text.encode() + b"\r\n")

        try:
            if o.get("tlswrap"):
                # SMTPS: TLS from the first byte.
                try:
                    conn = self.tls(o["tlswrap"]).wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    lines.append(f"(TLS handshake failed: {type(e).__name__})")
                    return
                lines.append(f"(TLS wrapper: {conn.version()})")
                f = conn.makefile("rb")
            stall = o.get("stall")
            if stall == "greet":
                # Say nothing until the client gives up.
                f.readline()
                return
            code = int(o.get("greet", 220))
            say(f"{code} sink.example ESMTP" if code == 220 else f"{code} 5.3.2 sink.example not accepting mail")
            mail_ok, rcpts = False, []
            while True:
                raw = f.readline()
                if not raw:
                    break
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                lines.append("C: " + line)
                verb = line.split(" ")[0].upper()
                if verb in ("EHLO", "LHLO"):
                    if not o.get("ehlo", True):
                        say("500 5.5.1 command unrecognized")
                        continue
                    ext = ["sink.example"]
                    if o.get("pipelining", True):
                        ext.append("PIPELINING")
                    if o.get("size"):
                        ext.append(f"SIZE {o['size']}")
                    if o.get("xforward"):
                        ext.append("XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT")
                    if o.get("eightbit", True):
                        ext.append("8BITMIME")
                    if o.get("tls") and not isinstance(conn, ssl.SSLSocket):
                        ext.append("STARTTLS")
                    if o.get("auth"):
                        ext.append("AUTH " + o.get("authmechs", "PLAIN LOGIN").replace(",", " "))
                    ext += ["DSN", "ENHANCEDSTATUSCODES"]
                    say("\r\n".join(f"250{'-' if i < len(ext) - 1 else ' '}{e}" for i, e in enumerate(ext)))
                elif verb == "HELO":
                    say("250 sink.example")
                elif verb == "STARTTLS" and o.get("tls") and not isinstance(conn, ssl.SSLSocket):
                    say("220 2.0.0 Ready to start TLS")
                    try:
                        conn = self.tls(o["tls"]).wrap_socket(conn, server_side=True)
                    except (ssl.SSLError, OSError) as e:
                        lines.append(f"(TLS handshake failed: {type(e).__name__})")
                        return
                    lines.append(f"(TLS: {conn.version()})")
                    f = conn.makefile("rb")
                    mail_ok, rcpts = False, []
                elif verb == "AUTH" and o.get("auth"):
                    user, _, password = o["auth"].partition(":")
                    words = line.split(" ")
                    mech = words[1].upper() if len(words) > 1 else ""

                    def ask(prompt):
                        say("334 " + base64.b64encode(prompt.encode()).decode())
                        answer = f.readline().decode().rstrip("\r\n")
                        return base64.b64decode(answer).decode("utf-8", "replace")
                    if mech == "PLAIN":
                        data = base64.b64decode(words[2]).decode() if len(words) > 2 else ask("")
                        parts = data.split("\0")
                        given = (parts[1], parts[2]) if len(parts) == 3 else ("", "")
                        lines[-1] = f"C: AUTH PLAIN (authzid={parts[0] if len(parts) == 3 else ''!r} user={given[0]})"
                    elif mech == "LOGIN":
                        name = base64.b64decode(words[2]).decode() if len(words) > 2 else ask("Username:")
                        given = (name, ask("Password:"))
                        lines[-1] = f"C: AUTH LOGIN (user={given[0]})"
                    else:
                        say("504 5.5.4 Unrecognized authentication type")
                        continue
                    if given == (user, password):
                        say("235 2.7.0 Authentication successful")
                    else:
                        say("535 5.7.8 Error: authentication failed: authentication failure")
                elif verb == "MAIL":
                    if "badsender" in line.lower():
                        say("553 5.7.1 Sender address rejected")
                    else:
                        mail_ok, rcpts = True, []
                        say("250 2.1.0 Ok")
                elif verb == "RCPT":
                    addr = line[line.find("<") + 1:line.find(">")]
                    local = addr.split("@")[0].lower()
                    if not mail_ok:
                        say("503 5.5.1 Error: need MAIL command")
                    elif o.get("rcpt"):
                        c = int(o["rcpt"])
                        say(f"{c} {c // 100}.7.1 <{addr}>: Recipient address rejected: not here")
                    elif local.startswith("reject"):
                        say(f"550 5.1.1 <{addr}>: Recipient address rejected: User unknown")
                    elif local.startswith("defer"):
                        say(f"450 4.2.1 <{addr}>: Recipient address rejected: Mailbox busy")
                    elif local.startswith("multi"):
                        say(f"550-5.7.1 <{addr}>: first line of a refusal\r\n550 5.7.1 and its second line")
                    else:
                        rcpts.append(addr)
                        say("250 2.1.5 Ok")
                elif verb == "DATA":
                    if not rcpts:
                        say("554 5.5.1 Error: no valid recipients")
                        continue
                    say("354 End data with <CR><LF>.<CR><LF>")
                    while True:
                        d = f.readline()
                        if not d:
                            return
                        d = d.decode("utf-8", "replace").rstrip("\r\n")
                        if d == ".":
                            break
                        lines.append("D: " + d)
                    if stall == "dot":
                        f.readline()
                        return
                    code = int(o.get("data", 250))
                    if o.get("lmtp"):
                        for r in rcpts:
                            if r.split("@")[0].lower().startswith("lmtpfail"):
                                say(f"452 4.2.2 <{r}>: Mailbox full")
                            else:
                                say(f"250 2.0.0 <{r}> delivered")
                    elif code == 250:
                        say("250 2.0.0 Ok: queued as SINK1")
                    else:
                        say(f"{code} {code // 100}.3.0 Error: message not accepted")
                    mail_ok, rcpts = False, []
                elif verb == "XFORWARD" and o.get("xforward"):
                    say("250 2.0.0 Ok")
                elif verb == "RSET":
                    mail_ok, rcpts = False, []
                    say("250 2.0.0 Ok")
                elif verb == "QUIT":
                    say("221 2.0.0 Bye")
                    break
                else:
                    say("502 5.5.2 Error: command not recognized")
        except OSError:
            pass
        finally:
            conn.close()
            with self.lock:
                with open(self.log_path, "a") as out:
                    out.write("session\n" + "".join(l + "\n" for l in lines))
