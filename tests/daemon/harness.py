"""What the belayd system tests share: a clean environment, a belayd process, the belay CLI
against it, waiting, and cleaning up what the local scheduler started.

Call init(bin_dir) first. belay() talks to the belayd started last.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "support"))
import mpi_sandbox  # noqa: E402
import tiny_campaign  # noqa: E402

BIN = None
ENV = dict(os.environ)
# One thread per rank (2 ranks on this machine's cores); reference runs use the same.
ENV.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
for _k in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_ID", "BELAY_RANK", "BELAY_WORLD_SIZE",
           "BELAY_LOCAL_RANK", "BELAY_COORDINATOR", "BELAY_TOKEN", "BELAY_SOCKET"):
    ENV.pop(_k, None)
_current = None


def init(bin_dir):
    global BIN
    BIN = pathlib.Path(bin_dir).resolve()


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


class Daemon:
    """belayd with its state in `state`, its log in state/../belayd.log."""

    def __init__(self, state, args=()):
        self.state = state
        self.socket = str(state / "belayd.sock")
        self.args = list(args)
        self.proc = None

    def start(self, extra_env=None):
        global _current
        _current = self
        log = open(self.state.parent / "belayd.log", "a")
        self.proc = subprocess.Popen([str(BIN / "belayd"), "--state-dir", str(self.state), "--tick", "0.5", *self.args],
                                     env={**ENV, **(extra_env or {})}, stdout=log, stderr=log)
        deadline = time.time() + 20
        while time.time() < deadline:
            if belay("daemon", check=False).returncode == 0:
                return
            if self.proc.poll() is not None:
                fail(f"belayd exited with {self.proc.returncode}:\n" + (self.state.parent / "belayd.log").read_text()[-3000:])
            time.sleep(0.2)
        fail("belayd did not come up")

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


def belay(*args, check=True, user=None, timeout=60):
    cmd = [str(BIN / "belay"), "--socket", _current.socket, *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        fail(f"belay {' '.join(args)} exited {p.returncode}: {p.stderr}")
    return p


def status(cid):
    return json.loads(belay("status", cid, "--json").stdout)


def committed_steps(cid):
    """The steps of campaign `cid`'s committed checkpoints, as `belay ckpt ls` lists them."""
    out = json.loads(belay("ckpt", "ls", cid, "--json").stdout)
    return sorted(int(c["step"]) for c in out.get("checkpoints", []) if c.get("state") == "CHECKPOINT_STATE_COMMITTED")


def wait_for(what, pred, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    fail(f"timed out waiting for {what}")


def kill_local_jobs(state):
    """Ends what the local scheduler started and a failed check left running: every process of
    each job's session (the session leader's pid starts the job id)."""
    sessions = set()
    for record in (state / "jobs").glob("*.json"):
        m = re.match(r"(\d+)-", record.name)
        if m:
            sessions.add(int(m.group(1)))
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            sid = int(stat[stat.rindex(")") + 2:].split()[3])
            if sid in sessions:
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass


def rank_pid(state, cid, attempt, rank):
    """The pid of a rank of attempt `attempt` of campaign `cid`, from its log's first line, or
    None while the log does not name it yet."""
    log = state / "campaigns" / cid / f"attempt_{attempt}" / f"rank_{rank:05d}.log"
    if not log.exists():
        return None
    m = re.search(r"belay-worker\[(\d+)\]", log.read_text(errors="replace"))
    return int(m.group(1)) if m else None


def clean_up(daemon, tmp):
    """The end of a test that ran in `tmp` with its belayd's state in tmp/state: belayd killed
    if it runs, what its local scheduler started killed, `tmp` removed."""
    if daemon is not None and daemon.alive():
        daemon.kill()
    kill_local_jobs(tmp / "state")
    os.chdir("/")
    shutil.rmtree(tmp, ignore_errors=True)


def mpi_env(profile="one-node"):
    """Open MPI on loopback, as root, oversubscribed: a profile of scripts/mpi-sandbox.conf
    ("one-node": shared memory; "nodes": TCP, for ranks on several virtual nodes)."""
    return mpi_sandbox.environment(profile)


def campaign(name, steps, base, **changes):
    """The text of a campaign file: the tiny campaign (tests/support/tiny_campaign.py: 2 layers,
    d_model 64, over data prepared with `belay data prepare --out data`) with the test's
    sections `base` and then `changes` merged in, named `name`, `steps` steps long."""
    spec = tiny_campaign.merged(tiny_campaign.merged(tiny_campaign.TINY, base), changes)
    return tiny_campaign.toml(tiny_campaign.spec(spec, campaign={"name": name}, train={"total_steps": steps}))


def prepare_data():
    """Token shards under ./data from two licence texts (train and val)."""
    subprocess.run([str(BIN / "belay"), "data", "prepare", "--out", "data", "--val-fraction", "0.1",
                    "/usr/share/common-licenses/GPL-3", "/usr/share/common-licenses/Apache-2.0"],
                   check=True, capture_output=True)


def assert_same_as_standalone(spec_file, name, cid, step, timeout=600):
    """Runs the campaign file standalone under mpirun (2 ranks, into ./ref) and fails unless
    belayd's checkpoint `step` of campaign `cid` (under ./ckpt) has the same shards, byte for
    byte. Returns the two step directories (belayd's, standalone)."""
    ref = subprocess.run(["mpirun", "-np", "2", str(BIN / "belay-worker"), "--log-level", "warn", "train",
                          "--spec", spec_file, "--out", "ref"],
                         env={**ENV, **mpi_env()}, capture_output=True, text=True, timeout=timeout)
    if ref.returncode != 0:
        fail(f"reference run: {ref.stderr[-2000:]}")
    ours = pathlib.Path("ckpt") / cid / f"step_{step:09d}"
    theirs = pathlib.Path("ref") / name / f"step_{step:09d}"
    for r in range(2):
        if (ours / f"rank_{r:05d}.bin").read_bytes() != (theirs / f"rank_{r:05d}.bin").read_bytes():
            fail(f"final shard of rank {r} differs from the standalone run's")
    return ours, theirs


# The sections of a `nodes`-node campaign (2 by default) on the local Slurm cluster's partition
# "debug", one rank per node, a checkpoint every `every` steps, for campaign(); `resources`
# adds to its [resources].
def slurm_campaign(every, time_limit="30m", nodes=2, **resources):
    return {
        "train": {"zero_stage": 1},
        "checkpoint": {"dir": "ckpt", "every_steps": every},
        "resources": {"scheduler": "slurm", "nodes": nodes, "ranks_per_node": 1, "partition": "debug",
                      "time_limit": time_limit, **resources},
        "restart": {"backoff": {"initial": "1s", "max": "5s", "jitter": 0.1}},
    }


def slurm_cluster():
    """The local cluster's directory, from SLURM_CONF (the ctest fixture slurm.cluster sets it)."""
    conf = pathlib.Path(os.environ.get("SLURM_CONF", ""))
    if not conf.is_file():
        fail("SLURM_CONF names no cluster (ctest starts one with deploy/local-cluster/start.sh)")
    return conf.parent


def start_slurm_daemon(state, args=()):
    """belayd with what Open MPI needs inside Slurm jobs to reach ranks on other (virtual)
    nodes over loopback, and `args`."""
    env = mpi_env("nodes")
    daemon = Daemon(state, [a for k, v in env.items() for a in ("--slurm-job-env", f"{k}={v}")] + list(args))
    daemon.start()
    return daemon
