#!/usr/bin/python3
"""System test of belayd's /metrics with a real Prometheus server (the Debian package's
binary, with a configuration, port and data directory of its own; a packaged service running
on the machine is neither used nor disturbed).

Usage: metrics_test.py BIN_DIR

Checked:
  - belayd started with --metrics-listen on a free loopback port is scraped every second by
    Prometheus (the target is up);
  - a 2-rank campaign's train-loss series has values in Prometheus, several scrapes of them;
  - the campaign's restarts counter is 0, and rises to 1 after rank 1 is killed with SIGKILL;
  - worker link requests are counted (ReportSteps answered OK);
  - a non-loopback --metrics-listen without --public-metrics is refused (exit 2, nothing created).
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from harness import Daemon, belay, fail, rank_pid, wait_for
import harness

harness.init(sys.argv[1])
BIN = harness.BIN
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

SPEC = {
    "train": {"zero_stage": 1},
    "checkpoint": {"dir": "ckpt", "every_steps": 50},
    "resources": {"ranks_per_node": 2},
    "restart": {"backoff": {"initial": "1s", "max": "2s", "jitter": 0.1}},
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """The Prometheus server, scraping `target` every second, its data under `root`."""

    def __init__(self, root, target):
        self.port = free_port()
        root.mkdir()
        (root / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: belayd\n    static_configs:\n"
            f"      - targets: ['{target}']\n")
        self.log = open(root / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=self.log)
        self.root = root
        wait_for("Prometheus ready", self.ready, timeout=30)

    def ready(self):
        if self.proc.poll() is not None:
            fail(f"prometheus exited {self.proc.returncode}:\n" + (self.root / "prometheus.log").read_text()[-3000:])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def query(self, expr):
        """The instant vector of `expr`: [(labels, value)]."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        if body.get("status") != "success":
            fail(f"query {expr}: {body}")
        return [(s["metric"], float(s["value"][1])) for s in body["data"]["result"]]

    def value(self, expr):
        """The single value of `expr`, or None while it has none."""
        result = self.query(expr)
        return result[0][1] if len(result) == 1 else None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def main():
    started = time.time()
    daemon = prom = None
    tmp = pathlib.Path(tempfile.mkdtemp())
    try:
        os.chdir(tmp)
        # Refused as invalid input before anything is opened: the metrics name every user's
        # campaigns.
        p = subprocess.run([str(BIN / "belayd"), "--state-dir", str(tmp / "refused"), "--metrics-listen",
                            "0.0.0.0:9"], capture_output=True, text=True, timeout=30)
        if p.returncode != 2 or "--public-metrics" not in p.stderr or (tmp / "refused").exists():
            fail(f"a non-loopback --metrics-listen was not refused: {p.returncode} {p.stderr[-1000:]}")

        harness.prepare_data()
        state = tmp / "state"
        metrics = f"127.0.0.1:{free_port()}"
        daemon = Daemon(state, ["--metrics-listen", metrics])
        daemon.start()
        prom = Prometheus(tmp / "prometheus", metrics)
        wait_for("the belayd target up", lambda: prom.value('up{job="belayd"}') == 1, timeout=30)

        pathlib.Path("m.toml").write_text(harness.campaign("m", 5000, SPEC))
        cid = belay("submit", "m.toml").stdout.split()[-1]
        loss = f'belay_campaign_train_loss{{campaign="{cid}"}}'
        wait_for("train loss in Prometheus", lambda: prom.query(loss), timeout=60)
        wait_for("several scrapes of it", lambda: (prom.value(f"count_over_time({loss}[1m])") or 0) >= 3, timeout=30)
        labels, value = prom.query(loss)[0]
        if labels.get("owner") in (None, "") or labels.get("attempt") != "1" or not 0 < value < 20:
            fail(f"train loss sample: {labels} {value}")
        restarts = f'belay_campaign_restarts_total{{campaign="{cid}"}}'
        if prom.value(restarts) != 0:
            fail(f"restarts before any failure: {prom.query(restarts)}")
        print(f"train loss of {cid} in Prometheus: {value:.3f} ({labels}); restarts 0")

        pid = wait_for("rank 1's pid", lambda: rank_pid(state, cid, 1, 1))
        os.kill(pid, signal.SIGKILL)
        wait_for("the restarts counter to rise", lambda: (prom.value(restarts) or 0) >= 1, timeout=60)
        running = f'belay_campaign_state{{campaign="{cid}",state="running"}}'
        wait_for("attempt 2's train loss",
                 lambda: prom.query(f'belay_campaign_train_loss{{campaign="{cid}",attempt="2"}}'), timeout=60)
        if prom.value(running) != 1:
            fail(f"state after the restart: {prom.query(running)}")
        print(f"killed rank 1 (pid {pid}): restarts {prom.value(restarts):.0f}, attempt 2 reports its loss")

        steps = prom.value('sum(belay_worker_link_requests_total{method="ReportSteps",code="OK"})') or 0
        rounds = prom.value("belay_supervisor_round_duration_seconds_count") or 0
        writes = prom.value('belay_store_write_duration_seconds_count{durability="synced"}') or 0
        if steps < 1 or rounds < 1 or writes < 1:
            fail(f"daemon metrics: {steps} ReportSteps, {rounds} rounds, {writes} synced writes")
        print(f"worker link: {steps:.0f} ReportSteps answered OK; {rounds:.0f} rounds; {writes:.0f} synced writes")

        belay("cancel", cid)
        daemon.kill(signal.SIGTERM)
        print(f"metrics_test: all checks passed in {time.time() - started:.0f} s")
    finally:
        if prom:
            prom.stop()
        harness.clean_up(daemon, tmp)


main()
