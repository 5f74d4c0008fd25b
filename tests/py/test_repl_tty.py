"""The REPL on a terminal: every byte of a large value reaches the terminal, then the next
prompt (a pty read slowly, so the kernel's buffer fills up); long strings and big tables shown
cut with how to see all, show() printing all; a Ctrl-D typed while a line runs ends the REPL; Ctrl-R then Enter runs the match (Ctrl-G gives
the line back, Ctrl-R again goes further back); Ctrl-L clears the screen (tmux); two REPLs at
once append to one history file; a misused function's error placed in the user's line without
an internal traceback; help(x) / ?x for an AWS operation, a service, a function."""
import os
import pty
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402

TMP = tempfile.mkdtemp(prefix="flowrun-repl-tty-")
TMUX = shutil.which("tmux")
SOCK = os.path.join(TMP, "tmux.sock")


def home(name):
    d = os.path.join(TMP, name)
    os.makedirs(d, exist_ok=True)
    return d


class Pty:
    """flowrun's REPL on a pseudo-terminal of 100 x 40."""

    def __init__(self, home_dir):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.environ["HOME"] = home_dir
            os.environ["TERM"] = "xterm"
            os.environ["LANG"] = "C.UTF-8"
            os.execv(tap.FLOWRUN, [tap.FLOWRUN])
        import fcntl
        import struct
        import termios
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
        self.read_until("> ")

    def send(self, data):
        os.write(self.fd, data.encode() if isinstance(data, str) else data)

    def read_until(self, needle, timeout=10.0):
        out = b""
        want = needle.encode()
        end = time.time() + timeout
        while time.time() < end:
            r, _, _ = select.select([self.fd], [], [], 0.05)
            if r:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
                if want in out:
                    break
        return out.decode(errors="replace")

    def close(self):
        self.send(b"\x04")
        end = time.time() + 10
        while time.time() < end:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            try:
                os.read(self.fd, 65536)
            except OSError:
                pass
            time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        return None


@tap.test
def test_large_values_reach_the_terminal():
    p = Pty(home("large"))
    p.send('s = string.rep("abcdefghij", 30000) .. "END"\n')
    p.read_until("\r\n> ")
    p.send("print(s)\n")
    time.sleep(1.0)  # nobody reads: the terminal's buffer fills, the REPL's writes must wait
    out = p.read_until("END\r\n> ", timeout=20)
    tap.eq(out.count("abcdefghij"), 30000, "print(s): all 300,000 characters arrived")
    tap.like(out, "END\r\n> ", "then the end of the value and the next prompt")

    p.send("s\n")
    out = p.read_until("prints all of it", timeout=10)
    tap.ok(out.count("abcdefghij") < 300, "the value itself is shown cut (%d of 30000 pieces)"
           % out.count("abcdefghij"))
    tap.like(out, "-- a string of 300003 bytes, the first 2000 shown; show(_) prints all of it",
             "with a line saying so and how to see it all")
    p.read_until("\r\n> ")
    p.send("show(_)\n")
    time.sleep(0.5)
    out = p.read_until("END\r\n> ", timeout=20)
    tap.eq(out.count("abcdefghij"), 30000, "show(_): all of it, as it is")

    p.send("t = {} for i = 1, 5000 do t[i] = { id = i } end\n")
    p.read_until("\r\n> ")
    p.send("t\n")
    out = p.read_until("prints all of it", timeout=10)
    tap.eq(out.count("{ id = "), 100, "a table of 5000 entries shows 100")
    tap.like(out, "--[[ 4900 more ]]", "and how many more there are")
    tap.like(out, "show(_) prints all of it", "and how to see them")
    p.read_until("\r\n> ")
    p.send("show(t)\n")
    out = p.read_until("\r\n}\r\n> ", timeout=20)
    tap.eq(out.count("{ id = "), 5000, "show(t): all 5000")

    p.send("string.find('abc', 'b')\n")
    p.read_until("\r\n> ")
    p.send("{ _, _2 }\n")
    tap.like(p.read_until("}\r\n> "), "{ 2, 2 }", "_ and _2: the values the last line showed")
    tap.eq(p.close(), 0, "Ctrl-D exits 0")


@tap.test
def test_ctrl_d_typed_while_a_line_runs():
    p = Pty(home("eof"))
    p.send("flow.sleep(0.3) return 'alive'\n")
    time.sleep(0.1)
    p.send(b"\x04")  # the terminal is in canonical mode: an end-of-file mark, not a key
    tap.like(p.read_until('"alive"'), '"alive"', "the line finishes")
    end = time.time() + 5
    code = None
    while time.time() < end:
        pid, status = os.waitpid(p.pid, os.WNOHANG)
        if pid:
            code = os.waitstatus_to_exitcode(status)
            break
        p.read_until("\x00", timeout=0.05)
    if code is None:
        os.kill(p.pid, signal.SIGKILL)
        os.waitpid(p.pid, 0)
    tap.eq(code, 0, "then the REPL ends, as bash does (it used to wait for a key, the loop blocked)")


@tap.test
def test_errors_and_help():
    p = Pty(home("errors"))
    p.send("aws.dms.start_replication_task(5)\n")
    out = p.read_until("\r\n> ")
    tap.like(out, "stdin:1: aws.dms.start_replication_task: params must be a table, got number",
             "a wrong argument to an AWS operation: the message, placed in the user's line")
    tap.ok("stack traceback" not in out and "lua/aws" not in out, "no internal traceback")
    p.send('dms = require "dms"\n')
    p.read_until("\r\n> ")
    p.send("dms.start_task(5)\n")
    out = p.read_until("\r\n> ")
    tap.like(out, "stdin:1: dms: expected a replication task ARN (string), got number",
             "a stdlib operator misused: placed in the user's line, not in stdlib/dms.lua")
    tap.ok("stack traceback" not in out and "stdlib/" not in out, "no internal traceback")
    p.send("function outer() flow.all(5) end\n")
    p.read_until("\r\n> ")
    p.send("outer()\n")
    out = p.read_until("\r\n> ")
    tap.like(out, "stdin:1: bad argument #1 to 'all'", "misuse inside a function of the user's")
    p.send("trace()\n")
    out = p.read_until("\r\n> ")
    tap.like(out, "stack traceback:", "trace(): the whole traceback of the last error")
    tap.like(out, "in function 'flow.all'", "with the frames inside flowrun")
    tap.like(out, "stdin:1: in global 'outer'", "and the user's")
    tap.ok("cli/repl.lua" not in out, "without the REPL's own")

    p.send("?aws.dms.start_replication_task\n")
    out = p.read_until("\r\n> ")
    tap.like(out, "aws.dms.start_replication_task{params [, opts]} — Database Migration Service "
             "StartReplicationTask", "?x: the operation")
    req = out[out.find("required:"):out.find("optional:")]
    opt = out[out.find("optional:"):out.find("r = aws.dms")]
    tap.ok(re.search(r"ReplicationTaskArn\s+string", req) and
           re.search(r"StartReplicationTaskType\s+string", req), "required parameters with types")
    tap.ok(re.search(r"CdcStartTime\s+timestamp", opt) and re.search(r"CdcStopPosition\s+string", opt)
           and "ReplicationTaskArn" not in opt, "optional parameters with types")
    p.send("help(aws.dms)\n")
    out = p.read_until("\r\n> ")
    tap.like(out, "aws.dms — Database Migration Service (json protocol)", "help(service)")
    tap.like(out, "describe_replication_tasks", "lists its operations")
    p.send("help(flow.all)\n")
    out = p.read_until("\r\n> ")
    tap.like(out, "flow.all(hs)", "help(Lua function): its parameters")
    tap.like(out, "flow.all(handles) -> array of each task's first result", "and its comment")
    p.send("help(flow.sleep)\n")
    tap.like(p.read_until("\r\n> "), "flow.sleep — a C function", "help(C function)")
    p.send("help()\n")
    tap.like(p.read_until("\r\n> "), "Ctrl-R searches the history", "help(): the REPL's own")
    tap.eq(p.close(), 0, "exit 0")


def tmux(*args, check=True):
    r = subprocess.run([TMUX, "-u", "-S", SOCK] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=20)
    if check and r.returncode != 0:
        raise RuntimeError("tmux %s: %s" % (" ".join(args), r.stderr.strip()))
    return r.stdout


def screen():
    return tmux("capture-pane", "-p").rstrip("\n").split("\n")


def wait_screen(pred, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        s = screen()
        if pred(s):
            return s
        time.sleep(0.05)
    return screen()


def keys(*k):
    tmux("send-keys", *k)


def last_lines(n):
    return [l for l in screen() if l.strip()][-n:]


@tap.test
def test_keys_in_a_terminal():
    if not TMUX:
        tap.ok(False, "tmux is installed (scripts/deps.sh installs it)")
        return
    h = home("keys")
    cmd = "env HOME=%s LANG=C.UTF-8 %s" % (shlex.quote(h), shlex.quote(tap.FLOWRUN))
    tmux("new-session", "-d", "-x", "100", "-y", "30", cmd)
    try:
        wait_screen(lambda s: any(l.startswith("> ") or l == ">" for l in s))
        for line in ["x = 40 + 2", 'y = "hello world"', "x * 10"]:
            keys(line, "Enter")
            time.sleep(0.2)
        wait_screen(lambda s: "420" in s)
        keys("C-r", "x =")
        s = wait_screen(lambda s: any("(reverse-i-search)`x =': x = 40 + 2" in l for l in s))
        tap.ok(any("(reverse-i-search)`x =': x = 40 + 2" in l for l in s),
               "Ctrl-R: the search shows the newest match")
        keys("C-r")
        s = wait_screen(lambda s: any("(failed reverse-i-search)`x ='" in l for l in s))
        tap.ok(any("(failed reverse-i-search)`x ='" in l for l in s),
               "Ctrl-R again: no older match, said so")
        keys("BSpace", "BSpace", "BSpace", "*")
        s = wait_screen(lambda s: any("(reverse-i-search)`*': x * 10" in l for l in s))
        tap.ok(any("(reverse-i-search)`*': x * 10" in l for l in s), "Backspace, another query")
        keys("Enter")
        s = wait_screen(lambda s: s.count("420") == 2)
        tap.eq(s.count("420"), 2, "Enter runs the match (420 again)")
        tap.ok(not any("expected near" in l or "bck:" in l for l in s),
               "no search prompt left in the line (libedit's own search in callback mode)")
        tap.eq(last_lines(3), ["> x * 10", "420", ">"], "shown as if typed")

        keys("y")
        keys("C-r", "hello")
        wait_screen(lambda s: any("`hello': y = \"hello world\"" in l for l in s))
        keys("C-g")
        s = wait_screen(lambda s: s and [l for l in s if l.strip()][-1] == "> y")
        tap.eq(last_lines(1), ["> y"], "Ctrl-G gives the line back as it was")
        keys("C-r", "hello")
        wait_screen(lambda s: any("`hello': y = \"hello world\"" in l for l in s))
        keys("C-e", " .. '!'", "Enter", "y", "Enter")  # what follows Ctrl-E arrives with it
        s = wait_screen(lambda s: any('"hello world!"' in l for l in s))
        tap.ok(any(l == '"hello world!"' for l in s),
               "Ctrl-E ends the search and moves; the match is edited, the keys after it kept")

        keys("abc", "C-l")
        s = wait_screen(lambda s: [l for l in s if l.strip()] == ["> abc"])
        tap.eq([l for l in s if l.strip()], ["> abc"], "Ctrl-L clears the screen, keeps the line")
        keys("C-u", "1 + 1", "Enter")
        s = wait_screen(lambda s: "2" in s)
        tap.eq([l for l in s if l.strip()][:3], ["> 1 + 1", "2", ">"], "and the REPL goes on")

        keys("C-r", "hel")
        wait_screen(lambda s: any("`hel'" in l for l in s))
        keys("C-c")
        time.sleep(0.3)
        keys("3 * 3", "Enter")
        s = wait_screen(lambda s: "9" in s)
        tap.ok("9" in s and any(l == "> 3 * 3" for l in s), "Ctrl-C during a search drops it")
    finally:
        tmux("kill-server", check=False)
    hist = open(os.path.join(h, ".flowrun_history")).read()
    tap.ok(hist.startswith("_HiStOrY_V2_\n"), "the history file in libedit's format")
    tap.ok("bck:" not in hist and "reverse-i-search" not in hist, "no search prompt in it")


@tap.test
def test_two_repls_share_the_history():
    h = home("two")
    a, b = Pty(h), Pty(h)
    a.send("alpha = 1\n")
    a.read_until("\r\n> ")
    b.send("beta = 2\n")
    b.read_until("\r\n> ")
    a.send("gamma = 3\n")
    a.read_until("\r\n> ")
    b.send("multi = {\n")
    b.read_until(">> ")
    b.send("  'two lines' }\n")
    b.read_until("\r\n> ")
    tap.eq(a.close(), 0, "the first exits")
    tap.eq(b.close(), 0, "the second exits")
    with open(os.path.join(h, ".flowrun_history")) as f:
        lines = f.read().split("\n")
    entries = lines[1:-1]
    tap.eq(entries, ["alpha\\040=\\0401", "beta\\040=\\0402", "gamma\\040=\\0403",
                     "multi\\040=\\040{\\012\\040\\040'two\\040lines'\\040}"],
           "each entry appended as it was entered, by either REPL, none rewritten")
    c = Pty(h)
    c.send("\x12beta")
    c.read_until("`beta': beta = 2")
    c.send("\r")
    c.read_until("\r\n> ")
    c.send("\x12two lines\r")
    c.read_until("\r\n> ")
    c.send("multi[1]\n")
    tap.like(c.read_until("\r\n> "), '"two lines"', "a third REPL finds them (a multi-line one too)")
    c.send("beta\n")
    tap.like(c.read_until("\r\n> "), "\r\n2\r\n", "the found line ran")
    c.close()

    # a long history is cut to its last 1000 entries when the REPL starts
    with open(os.path.join(h, ".flowrun_history"), "w") as f:
        f.write("_HiStOrY_V2_\n")
        for i in range(2500):
            f.write("n\\040=\\040%d\n" % i)
    d = Pty(h)
    d.close()
    with open(os.path.join(h, ".flowrun_history")) as f:
        lines = f.read().split("\n")
    tap.eq((lines[0], lines[1], lines[-2], len(lines) - 2),
           ("_HiStOrY_V2_", "n\\040=\\0401500", "n\\040=\\0402499", 1000),
           "a file of 2500 entries kept to its last 1000 (the marker kept)")


shutil.rmtree(TMP, ignore_errors=True)
tap.done()
