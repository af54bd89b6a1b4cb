# OpenShell egress forwarder: runs inside the sandbox as the job's user, then runs the job.
# It is a convenience, not the policy: its only way out is the worker's egress proxy on the
# Unix socket beside it, and the proxy alone decides. It serves
#   - an HTTP proxy on 127.0.0.1:3128 (HTTP_PROXY / HTTPS_PROXY point at it), passed through
#     to the socket as is;
#   - for each allowed name with one port, a listener on the name's loopback address (from
#     /etc/hosts) and port, tunnelled with CONNECT name:port, so jobs that ignore proxy
#     settings connect as usual.
# Usage: python3 forward.py -- ARGV...
import json
import os
import signal
import socket
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
SOCKET = os.path.join(HERE, "egress.sock")
PROXY = ("127.0.0.1", 3128)


def pipe(source, sink):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    try:
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def splice(client, upstream):
    back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
    back.start()
    pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def to_proxy():
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    upstream.connect(SOCKET)
    return upstream


def tunnel(client, name, port):
    try:
        upstream = to_proxy()
        upstream.sendall(("CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (name, port, name, port)).encode())
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 16384:
            data = upstream.recv(4096)
            if not data:
                break
            head += data
        status = head.split(b" ", 2)[1:2]
        if status != [b"200"]:
            client.close()
            upstream.close()
            return
        rest = head.split(b"\r\n\r\n", 1)[1]
        if rest:
            client.sendall(rest)
    except OSError:
        client.close()
        return
    splice(client, upstream)


def passthrough(client):
    try:
        upstream = to_proxy()
    except OSError:
        client.close()
        return
    splice(client, upstream)


def serve(address, handle):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(address)
    listener.listen(64)

    def loop():
        while True:
            client, _ = listener.accept()
            threading.Thread(target=handle, args=(client,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()


def main():
    argv = sys.argv[1:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        sys.stderr.write("forward.py: no program to run\n")
        return 2
    with open(os.path.join(HERE, "forward.json")) as config_file:
        config = json.load(config_file)
    serve(PROXY, passthrough)
    for listener in config.get("listeners", []):
        name, port = listener["name"], int(listener["port"])
        try:
            serve((listener["address"], port), lambda c, n=name, p=port: tunnel(c, n, p))
        except OSError as error:
            sys.stderr.write("openshell egress: cannot serve %s:%d in the sandbox: %s\n" % (name, port, error))
    env = dict(os.environ)
    url = "http://%s:%d" % PROXY
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.setdefault(key, url)
    try:
        child = subprocess.Popen(argv, env=env)
    except OSError as error:
        sys.stderr.write("%s: %s\n" % (argv[0], error.strerror))
        return 127 if isinstance(error, FileNotFoundError) else 126
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, lambda sig, _frame: child.send_signal(sig))
    code = child.wait()
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main())
