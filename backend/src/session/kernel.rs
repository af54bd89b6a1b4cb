//! Kernels: a long-lived interpreter inside a session's sandbox, one design for every backend.
//!
//! A kernel job runs `python3 -S -c CLIENT main.py` in the sandbox like any other job, for a
//! Python kernel and a Node one alike. The client connects to the kernel's Unix socket under
//! `/tmp` (starting the kernel, detached, when none answers), sends the cell's code, and relays
//! the kernel's framed stdout, stderr and exit code as its own. The kernel runs each cell in
//! one set of globals, so variables and imports persist; the value of a last expression is
//! printed, as in a notebook. A cell that is
//! stopped (timeout, cancel) leaves the kernel mid-cell: the session then kills every process
//! in the sandbox ([`super::SandboxSession::reset`]), and the next cell starts a fresh kernel.
//! A kernel that dies (out of memory) shows as the client's exit code [`KERNEL_DIED`].

use openshell_protocol::session::Kernel;

use crate::job::Job;

/// Exit code of the client when the kernel died under the cell (killed, out of memory).
pub const KERNEL_DIED: i32 = 137;

/// The Python source of the Python kernel (run as `python3 -c KERNEL`).
pub const PYTHON_KERNEL: &str = r#"
import ast, os, socket, struct, sys, traceback
SOCK = "/tmp/.openshell-kernel/python.sock"

def frame(conn, tag, data):
    conn.sendall(tag + struct.pack(">I", len(data)) + data)

def read_exact(conn, n):
    buf = b""
    while len(buf) < n:
        part = conn.recv(n - len(buf))
        if not part:
            return None
        buf += part
    return buf

class Relay:
    def __init__(self, conn, tag):
        self.conn, self.tag = conn, tag
    def write(self, text):
        if text:
            frame(self.conn, self.tag, text.encode("utf-8", "replace"))
        return len(text)
    def flush(self):
        pass

def run_cell(conn, code, scope):
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Relay(conn, b"1"), Relay(conn, b"2")
    status = 0
    try:
        tree = ast.parse(code, "<cell>")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<cell>", "exec"), scope)
        if last is not None:
            value = eval(compile(last, "<cell>", "eval"), scope)
            if value is not None:
                print(repr(value))
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        sys.stdout, sys.stderr = out, err
    frame(conn, b"x", struct.pack(">i", status))

os.makedirs(os.path.dirname(SOCK), mode=0o700, exist_ok=True)
try:
    os.unlink(SOCK)
except FileNotFoundError:
    pass
server = socket.socket(socket.AF_UNIX)
server.bind(SOCK)
server.listen(1)
scope = {"__name__": "__main__"}
while True:
    conn, _ = server.accept()
    with conn:
        head = read_exact(conn, 4)
        if head is None:
            continue
        code = read_exact(conn, struct.unpack(">I", head)[0])
        if code is not None:
            run_cell(conn, code.decode("utf-8", "replace"), scope)
"#;

/// The Python source of the per-cell client of every kernel (`argv[1]` is the code file), kept
/// small since it starts for every cell; `SOCK` (the kernel's socket) and `START` (the argv
/// that starts the kernel) are defined before it.
const PYTHON_CLIENT: &str = r#"
import os, socket, struct, sys, time

def read_exact(conn, n):
    buf = b""
    while len(buf) < n:
        part = conn.recv(n - len(buf))
        if not part:
            return None
        buf += part
    return buf

def start():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.execvp(START[0], START)
        os._exit(0)
    os.wait()

def connect():
    for attempt in range(400):
        conn = socket.socket(socket.AF_UNIX)
        try:
            conn.connect(SOCK)
            return conn
        except OSError:
            conn.close()
            if attempt == 0:
                start()
            time.sleep(0.025)
    sys.stderr.write("openshell: the kernel did not start\n")
    sys.exit(125)

with open(sys.argv[1], "rb") as source:
    code = source.read()
conn = connect()
conn.sendall(struct.pack(">I", len(code)) + code)
out, err = sys.stdout.buffer, sys.stderr.buffer
while True:
    head = read_exact(conn, 5)
    if head is None:
        err.write(b"openshell: the kernel died during this cell (killed or out of memory); it restarts with the next one, its variables are lost\n")
        err.flush()
        sys.exit(137)
    data = read_exact(conn, struct.unpack(">I", head[1:])[0]) or b""
    if head[:1] == b"x":
        out.flush()
        sys.exit(struct.unpack(">i", data)[0])
    stream = out if head[:1] == b"1" else err
    stream.write(data)
    stream.flush()
"#;

/// The JavaScript source of the Node kernel (run as `node -e KERNEL`): cells run with
/// `vm.runInContext` in one context, so `var`, `let`, `const` and globals persist; `console`
/// output is relayed, the value of the cell (awaited if it is a promise) printed.
pub const NODE_KERNEL: &str = r#"
const net = require('net'), vm = require('vm'), fs = require('fs'), util = require('util');
const SOCK = '/tmp/.openshell-kernel/node.sock';
fs.mkdirSync('/tmp/.openshell-kernel', { recursive: true, mode: 0o700 });
try { fs.unlinkSync(SOCK); } catch (e) {}
let conn = null;
function frame(tag, text) {
  const body = Buffer.from(text, 'utf8');
  const head = Buffer.alloc(5);
  head.write(tag, 0);
  head.writeUInt32BE(body.length, 1);
  conn.write(Buffer.concat([head, body]));
}
const out = (...args) => frame('1', util.format(...args) + '\n');
const err = (...args) => frame('2', util.format(...args) + '\n');
const sandbox = { require, process, Buffer, setTimeout, setInterval, clearTimeout, clearInterval,
  console: { log: out, info: out, debug: out, error: err, warn: err } };
const context = vm.createContext(sandbox);
net.createServer((client) => {
  let buf = Buffer.alloc(0);
  client.on('data', async (data) => {
    buf = Buffer.concat([buf, data]);
    if (buf.length < 4 || buf.length < 4 + buf.readUInt32BE(0)) return;
    const code = buf.slice(4, 4 + buf.readUInt32BE(0)).toString('utf8');
    buf = Buffer.alloc(0);
    conn = client;
    let status = 0;
    try {
      let value = vm.runInContext(code, context, { filename: '<cell>' });
      if (value && typeof value.then === 'function') value = await value;
      if (value !== undefined) out(util.inspect(value));
    } catch (e) {
      err((e && e.stack) || String(e));
      status = 1;
    }
    const end = Buffer.alloc(9);
    end.write('x', 0);
    end.writeUInt32BE(4, 1);
    end.writeInt32BE(status, 5);
    client.end(end);
  });
}).listen(SOCK);
"#;

/// Turns a `language` job of `kernel`'s language into a cell of the session's kernel: the
/// code file is still written (the client reads it from there), the argv becomes the client's.
/// `code_file` is where the pool's language writes the code (`main.py`, `main.js`).
pub fn cell(mut job: Job, kernel: Kernel, code_file: &str) -> Job {
    let (sock, start) = match kernel {
        Kernel::Python => (
            "/tmp/.openshell-kernel/python.sock",
            ["python3", "-c", PYTHON_KERNEL],
        ),
        Kernel::Node => (
            "/tmp/.openshell-kernel/node.sock",
            ["node", "-e", NODE_KERNEL],
        ),
    };
    let source = format!("SOCK = {sock:?}\nSTART = {start:?}\n{PYTHON_CLIENT}");
    job.argv = vec![
        "python3".to_string(),
        "-S".to_string(),
        "-c".to_string(),
        source,
        code_file.to_string(),
    ];
    job
}
