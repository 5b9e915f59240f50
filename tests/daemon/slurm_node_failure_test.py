#!/usr/bin/env python3
"""A node of a running campaign dies on the local Slurm cluster (deploy/local-cluster, the ctest
fixture slurm.cluster; SLURM_CONF names it) and the campaign carries on with a smaller world
size:

  - a 3-node campaign (one rank per node, min_nodes = 2) runs on all 3 virtual nodes; once
    checkpoint 100 is committed, one of its nodes "dies": its rank is frozen (SIGSTOP, so the
    job makes no more progress) and its slurmd is killed, so slurmctld stops hearing from the
    node (`belay nodes` shows it DOWN, as Slurm reports it);
  - Slurm marks the node down and ends the job NODE_FAIL; belayd ends the attempt as
    node_failure naming that node, records the failure against it (`belay nodes`: excluded,
    one failure attributed) and submits the next attempt at once with --exclude of it;
  - with only two usable nodes left the next attempt runs on those two, as 2 ranks instead of
    3 (an attempt_resized event says why), resumes from the last committed checkpoint — saved
    by 3 ranks, loaded by 2 — and completes. Checked bit for bit: the 3-rank checkpoint equals
    a standalone 3-rank run's at that step, and the final checkpoint equals a standalone
    2-rank run resumed from it;
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
import tiny_campaign

harness.init(sys.argv[1])
BIN = harness.BIN
SOURCE = pathlib.Path(__file__).resolve().parents[2]
DAEMON = None
FROZEN = []

# 12 sequences a step split over 3 ranks and over 2.
SPEC = tiny_campaign.merged(harness.slurm_campaign(50, nodes=3, min_nodes=2),
                            {"train": {"global_batch": 12}})


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
        pathlib.Path("nodefail.toml").write_text(harness.campaign("nodefail", 400, SPEC))
        cid = belay("submit", "nodefail.toml").stdout.split()[-1]

        # Checkpoint 100 committed, the job past it.
        wait_for("checkpoint 100", lambda: int(status(cid)["campaign"].get("last_checkpoint_step", 0)) >= 100,
                 timeout=300)
        a1 = status(cid)["attempts"][0]
        nodes = a1.get("nodes", [])
        if len(nodes) != 3:
            fail(f"attempt 1 runs on {nodes}, not on three nodes")
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
        healthy = sorted(n for n in nodes if n != victim)
        for h in healthy:
            if listed.get(h, {}).get("excluded") or int(listed.get(h, {}).get("attempts_hosted", 0)) != 1:
                fail(f"belay nodes shows {h} as {listed.get(h)}")
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
        try:
            a2 = wait_for("attempt 2 to run", second_running, timeout=120)
        except SystemExit:
            queue = subprocess.run(["squeue", "-o", "%i %T %D %R"], env=ENV, capture_output=True, text=True).stdout
            print(f"{belay('events', cid).stdout}\n{json.dumps(status(cid)['attempts'][-1])}\n{queue}")
            raise
        if a2.get("excluded_nodes") != [victim] or sorted(a2["nodes"]) != healthy or int(a2.get("world_size", 0)) != 2:
            fail(f"attempt 2 excluded {a2.get('excluded_nodes')}, runs on {a2['nodes']} as {a2.get('world_size')} ranks")
        k = int(a2.get("start_checkpoint_step", 0))
        if k < 100:
            fail(f"attempt 2 resumes from {k}, not from a checkpoint >= 100")
        # Kept aside: retention removes it once newer checkpoints are committed.
        ours_k = pathlib.Path("ckpt_k")
        shutil.copytree(pathlib.Path("ckpt") / cid / f"step_{k:09d}", ours_k)
        events = belay("events", cid).stdout
        if "attempt 2 runs on 2 of 3 nodes (2 ranks instead of 3)" not in events:
            fail(f"no resize event:\n{events}")
        print(f"attempt 2 runs on {a2['nodes']} (2 ranks) without {victim}, from checkpoint {k} of 3 ranks")
        w = belay("watch", cid, check=False, timeout=600)
        if w.returncode != 0:
            fail(f"watch: exit {w.returncode}\n{w.stdout[-3000:]}\n{belay('events', cid).stdout}")

        # The same trajectory standalone: 3 ranks up to step k, then 2 ranks from checkpoint k
        # (resharded on load) to the end.
        env = {**ENV, **harness.mpi_env()}
        worker = [str(BIN / "belay-worker"), "--log-level", "warn", "train", "--spec", "nodefail.toml"]
        ref3 = subprocess.run(["mpirun", "-np", "3", *worker, "--out", "ref3", "--steps", str(k)],
                              env=env, capture_output=True, text=True, timeout=600)
        if ref3.returncode != 0:
            fail(f"3-rank reference run: {ref3.stderr[-2000:]}")
        for r in range(3):
            theirs = pathlib.Path("ref3") / "nodefail" / f"step_{k:09d}" / f"rank_{r:05d}.bin"
            if (ours_k / f"rank_{r:05d}.bin").read_bytes() != theirs.read_bytes():
                fail(f"checkpoint {k}, rank {r}: differs from the 3-rank standalone run's")
        # Resumed from the standalone run's checkpoint k (its shards are belayd's, as checked;
        # its manifest names the standalone campaign).
        ref2 = subprocess.run(["mpirun", "-np", "2", *worker, "--out", "ref2", "--resume",
                               str(pathlib.Path("ref3") / "nodefail" / f"step_{k:09d}")],
                              env=env, capture_output=True, text=True, timeout=600)
        if ref2.returncode != 0:
            fail(f"2-rank reference run: {ref2.stderr[-2000:]}")
        final = pathlib.Path("ckpt") / cid / f"step_{400:09d}"
        shards = sorted(p.name for p in final.glob("rank_*.bin"))
        if shards != ["rank_00000.bin", "rank_00001.bin"]:
            fail(f"final checkpoint has shards {shards}, not two")
        for name in shards:
            if (final / name).read_bytes() != (pathlib.Path("ref2") / "nodefail" / final.name / name).read_bytes():
                fail(f"final {name} differs from the standalone 2-rank run resumed from checkpoint {k}")
        print(f"completed on 2 nodes after the node failure; checkpoint {k} and the final checkpoint "
              "byte-identical to standalone 3-rank and 2-rank runs")
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
