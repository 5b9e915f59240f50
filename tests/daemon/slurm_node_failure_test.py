#!/usr/bin/env python3
"""A node of a running campaign dies on the local Slurm cluster (deploy/local-cluster, the ctest
fixture slurm.cluster; SLURM_CONF names it):

  - a 2-node campaign runs on 2 of the 3 virtual nodes; once checkpoint 100 is committed, one
    of its nodes "dies": its rank is frozen (SIGSTOP, so the job makes no more progress) and
    its slurmd is killed, so slurmctld stops hearing from the node (`belay nodes` shows it
    DOWN, as Slurm reports it);
  - Slurm marks the node down and ends the job NODE_FAIL; belayd ends the attempt as
    node_failure naming that node, records the failure against it (`belay nodes`: excluded,
    one failure attributed) and submits the next attempt at once with --exclude of it;
  - the next attempt runs on the two healthy nodes, resumes from the last committed checkpoint
    and completes; the final checkpoint is byte-identical to the campaign run standalone;
  - the killed slurmd is started again (start.sh is idempotent) and the node returns to idle.

usage: slurm_node_failure_test.py BIN_DIR
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from harness import ENV, belay, fail, status, wait_for
import harness

harness.init(sys.argv[1])
BIN = harness.BIN
SOURCE = pathlib.Path(__file__).resolve().parents[2]
DAEMON = None
FROZEN = []

SPEC = harness.slurm_campaign(50)


def environ(pid):
    try:
        raw = pathlib.Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)


def ranks_on(node, cid):
    """Pids of the campaign's belay-worker processes running on virtual node `node`."""
    pids = []
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "belay-worker":
                continue
        except OSError:
            continue
        env = environ(proc.name)
        if env.get("BELAY_CAMPAIGN") == cid and env.get("SLURMD_NODENAME") == node:
            pids.append(int(proc.name))
    return pids


def sinfo_state(node):
    p = subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], env=ENV, capture_output=True, text=True)
    return p.stdout.strip()


def main():
    global DAEMON
    cluster = harness.slurm_cluster()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="belay_slurm_node_"))
    victim = None
    try:
        os.chdir(tmp)
        harness.prepare_data()
        DAEMON = harness.start_slurm_daemon(tmp / "state", ["--slurm-node-poll", "5"])
        pathlib.Path("nodefail.toml").write_text(SPEC.format(name="nodefail", steps=400))
        cid = belay("submit", "nodefail.toml").stdout.split()[-1]

        # Checkpoint 100 committed, the job past it.
        wait_for("checkpoint 100", lambda: int(status(cid)["campaign"].get("last_checkpoint_step", 0)) >= 100,
                 timeout=300)
        a1 = status(cid)["attempts"][0]
        nodes = a1.get("nodes", [])
        if len(nodes) != 2:
            fail(f"attempt 1 runs on {nodes}, not on two nodes")
        victim = nodes[1]
        pids = ranks_on(victim, cid)
        if not pids:
            fail(f"no rank of {cid} found on {victim}")
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            FROZEN.append(pid)
        slurmd_pid = int((cluster / "run" / f"slurmd.{victim}.pid").read_text().strip())
        os.kill(slurmd_pid, signal.SIGKILL)
        t_kill = time.time()
        print(f"{victim}: rank(s) {pids} frozen, slurmd {slurmd_pid} killed at step "
              f"{status(cid)['campaign'].get('current_step')}")

        def ended():
            at = status(cid)["attempts"]
            return at[0] if at[0].get("state") == "ATTEMPT_STATE_ENDED" else None
        a1 = wait_for("attempt 1 to end", ended, timeout=240)
        print(f"attempt 1 ended {a1['end_reason']} after {time.time() - t_kill:.0f} s: {a1.get('end_message')}")
        if a1["end_reason"] != "END_REASON_NODE_FAILURE" or a1.get("failed_nodes") != [victim]:
            fail(f"attempt 1: {json.dumps(a1)[:1500]}\n{belay('events', cid).stdout}")
        # The dead node's processes would be gone with the node: end them.
        for pid in FROZEN:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        listed = {n["name"]: n for n in json.loads(belay("nodes", "--json").stdout).get("nodes", [])}
        v = listed.get(victim, {})
        if not v.get("excluded") or int(v.get("failures_attributed", 0)) != 1:
            fail(f"belay nodes shows {victim} as {v}")
        healthy = nodes[0]
        if listed.get(healthy, {}).get("excluded") or int(listed.get(healthy, {}).get("attempts_hosted", 0)) != 1:
            fail(f"belay nodes shows {healthy} as {listed.get(healthy)}")
        # Slurm's own view of the node reaches the records too.
        def victim_state():
            for n in json.loads(belay("nodes", "--json").stdout).get("nodes", []):
                if n["name"] == victim and n.get("slurm_state", "").startswith("DOWN"):
                    return n["slurm_state"]
            return None
        wait_for(f"belay nodes to show {victim} down", victim_state, timeout=60)
        print(belay("nodes").stdout.rstrip())

        def second_running():
            at = status(cid)["attempts"]
            return at[1] if len(at) > 1 and at[1].get("nodes") else None
        a2 = wait_for("attempt 2 to run", second_running, timeout=120)
        if a2.get("excluded_nodes") != [victim] or victim in a2["nodes"]:
            fail(f"attempt 2 excluded {a2.get('excluded_nodes')} and runs on {a2['nodes']}")
        if int(a2.get("start_checkpoint_step", 0)) < 100:
            fail(f"attempt 2 resumes from {a2.get('start_checkpoint_step')}, not from a checkpoint >= 100")
        print(f"attempt 2 runs on {a2['nodes']} without {victim}, from checkpoint {a2['start_checkpoint_step']}")
        w = belay("watch", cid, check=False, timeout=600)
        if w.returncode != 0:
            fail(f"watch: exit {w.returncode}\n{w.stdout[-3000:]}\n{belay('events', cid).stdout}")

        harness.assert_same_as_standalone("nodefail.toml", "nodefail", cid, 400, timeout=600)
        print("completed after the node failure; final checkpoint byte-identical to a standalone run's")
        DAEMON.kill(signal.SIGTERM)
        print("slurm_node_failure_test: all checks passed")
    finally:
        for pid in FROZEN:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if DAEMON and DAEMON.alive():
            DAEMON.kill()
        if victim:
            # Bring the node back for whatever runs next on the cluster.
            subprocess.run([str(SOURCE / "deploy" / "local-cluster" / "start.sh"), "--nodes", "3", "--dir", str(cluster)],
                           env=ENV, capture_output=True, text=True, timeout=300)
            deadline = time.time() + 120
            while time.time() < deadline and sinfo_state(victim) not in ("idle", "mixed", "allocated"):
                time.sleep(1)
            print(f"{victim} is {sinfo_state(victim)} again")
        os.chdir("/")
        shutil.rmtree(tmp, ignore_errors=True)


main()
