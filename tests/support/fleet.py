"""A fleet for tests and the bench: broker processes behind a real nginx
(Debian's package, installed by ``.ci/run``), configured with the shipped
``deploy/nginx`` files on free loopback ports.

Every process is started here and stopped by PID.
"""

import os
import re
import shutil
import signal
import subprocess
import urllib.request

from tests.support.chain import REPO, BrokerProcess, free_port, stop_process, wait_until

NGINX_DIR = os.path.join(REPO, "deploy", "nginx")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

MAIN_CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
events {{ worker_connections 4096; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/temp/body;
    proxy_temp_path {dir}/temp/proxy;
    fastcgi_temp_path {dir}/temp/fastcgi;
    uwsgi_temp_path {dir}/temp/uwsgi;
    scgi_temp_path {dir}/temp/scgi;
    include {dir}/lambda-debugger.conf;
}}
"""


def render(ports, lambda_port, debugger_port):
    """The shipped configuration with these brokers' ports and listeners."""
    with open(os.path.join(NGINX_DIR, "lambda-debugger.conf")) as source:
        text = source.read()
    example = re.search(r"    server 10\.0\.1\.\d+:8000 ([^\n]*)\n", text)
    assert example, "the example servers of lambda-debugger.conf changed"
    servers = "".join("    server 127.0.0.1:%d %s\n" % (port, example.group(1)) for port in ports)
    text, count = re.subn(r"(    server 10\.0\.1\.\d+:8000 [^\n]*\n)+", lambda _: servers, text)
    assert count == 1, "the example servers of lambda-debugger.conf changed"
    text = text.replace("listen 8080;", "listen 127.0.0.1:%d;" % lambda_port, 1)
    text = text.replace("listen 9229;", "listen 127.0.0.1:%d;" % debugger_port, 1)
    return text


class Nginx:
    """nginx in the foreground, in a folder of its own."""

    def __init__(self, folder, broker_ports):
        self.dir = str(folder)
        os.makedirs(os.path.join(self.dir, "temp"), exist_ok=True)
        self.lambda_port, self.debugger_port = free_port(), free_port()
        shutil.copytree(os.path.join(NGINX_DIR, "snippets"), os.path.join(self.dir, "snippets"))
        self.configure(broker_ports)
        with open(os.path.join(self.dir, "nginx.conf"), "w") as conf:
            conf.write(MAIN_CONF.format(dir=self.dir))
        self.log = open(os.path.join(self.dir, "stderr.log"), "wb")
        self.process = subprocess.Popen(
            [NGINX, "-p", self.dir, "-c", os.path.join(self.dir, "nginx.conf"), "-g", "daemon off;"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        wait_until(self._healthy, 15, "nginx's /healthz through a broker")

    def configure(self, broker_ports):
        with open(os.path.join(self.dir, "lambda-debugger.conf"), "w") as conf:
            conf.write(render(broker_ports, self.lambda_port, self.debugger_port))

    def reload(self, broker_ports):
        """Point nginx at these brokers, as an operator's reload would; returns
        once the new workers run and the old ones (idle here) have exited."""
        started, exited = self._log_count("start worker process"), self._log_count("exited with code")
        self.configure(broker_ports)
        os.kill(self.process.pid, signal.SIGHUP)
        wait_until(lambda: self._log_count("start worker process") > started, 10, "nginx's new workers")
        wait_until(lambda: self._log_count("exited with code") > exited, 10, "nginx's old workers to exit")

    def _log_count(self, text):
        with open(os.path.join(self.dir, "error.log"), errors="replace") as log:
            return log.read().count(text)

    def _healthy(self):
        if self.process.poll() is not None:
            raise AssertionError("nginx exited: " + open(os.path.join(self.dir, "stderr.log")).read())
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % self.debugger_port, timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: workers finish their connections
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                stop_process(self.process)
        self.log.close()


class Fleet:
    """``count`` brokers, each serving both sides on one port, behind nginx;
    with ``peers`` each broker knows the others (``--peer``)."""

    def __init__(self, folder, count=3, *broker_args, peers=False):
        self.folder = str(folder)
        os.makedirs(self.folder, exist_ok=True)
        self.broker_args = broker_args
        self.started = 0
        ports = [free_port() for _ in range(count)]
        self.brokers = [self.add_broker(port, [p for p in ports if p != port] if peers else ()) for port in ports]
        self.nginx = Nginx(os.path.join(self.folder, "nginx"), [b.lambda_port for b in self.brokers])

    def add_broker(self, port=None, peers=()):
        """Start one more broker (named broker-1, broker-2, ...)."""
        self.started += 1
        index, port = self.started, port or free_port()
        peer_args = [arg for peer in peers for arg in ("--peer", "127.0.0.1:%d" % peer)]
        return BrokerProcess(
            os.path.join(self.folder, "broker-%d.log" % index),
            "--name",
            "broker-%d" % index,
            *peer_args,
            *self.broker_args,
            ports=(port, port),
        )

    def where(self, function_ids):
        """For each function ID with an open session: the broker holding it."""
        found = {}
        for broker in self.brokers:
            if broker.process.poll() is not None:
                continue
            for session in broker.sessions():
                found.setdefault(session["function_id"], set()).add(broker.status()["broker"])
        return {fid: found.get(fid) for fid in function_ids}

    def stop(self):
        self.nginx.stop()
        for broker in self.brokers:
            broker.stop()
