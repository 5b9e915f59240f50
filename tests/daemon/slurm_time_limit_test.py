#!/usr/bin/env python3
"""A campaign longer than its Slurm time limit, and slurmctld restarted under it, on the local
Slurm cluster (deploy/local-cluster, the ctest fixture slurm.cluster; SLURM_CONF names it):

  - time_limit = 2 min with pre_limit_signal = 45 s: Slurm sends USR1 to the batch shell, the
    ranks finish their step, checkpoint and exit; belayd ends the attempt as time_limit
    (not counted as a restart) and submits the next one at once from that checkpoint, until
    the campaign completes; the final checkpoint is byte-identical to the campaign run
    standalone in one go (the trajectory continues exactly across attempts);
  - with presubmit = true, each attempt's successor is queued in Slurm while it runs (after
    its job, --dependency=afterany) and the next attempt takes that job over instead of
    submitting a new one; the successor queued during the last attempt is cancelled when the
    campaign completes;
  - slurmctld is killed while attempt 1 runs and started again 20 s later: belayd waits it
    out (its polls fail, it backs off) and carries on with the same job;
  - belayd's calls to slurmctld over the whole campaign (`belay daemon --json`) stay within
    its RPC budget, and at about one poll every 2 s at most.

usage: slurm_time_limit_test.py BIN_DIR
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
SOURCE = pathlib.Path(__file__).resolve().parents[2]
DAEMON = None
STEPS = 700

# Sixteen sequences per rank per step: slow enough that one attempt cannot finish the campaign
# within the hard limit either, on a fast machine and should the warning signal be lost while
# slurmctld is down (with eight, an idle machine finished all 700 steps in one 2-minute job).
SPEC = tiny_campaign.merged(harness.slurm_campaign(100, time_limit="2m", pre_limit_signal="45s", presubmit=True),
                            {"train": {"micro_batch": 16, "global_batch": 32}})


def main():
    global DAEMON
    cluster = harness.slurm_cluster()
    start_sh = [str(SOURCE / "deploy" / "local-cluster" / "start.sh"), "--nodes", "3", "--dir", str(cluster)]
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="belay_slurm_limit_"))
    ctld_down = False
    try:
        os.chdir(tmp)
        harness.prepare_data()
        DAEMON = harness.start_slurm_daemon(tmp / "state")
        t_start = time.time()
        pathlib.Path("limit.toml").write_text(harness.campaign("limit", STEPS, SPEC))
        cid = belay("submit", "limit.toml").stdout.split()[-1]
        job = wait_for("a Slurm job", lambda: (status(cid).get("attempts") or [{}])[0].get("scheduler_job_id"))

        # slurmctld dies while attempt 1 runs, and comes back 20 s later.
        wait_for("step 20", lambda: int(status(cid)["campaign"].get("current_step", 0)) >= 20, timeout=120)
        # slurmctld writes its jobs to its state files a few seconds after a change; killed
        # before that it forgets them on restart (as a real controller would). Kill it once the
        # file has been written after attempt 1's job and the job queued behind it exist: the
        # test is about belayd riding out a controller restart, not about Slurm losing jobs.
        wait_for("the presubmitted job", lambda: (status(cid).get("attempts") or [{}])[0].get("successor_job_id"))
        seen = time.time()
        job_state = cluster / "state" / "job_state"
        deadline = seen + 15
        while time.time() < deadline and not (job_state.exists() and job_state.stat().st_mtime > seen):
            time.sleep(0.2)  # (after 15 s without a write, the last one came after both jobs)
        ctld = int((cluster / "run" / "slurmctld.pid").read_text().strip())
        os.kill(ctld, signal.SIGKILL)
        ctld_down = True
        step_at_kill = int(status(cid)["campaign"].get("current_step", 0))
        time.sleep(20)
        up = subprocess.run(start_sh, env=ENV, capture_output=True, text=True, timeout=300)
        if up.returncode != 0:
            fail(f"restarting slurmctld: {up.stdout[-1500:]}{up.stderr[-1500:]}")
        ctld_down = False
        print(f"slurmctld (pid {ctld}) killed at step {step_at_kill}, started again 20 s later")
        if not DAEMON.alive():
            fail("belayd died while slurmctld was down")

        w = belay("watch", cid, check=False, timeout=900)
        if w.returncode != 0:
            fail(f"watch: exit {w.returncode}\n{w.stdout[-3000:]}\n{belay('events', cid).stdout}")
        st = status(cid)
        attempts = st["attempts"]
        summary = [(a.get("number"), a.get("end_reason"), a.get("start_checkpoint_step", 0), a.get("last_step", 0))
                   for a in attempts]
        print(f"attempts (number, end, from, last step): {summary}")
        if len(attempts) < 2:
            fail(f"the campaign finished in one attempt; the time limit never hit: {summary}")
        if attempts[0]["scheduler_job_id"] != job:
            fail(f"attempt 1 ran as {attempts[0]['scheduler_job_id']}, not {job}: resubmitted while slurmctld was down?")
        for prev, nxt in zip(attempts, attempts[1:]):
            if prev.get("end_reason") != "END_REASON_TIME_LIMIT":
                fail(f"attempt {prev['number']} ended {prev.get('end_reason')}, not time_limit: {summary}")
            # The checkpoint of the signal, at the last step the attempt made, not an older one.
            if int(nxt.get("start_checkpoint_step", 0)) != int(prev.get("last_step", -1)):
                fail(f"attempt {nxt['number']} starts from {nxt.get('start_checkpoint_step')}, "
                     f"attempt {prev['number']} reached {prev.get('last_step')}")
        # Every later attempt ran the job queued while its predecessor ran.
        for prev, nxt in zip(attempts, attempts[1:]):
            if not nxt.get("presubmitted") or nxt.get("scheduler_job_id") != prev.get("successor_job_id"):
                fail(f"attempt {nxt['number']} ran job {nxt.get('scheduler_job_id')} (presubmitted: "
                     f"{nxt.get('presubmitted', False)}), attempt {prev['number']} queued {prev.get('successor_job_id')}")
        last_successor = attempts[-1].get("successor_job_id", "")
        events = belay("events", cid).stdout
        if not last_successor or f"presubmitted job {last_successor} cancelled" not in events:
            fail(f"the job queued during the last attempt ({last_successor!r}) was not cancelled:\n{events}")
        def gone():
            q = subprocess.run(["squeue", "-h", "-j", last_successor.removeprefix("slurm-"), "-o", "%T"],
                               env=ENV, capture_output=True, text=True)
            return q.stdout.strip() in ("", "CANCELLED", "COMPLETED")
        wait_for(f"job {last_successor} to leave the queue", gone, timeout=60)
        print(f"attempts 2..{len(attempts)} took over their presubmitted jobs; {last_successor} cancelled at the end")
        if int(st["campaign"].get("restarts_used", 0)) != 0:
            fail(f"time limits counted as restarts: {st['campaign'].get('restarts_used')}")

        # belayd held its calls to slurmctld to the budget, a round at a time.
        info = json.loads(belay("daemon", "--json").stdout)
        minutes = (time.time() - t_start) / 60
        rpcs, budget = int(info.get("slurm_rpcs", 0)), int(info.get("slurm_rpc_budget_per_minute", 0))
        print(f"slurmctld calls: {rpcs} in {minutes:.1f} min ({rpcs / minutes:.0f}/min, "
              f"{info.get('slurm_rpcs_refused', 0)} held back), budget {budget}/min")
        if rpcs == 0 or budget <= 0 or rpcs > budget * (int(minutes) + 1):
            fail(f"slurmctld calls {rpcs} over {minutes:.1f} min against a budget of {budget}/min")
        if rpcs / minutes > 45:
            fail(f"{rpcs / minutes:.0f} calls per minute: more than one poll every 2 s")

        harness.assert_same_as_standalone("limit.toml", "limit", cid, STEPS, timeout=900)
        print(f"completed over {len(attempts)} attempts; final checkpoint byte-identical to a standalone run's")
        DAEMON.kill(signal.SIGTERM)
        print("slurm_time_limit_test: all checks passed")
    finally:
        if ctld_down:
            subprocess.run(start_sh, env=ENV, capture_output=True, text=True, timeout=300)
        if DAEMON and DAEMON.alive():
            DAEMON.kill()
        os.chdir("/")
        shutil.rmtree(tmp, ignore_errors=True)


main()
