#!/usr/bin/env python3
"""belayd driving a campaign on a real Slurm cluster: the local cluster of deploy/local-cluster
(the ctest fixture slurm.cluster starts it; SLURM_CONF names it).

  - a 2-node campaign (scheduler = "slurm", one CPU rank per node, mpirun inside the batch job
    across two virtual nodes) runs to completion through belayd, with a checkpoint committed by
    belayd and its job id a Slurm one; the final checkpoint is byte-identical to the same
    campaign run standalone under mpirun on this machine;
  - belayd killed and restarted while the job runs: the job is re-adopted, not resubmitted.

usage: slurm_campaign_test.py BIN_DIR
"""

import json
import os
import pathlib
import re
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
DAEMON = None


SPEC = harness.slurm_campaign(50)


def main():
    global DAEMON
    harness.slurm_cluster()  # fails unless SLURM_CONF names the local cluster
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="belay_slurm_"))
    try:
        os.chdir(tmp)
        harness.prepare_data()
        DAEMON = harness.start_slurm_daemon(tmp / "state")

        pathlib.Path("slurm.toml").write_text(harness.campaign("onslurm", 300, SPEC))
        cid = belay("submit", "slurm.toml").stdout.split()[-1]
        job = wait_for("a Slurm job", lambda: (status(cid).get("attempts") or [{}])[0].get("scheduler_job_id"))
        if not job.startswith("slurm-"):
            fail(f"attempt 1 ran as {job}, not as a Slurm job")
        def squeue():
            p = subprocess.run(["squeue", "-h", "-t", "all", "-j", job[len("slurm-"):], "-o", "%k %D"], env=ENV,
                               capture_output=True, text=True)
            return (p.stdout + p.stderr).strip()
        shown = wait_for("squeue to show the job", squeue, timeout=30)
        if not re.fullmatch(rf"belay:campaign={cid}:attempt=1:key=[0-9a-f]{{16}} 2", shown):
            fail(f"squeue shows the job as {shown!r}")
        # belayd killed and restarted while the job runs: re-adopted, not resubmitted.
        wait_for("step 60", lambda: int(status(cid)["campaign"].get("current_step", 0)) >= 60)
        DAEMON.kill()
        time.sleep(2)
        DAEMON.start()
        w = belay("watch", cid, check=False, timeout=600)
        if w.returncode != 0:
            fail(f"watch: exit {w.returncode}\n{w.stdout[-3000:]}\n{belay('events', cid).stdout}")
        st = status(cid)
        if len(st["attempts"]) != 1 or st["attempts"][0]["scheduler_job_id"] != job:
            fail(f"expected one attempt as {job}: {json.dumps(st['attempts'])[:2000]}")
        print(f"campaign {cid} completed on Slurm as {job} (2 virtual nodes), belayd restarted mid-run and re-adopted it")

        # The same campaign standalone: the same final state, byte for byte.
        harness.assert_same_as_standalone("slurm.toml", "onslurm", cid, 300, timeout=600)
        if not (tmp / "ckpt" / cid / "step_000000300" / "manifest.json").exists():
            fail("no manifest written by belayd")
        print("final checkpoint byte-identical to a standalone mpirun run's")
        DAEMON.kill(signal.SIGTERM)
        print("slurm_campaign_test: all checks passed")
    finally:
        if DAEMON and DAEMON.alive():
            DAEMON.kill()
        os.chdir("/")
        shutil.rmtree(tmp, ignore_errors=True)


main()
