#!/usr/bin/python3
"""System test of a GPU campaign under belayd (label gpu): the local scheduler, one rank per
GPU (the campaign sets gpus_per_node, so the worker trains with --device auto on its GPU).

Usage: gpu_campaign_test.py BIN_DIR. Exits 77 (skip) without a GPU.

Checked, on one GPU:
  - a ZeRO stage-2 campaign completes under belayd, and its final checkpoint is byte-identical
    to `belay-worker train` of the same campaign file run standalone on the GPU;
  - a non-finite loss injected at step 45 of the first attempt rolls back to the good
    checkpoint at step 20 (the one at 40 is not good yet: a checkpoint is good after 10
    healthy steps); the second attempt resumes there on the GPU and the campaign completes,
    counted as a rollback.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from harness import Daemon, belay, fail, kill_local_jobs, status
import harness

if shutil.which("nvidia-smi") is None or subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode != 0:
    print("SKIP: no GPU (nvidia-smi -L failed)")
    sys.exit(77)

harness.init(sys.argv[1])
BIN = harness.BIN

SPEC = {
    "train": {"zero_stage": 2},
    "checkpoint": {"dir": "ckpt", "every_steps": 20, "keep_last": 10},
    "resources": {"gpus_per_node": 1, "ranks_per_node": 1},
    "restart": {"backoff": {"initial": "1s", "max": "5s", "jitter": 0.1}},
}


def prepare_data():
    """Token shards under ./data: Debian's licence texts, or (a machine without them) any text."""
    licences = [p for p in ("/usr/share/common-licenses/GPL-3", "/usr/share/common-licenses/Apache-2.0")
                if pathlib.Path(p).is_file()]
    if len(licences) < 2:
        pathlib.Path("text").mkdir()
        pathlib.Path("text/corpus.txt").write_text(pathlib.Path(__file__).read_text() * 60)
        licences = ["text/corpus.txt"]
    subprocess.run([str(BIN / "belay"), "data", "prepare", "--out", "data", "--val-fraction", "0.1", *licences],
                   check=True, capture_output=True)


def watch(cid):
    w = belay("watch", cid, check=False, timeout=600)
    if w.returncode != 0:
        fail(f"watch {cid}: exit {w.returncode}\n{w.stdout[-3000:]}")


def main():
    tmp = pathlib.Path(tempfile.mkdtemp())
    state = tmp / "state"
    daemon = None
    try:
        os.chdir(tmp)
        prepare_data()

        # --- A campaign on the GPU, against the same file trained standalone.
        daemon = Daemon(state)
        daemon.start()
        pathlib.Path("gpu.toml").write_text(harness.campaign("gpu", 60, SPEC))
        cid = belay("submit", "gpu.toml").stdout.split()[-1]
        watch(cid)
        st = status(cid)
        if len(st["attempts"]) != 1 or st["campaign"]["state"] != "CAMPAIGN_STATE_COMPLETED":
            fail(f"GPU campaign: {json.dumps(st)[:2000]}")
        log = (state / "campaigns" / cid / "attempt_1" / "rank_00000.log").read_text(errors="replace")
        if "rank 0 (local rank 0) on GPU 0" not in log:
            fail(f"the rank's log does not name its GPU:\n{log[-2000:]}")
        ref = subprocess.run([str(BIN / "belay-worker"), "--log-level", "warn", "train", "--spec", "gpu.toml",
                              "--out", "ref"], env=harness.ENV, capture_output=True, text=True, timeout=600)
        if ref.returncode != 0:
            fail(f"standalone GPU run: {ref.stderr[-2000:]}")
        ours = (tmp / "ckpt" / cid / "step_000000060" / "rank_00000.bin").read_bytes()
        theirs = (tmp / "ref" / "gpu" / "step_000000060" / "rank_00000.bin").read_bytes()
        if ours != theirs:
            fail("belayd's GPU campaign ends in another state than the standalone GPU run")
        print(f"GPU campaign {cid} completed under belayd; final checkpoint byte-identical to a standalone GPU run")

        # --- A non-finite loss on the GPU: rollback, then the GPU resumes from the checkpoint.
        daemon.kill()
        kill_local_jobs(state)
        daemon.start({"BELAY_FAULT_NAN_AT_STEP": "45", "BELAY_FAULT_ATTEMPT": "1"})
        pathlib.Path("nan.toml").write_text(harness.campaign("nan", 60, SPEC))
        cid = belay("submit", "nan.toml").stdout.split()[-1]
        watch(cid)
        st = status(cid)
        attempts = st["attempts"]
        if (len(attempts) != 2 or attempts[0]["end_reason"] != "END_REASON_NAN"
                or int(attempts[1].get("start_checkpoint_step", 0)) != 20):
            fail(f"expected a nan attempt and a resume from step 20: {json.dumps(attempts)[:2000]}")
        if st["campaign"].get("rollbacks_used") != 1 or st["campaign"]["state"] != "CAMPAIGN_STATE_COMPLETED":
            fail(f"after the rollback: {json.dumps(st['campaign'])[:2000]}")
        print("NaN at step 45 on the GPU: rolled back to step 20, resumed on the GPU, completed")
    finally:
        harness.clean_up(daemon, tmp)


if __name__ == "__main__":
    main()
