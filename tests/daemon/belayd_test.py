#!/usr/bin/python3
"""System test of belayd + belay + belay-worker on this machine: the local scheduler, the
embedded RocksDB store, CPU ranks under mpirun, the worker link and the coordinator API on a
Unix socket.

Usage: belayd_test.py BIN_DIR

Checked:
  - a 2-rank campaign whose rank 1 is killed with SIGKILL mid-run restarts from the last
    committed checkpoint and completes, and its final checkpoint is byte-identical to an
    uninterrupted `mpirun -np 2 belay-worker train` of the same campaign;
  - a rank stopped with SIGSTOP is detected as a hang (hang_timeout 10 s), killed, and the
    campaign completes;
  - belayd killed with SIGKILL mid-run and started again re-adopts the running attempt (no
    second attempt) and the campaign completes with every checkpoint recorded;
  - the newest checkpoint corrupted (a flipped byte) while an attempt is down: the next
    attempt resumes from the previous one, and the corrupt one is marked so;
  - a non-finite loss (fault injection at step 130) rolls back to the last good checkpoint
    and the campaign completes, counted as a rollback, not a restart;
  - a full disk (a small tmpfs, when run as root) makes a save fail: training goes on, the
    failure is in the event log, and saves succeed again once space returns;
  - another user can neither see nor cancel the campaign (when run as root);
  - a malformed campaign file is refused with file:line: key: message; unknown ids, garbage
    on the socket and malformed RPCs leave belayd running.
"""

import json
import os
import pathlib
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from harness import (Daemon, belay, committed_steps, fail, kill_local_jobs, rank_pid, status,
                     wait_for)
import harness

harness.init(sys.argv[1])
BIN = harness.BIN
RPC_JUNK = pathlib.Path(sys.argv[2]).resolve()
DAEMON = None




SPEC = {
    "train": {"zero_stage": 2},
    "checkpoint": {"dir": "ckpt", "every_steps": 50, "keep_last": 20},
    "resources": {"ranks_per_node": 2},
    "restart": {"backoff": {"initial": "1s", "max": "5s", "jitter": 0.1}, "hang_timeout": "10s"},
}


def spec(name, steps, **changes):
    """SPEC's campaign file named `name`, `steps` long, with `changes` to its sections."""
    return harness.campaign(name, steps, SPEC, **changes)


def main():
    global DAEMON
    theirs_id = None  # the campaign of uid nobody, when run as root
    tmp = pathlib.Path(tempfile.mkdtemp())
    os.chmod(tmp, 0o755)  # another user must reach the socket
    try:
        os.chdir(tmp)
        harness.prepare_data()
        state = tmp / "state"
        DAEMON = Daemon(state)
        DAEMON.start()

        # --- A killed rank: restart from the last commit, bit-identical end state.
        pathlib.Path("kill.toml").write_text(spec("kill", 600, checkpoint={"keep_last": 3}))
        cid = belay("submit", "kill.toml").stdout.split()[-1]
        wait_for("a checkpoint at step 100 or later", lambda: [s for s in committed_steps(cid) if s >= 100])
        pid = wait_for("rank 1's pid", lambda: rank_pid(state, cid, 1, 1))
        os.kill(pid, signal.SIGKILL)
        w = belay("watch", cid, check=False, timeout=300)
        if w.returncode != 0:
            fail(f"watch after a killed rank: exit {w.returncode}\n{w.stdout[-3000:]}")
        st = status(cid)
        attempts = st["attempts"]
        if len(attempts) != 2 or attempts[0]["end_reason"] != "END_REASON_RANK_CRASH":
            fail(f"expected a rank_crash then a completed attempt: {json.dumps(attempts)[:2000]}")
        resumed = int(attempts[1]["start_checkpoint_step"])
        if resumed < 100:
            fail(f"attempt 2 resumed from {resumed}, not from the last commit")
        events = belay("events", cid).stdout
        for needed in ("rank 1 killed by signal 9", f"to resume from step {resumed}", "running -> completed"):
            if needed not in events:
                fail(f"event log lacks '{needed}':\n{events}")
        print(f"killed rank 1 (pid {pid}); attempt 2 resumed from step {resumed}; campaign completed")
        # The same campaign uninterrupted, standalone: the same final state, byte for byte.
        harness.assert_same_as_standalone("kill.toml", "kill", cid, 600, timeout=300)
        # belayd committed it and wrote the manifest: the same shards, sums and shard map as the
        # standalone worker's own manifest.
        ours = json.loads((tmp / "ckpt" / cid / "step_000000600" / "manifest.json").read_text())
        theirs = json.loads((tmp / "ref" / "kill" / "step_000000600" / "manifest.json").read_text())
        for key in ("step", "world_size", "shards", "shard_map"):
            if ours[key] != theirs[key]:
                fail(f"belayd's manifest differs in {key}: {str(ours[key])[:500]} vs {str(theirs[key])[:500]}")
        # Retention by belayd (keep_last 3, plus the newest good checkpoint): what is on disk is
        # exactly what the catalog calls committed.
        on_disk = sorted(int(p.name[5:]) for p in (tmp / "ckpt" / cid).iterdir() if re.fullmatch(r"step_\d{9}", p.name))
        catalog = committed_steps(cid)
        if on_disk != catalog or not 3 <= len(catalog) <= 4 or catalog[-1] != 600:
            fail(f"after retention: on disk {on_disk}, committed {catalog}")
        if "deletes checkpoint step" not in belay("events", cid).stdout:
            fail("no retention event")
        print(f"final checkpoint byte-identical to an uninterrupted run's, manifest written by belayd; kept {catalog}")
        # The goodput ledger counts the time the ranks' saves held training up (each rank
        # reports it with its shard): some, and less than all that was spent.
        ledger = json.loads(belay("goodput", cid, "--json").stdout)["summary"]
        ckpt_h, spent_h = ledger.get("checkpoint_rank_hours", 0), ledger.get("spent_rank_hours", 0)
        if not 0 < ckpt_h < spent_h:
            fail(f"goodput: checkpoint time {ckpt_h} rank-h of {spent_h} spent: {ledger}")
        if "checkpoints " not in belay("goodput", cid).stdout:
            fail("belay goodput does not show the checkpoint time")
        print(f"goodput: saves held the ranks up {ckpt_h * 3600:.2f} rank-s of {spent_h * 3600:.0f}")

        # --- A stopped rank: hang detected, killed, restarted.
        pathlib.Path("hang.toml").write_text(spec("hang", 300))
        cid = belay("submit", "hang.toml").stdout.split()[-1]
        wait_for("a checkpoint", lambda: committed_steps(cid))
        pid = wait_for("rank 0's pid", lambda: rank_pid(state, cid, 1, 0))
        os.kill(pid, signal.SIGSTOP)
        t0 = time.time()
        w = belay("watch", cid, check=False, timeout=300)
        if w.returncode != 0:
            fail(f"watch after a stopped rank: exit {w.returncode}\n{w.stdout[-3000:]}")
        attempts = status(cid)["attempts"]
        if attempts[0]["end_reason"] != "END_REASON_HANG":
            fail(f"attempt 1 ended {attempts[0]['end_reason']}, not hang")
        # The hang report names each rank's last heartbeat: rank 1 waits in a collective for
        # the stopped rank 0.
        if not re.search(r"rank 1: step \d+, collective", attempts[0].get("end_message", "")):
            fail(f"hang report without rank 1's phase: {attempts[0].get('end_message')}")
        print(f"SIGSTOP on rank 0: hang detected and recovered; completed {time.time() - t0:.0f} s later")

        # --- belayd killed mid-run and restarted: the attempt is re-adopted.
        pathlib.Path("readopt.toml").write_text(spec("readopt", 800))
        cid = belay("submit", "readopt.toml").stdout.split()[-1]
        wait_for("a checkpoint", lambda: committed_steps(cid))
        before = committed_steps(cid)
        DAEMON.kill(signal.SIGKILL)
        time.sleep(2)
        DAEMON.start()
        w = belay("watch", cid, check=False, timeout=300)
        if w.returncode != 0:
            fail(f"watch after a belayd restart: exit {w.returncode}\n{w.stdout[-3000:]}")
        st = status(cid)
        if len(st["attempts"]) != 1:
            fail(f"a restarted belayd started {len(st['attempts'])} attempts: {json.dumps(st['attempts'])[:2000]}")
        after = committed_steps(cid)
        if not set(before) <= set(after) or after[-1] != 800:
            fail(f"checkpoints before the restart {before}, after {after}")
        print(f"belayd killed and restarted: the attempt was re-adopted; checkpoints {after}")

        # --- A corrupt checkpoint: the attempt after it falls back to the previous one.
        pathlib.Path("corrupt.toml").write_text(
            spec("corrupt", 600, restart={"backoff": {"initial": "6s", "max": "10s"}}))
        cid = belay("submit", "corrupt.toml").stdout.split()[-1]
        wait_for("a checkpoint at step 150 or later", lambda: [s for s in committed_steps(cid) if s >= 150])
        pid = wait_for("rank 1's pid", lambda: rank_pid(state, cid, 1, 1))
        os.kill(pid, signal.SIGKILL)
        wait_for("attempt 1 to end", lambda: status(cid)["attempts"][0]["state"] == "ATTEMPT_STATE_ENDED")
        newest = committed_steps(cid)[-1]
        shard = tmp / "ckpt" / cid / f"step_{newest:09d}" / "rank_00000.bin"
        with open(shard, "r+b") as f:
            f.seek(5000)
            b = f.read(1)
            f.seek(5000)
            f.write(bytes([b[0] ^ 0x55]))
        w = belay("watch", cid, check=False, timeout=300)
        if w.returncode != 0:
            fail(f"watch after a corrupt checkpoint: exit {w.returncode}\n{w.stdout[-3000:]}")
        attempts = status(cid)["attempts"]
        resumed = int(attempts[1].get("start_checkpoint_step", 0))
        if not 0 < resumed < newest:
            fail(f"attempt 2 resumed from {resumed}; step {newest} was corrupt")
        events = belay("events", cid).stdout
        if f"checkpoint step {newest} is corrupt" not in events or "checksum mismatch" not in events:
            fail(f"no corrupt-checkpoint event:\n{events}")
        print(f"step {newest} corrupted: attempt 2 resumed from step {resumed}; campaign completed")

        # --- A non-finite loss: rollback to the last good checkpoint.
        DAEMON.kill(signal.SIGTERM)
        DAEMON.start({"BELAY_FAULT_NAN_AT_STEP": "130", "BELAY_FAULT_ATTEMPT": "1"})
        pathlib.Path("nan.toml").write_text(spec("nan", 300))
        cid = belay("submit", "nan.toml").stdout.split()[-1]
        w = belay("watch", cid, check=False, timeout=300)
        if w.returncode != 0:
            fail(f"watch after a NaN: exit {w.returncode}\n{w.stdout[-3000:]}")
        st = status(cid)
        attempts = st["attempts"]
        if attempts[0]["end_reason"] != "END_REASON_NAN" or int(attempts[1].get("start_checkpoint_step", 0)) != 100:
            fail(f"expected a nan attempt and a resume from the good step 100: {json.dumps(attempts)[:2000]}")
        if st["campaign"].get("rollbacks_used") != 1 or st["campaign"].get("restarts_used", 0) != 0:
            fail(f"rollbacks/restarts: {st['campaign'].get('rollbacks_used')}/{st['campaign'].get('restarts_used')}")
        if "non-finite loss at step 130" not in belay("events", cid).stdout:
            fail("no NaN event")
        print("NaN at step 130: rolled back to the good checkpoint at step 100; campaign completed")
        DAEMON.kill(signal.SIGTERM)
        DAEMON.start()

        # --- A full disk during a save.
        full = tmp / "full"
        full.mkdir()
        mounted = os.geteuid() == 0 and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(full)], capture_output=True).returncode == 0
        if mounted:
            try:
                filler = full / "filler"
                with open(filler, "wb") as f:  # leave about 1 MB: less than one checkpoint
                    f.write(b"\0" * (11 * 1024 * 1024))
                pathlib.Path("full.toml").write_text(
                    spec("full", 400, checkpoint={"dir": "full/ckpt", "keep_last": 2}))
                cid = belay("submit", "full.toml").stdout.split()[-1]
                wait_for("a failed save", lambda: "failed" in belay("events", cid).stdout and "checkpoint at step" in belay("events", cid).stdout)
                failed_at = int(re.search(r"checkpoint at step (\d+) failed", belay("events", cid).stdout).group(1))
                filler.unlink()
                w = belay("watch", cid, check=False, timeout=300)
                if w.returncode != 0:
                    fail(f"watch with a full disk: exit {w.returncode}\n{w.stdout[-3000:]}")
                later = [s for s in committed_steps(cid) if s > failed_at]
                st = status(cid)
                if not later or len(st["attempts"]) != 1:
                    fail(f"after the failed save at {failed_at}: committed {committed_steps(cid)}, "
                         f"{len(st['attempts'])} attempts")
                print(f"disk full: the save at step {failed_at} failed, training went on in the same attempt, "
                      f"saves at {later} succeeded once space returned")
            finally:
                subprocess.run(["umount", str(full)])
        else:
            print("cannot mount a tmpfs (not root?): the full-disk check is skipped")

        # --- Access: another user sees nothing of root's campaigns and cannot cancel them.
        if os.geteuid() == 0 and shutil.which("setpriv"):
            nobody = pwd.getpwnam("nobody").pw_uid
            ls = belay("ls", "--json", user=nobody)
            if json.loads(ls.stdout).get("campaigns"):
                fail(f"another user lists root's campaigns: {ls.stdout[:500]}")
            for args in (("status", cid), ("cancel", cid), ("events", cid), ("logs", cid)):
                p = belay(*args, user=nobody, check=False)
                if p.returncode != 3 or "no campaign" not in p.stderr:
                    fail(f"uid {nobody}: belay {' '.join(args)}: exit {p.returncode} {p.stderr}")
            print(f"uid {nobody} can neither list, read nor cancel root's campaigns")

            # Its own campaign runs as that user (belayd is root): its checkpoint shards and
            # rank logs are that user's files.
            nobody_gid = pwd.getpwnam("nobody").pw_gid
            theirs = tmp / "theirs"
            theirs.mkdir()
            os.chown(theirs, nobody, nobody_gid)
            pathlib.Path("theirs.toml").write_text(
                spec("theirs", 50, checkpoint={"dir": f"{theirs}/ckpt"}))
            tid = belay("submit", "theirs.toml", user=nobody).stdout.split()[-1]
            theirs_id = tid
            w = belay("watch", tid, user=nobody, check=False, timeout=300)
            if w.returncode != 0:
                fail(f"uid {nobody}'s campaign: watch exit {w.returncode}\n{w.stdout[-3000:]}")
            owned = {p: p.stat().st_uid for p in
                     (theirs / "ckpt" / tid / "step_000000050" / "rank_00001.bin",
                      state / "campaigns" / tid / "attempt_1" / "rank_00000.log")}
            if set(owned.values()) != {nobody}:
                fail(f"uid {nobody}'s campaign wrote files as {owned}")
            print(f"uid {nobody}'s own campaign ran as uid {nobody} (its shards and rank logs are its files)")
            # The paths of a campaign file are checked with its submitter's rights: data only
            # root may read matches nothing for uid nobody (root's belayd would see it).
            hidden = tmp / "root_only"
            hidden.mkdir(mode=0o700)
            shutil.copytree("data", hidden / "data")
            pathlib.Path("hidden.toml").write_text(
                spec("hidden", 10, checkpoint={"dir": f"{theirs}/ckpt"},
                     data={"train": f"{hidden}/data/train_*.bin", "val": f"{hidden}/data/val_*.bin"}))
            p = belay("submit", "hidden.toml", user=nobody, check=False)
            if p.returncode != 2 or not re.search(r"hidden\.toml:\d+:\d+: data\.train: .* matches no file", p.stderr):
                fail(f"uid {nobody} submitting data only root may read: exit {p.returncode}: {p.stderr}")
            if belay("submit", "--validate-only", "hidden.toml", check=False).returncode != 0:
                fail("root's submission of the same file is refused")
            print(f"uid {nobody}'s campaign over data only root may read is refused at submission")
            # Its attempt directory is its own: a rank log swapped for a symlink to a file only
            # root may read is not read for it.
            log = state / "campaigns" / tid / "attempt_1" / "rank_00001.log"
            log.unlink()
            log.symlink_to("/etc/shadow")
            p = belay("logs", tid, "--rank", "1", user=nobody, check=False)
            if p.returncode == 0 or "root:" in p.stdout or "not a regular file" not in p.stderr:
                fail(f"a rank log symlinked to /etc/shadow: exit {p.returncode} {p.stdout[:200]} {p.stderr}")

            # A belayd that is not root takes no campaign from a third user (it could only run
            # it as itself).
            if "daemon" in [p.pw_name for p in pwd.getpwall()]:
                third = pwd.getpwnam("daemon")
                own = tmp / "nobodys-belayd"
                own.mkdir()
                os.chown(own, nobody, nobody_gid)
                as_nobody = ["setpriv", f"--reuid={nobody}", f"--regid={nobody_gid}", "--clear-groups"]
                with open(own / "belayd.log", "w") as log:
                    other = subprocess.Popen([*as_nobody, str(BIN / "belayd"), "--state-dir", str(own / "state")],
                                             env=harness.ENV, stdout=log, stderr=log)
                try:
                    sock = own / "state" / "belayd.sock"
                    as_third = ["setpriv", f"--reuid={third.pw_uid}", f"--regid={third.pw_gid}", "--clear-groups"]
                    cmd = [*as_third, str(BIN / "belay"), "--socket", str(sock), "submit", "theirs.toml"]
                    wait_for("nobody's belayd", lambda: sock.exists() and other.poll() is None, timeout=30)
                    p = subprocess.run(cmd, env=harness.ENV, capture_output=True, text=True, timeout=60)
                    if p.returncode == 0 or "not as root" not in p.stderr:
                        fail(f"a belayd running as uid {nobody} took uid {third.pw_uid}'s campaign: "
                             f"exit {p.returncode} {p.stdout} {p.stderr}")
                    print(f"a belayd running as uid {nobody} refuses uid {third.pw_uid}'s campaign: "
                          f"{p.stderr.strip()[:120]}")
                finally:
                    other.terminate()
                    other.wait(timeout=30)
        else:
            print("not root: the second-user check is skipped")

        # --- Bad input: refused clearly, and belayd stays up.
        pathlib.Path("bad.toml").write_text(spec("bad", 10, train={"lr": "fast"}))
        p = belay("submit", "bad.toml", check=False)
        if p.returncode != 2 or not re.search(r"bad\.toml:\d+:\d+: train\.lr: ", p.stderr):
            fail(f"malformed campaign: exit {p.returncode}: {p.stderr}")
        # 50 mangled campaign files, checked by belayd (--validate-only stores nothing): each is
        # either refused with file:line:col or (when the change left it valid) accepted.
        rng = random.Random(1234)
        good = spec("mangled", 10)
        refused = 0
        for i in range(50):
            text = good
            kind = i % 5
            path = pathlib.Path(f"m{i}.toml")
            if kind == 0:
                lines = text.splitlines()
                lines.insert(rng.randrange(len(lines)), rng.choice(["x = 1", "[", "lr = ", "= 3", "[[train]]", "\x00"]))
                path.write_text("\n".join(lines))
            elif kind == 1:
                path.write_text(text[:rng.randrange(len(text))])
            elif kind == 2:
                pos = rng.randrange(len(text))
                path.write_text(text[:pos] + rng.choice(['"', "{", "}", "\\", "'''", "\u00ff", "9" * 40]) + text[pos:])
            elif kind == 3:
                path.write_text(re.sub(r"= \d+", lambda m: "= " + rng.choice(["-1", "0", "1e400", '"7"', "true", "[]"]),
                                       text, count=rng.randrange(1, 6)))
            else:
                raw = bytearray(text.encode())
                for _ in range(rng.randrange(1, 20)):
                    raw[rng.randrange(len(raw))] = rng.randrange(256)
                path.write_bytes(bytes(raw))
            p = belay("submit", "--validate-only", str(path), check=False)
            if p.returncode == 2:
                if not re.search(rf"m{i}\.toml:\d+:\d+: ", p.stderr):
                    fail(f"mangled file {i} refused without a location: {p.stderr[:500]}")
                refused += 1
            elif p.returncode != 0:
                fail(f"mangled file {i}: exit {p.returncode}: {p.stderr[:500]}")
            if not DAEMON.alive():
                fail(f"belayd died on mangled file {i}")
        print(f"50 mangled campaign files: {refused} refused with file:line:col, {50 - refused} still valid; belayd up")
        # Files nested far deeper than any campaign (a dotted key of 300,000 parts overflowed
        # the parser's stack and killed belayd): refused with the bound crossed, belayd up.
        deep = {"deep_key.toml": good + "a" + ".a" * 300000 + " = 1\n",
                "deep_header.toml": "[" + "a." * 300000 + "a]\n" + good,
                "deep_arrays.toml": good.replace("[train]", "[train]\nx = " + "[" * 200000 + "]" * 200000, 1),
                "deep_tables.toml": "t = " + "{ a = " * 100000 + "1" + " }" * 100000 + "\n" + good}
        for name, text in deep.items():
            pathlib.Path(name).write_text(text)
            for args in (("submit", "--validate-only", name), ("submit", name)):
                p = belay(*args, check=False)
                if p.returncode != 2 or not re.search(rf"{name}:\d+:\d+: (nested 17 levels deep|(table header|key) of "
                                                      r"\d+ dotted parts)", p.stderr):
                    fail(f"belay {' '.join(args)}: exit {p.returncode}: {p.stderr[:300]}")
                if not DAEMON.alive():
                    fail(f"belayd died on {name}")
        print(f"{len(deep)} campaign files nested past the bounds refused with file:line:col; belayd up")
        for args in (("status", "no-such-1"), ("cancel", "x" * 300), ("logs", "a\x01b"), ("events", "")):
            p = belay(*args, check=False)
            if p.returncode not in (2, 3):
                fail(f"belay {args[0]} {args[1][:20]!r}: exit {p.returncode}: {p.stderr}")
        for junk in (b"\x00" * 64, b"GET / HTTP/1.1\r\n\r\n", os.urandom(4096),
                     b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(2000)):
            s = socket.socket(socket.AF_UNIX)
            s.connect(DAEMON.socket)
            s.sendall(junk)
            s.close()
        if not DAEMON.alive() or belay("daemon", check=False).returncode != 0:
            fail("belayd did not survive malformed input")
        print("malformed campaign refused with file:line; unknown ids and socket garbage leave belayd running")

        # --- Malformed and hostile RPCs on both services, half of them carrying the token of a
        # running attempt (so they reach the handlers behind the token check).
        pathlib.Path("junk.toml").write_text(spec("junk", 100000))
        cid = belay("submit", "junk.toml").stdout.split()[-1]
        pid = wait_for("rank 0's pid", lambda: rank_pid(state, cid, 1, 0))
        environ = pathlib.Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        token = next(e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"BELAY_TOKEN="))
        worker = (state / "worker_address").read_text().strip()
        for seed, tok in ((1, token), (2, ""), (3, token), (4, "")):
            j = subprocess.run([str(RPC_JUNK), "--worker", worker, "--socket", str(DAEMON.socket), "--token", tok,
                                "--ca", str(state / "tls" / "ca.pem"),
                                "--count", "40", "--seed", str(seed)], capture_output=True, text=True, timeout=300)
            if j.returncode != 0:
                fail(f"rpc_junk: exit {j.returncode}: {j.stderr[-2000:]}")
            if not DAEMON.alive():
                fail(f"belayd died on malformed RPCs (seed {seed}):\n{j.stdout}")
        codes = j.stdout.replace("\n", "; ")
        for args in (("daemon",), ("ls",), ("status", cid), ("events", cid), ("ckpt", "ls", cid), ("loss", cid, "--json")):
            p = belay(*args, check=False)
            if p.returncode not in (0, 5):
                fail(f"after malformed RPCs, belay {' '.join(args)}: exit {p.returncode}: {p.stderr[-1000:]}")
        t0 = time.time()
        belay("cancel", cid, check=False)
        wait_for("the junk campaign to end", lambda: status(cid)["campaign"]["state"] in
                 ("CAMPAIGN_STATE_CANCELLED", "CAMPAIGN_STATE_FAILED", "CAMPAIGN_STATE_COMPLETED"), timeout=180)
        print(f"160 malformed RPCs (80 with a live attempt's token) on both services: belayd up and answering "
              f"(last batch: {codes}); the campaign then ended {status(cid)['campaign']['state']} "
              f"{time.time() - t0:.0f} s after its cancel")
        # --- Secrets: a running attempt's token is in no file of belayd's, and nothing belayd
        # wrote is readable by another user (but for that user's own campaign).
        stored = [p for p in state.rglob("*") if p.is_file() and not p.is_symlink()]
        holders = [str(p) for p in stored if token.encode() in p.read_bytes()]
        if holders or len(stored) < 10:
            fail(f"the worker token of a running attempt is in {holders} ({len(stored)} files searched)")
        print(f"a running attempt's worker token occurs in none of the {len(stored)} files under the state directory")
        if os.geteuid() == 0 and shutil.which("setpriv"):
            mine = state / "campaigns" / theirs_id if theirs_id else None
            paths = [str(p) for p in state.rglob("*") if not p.is_symlink() and p.name != "belayd.sock"
                     and not (mine and (p == mine or mine in p.parents))] + [str(state)]
            probe = ("import os, sys\n"
                     "for p in sys.stdin.read().split('\\0'):\n"
                     "    try:\n"
                     "        os.listdir(p) if os.path.isdir(p) else open(p, 'rb').read(1)\n"
                     "        print(p)\n"
                     "    except OSError:\n"
                     "        pass\n")
            nobody = pwd.getpwnam("nobody")
            p = subprocess.run(["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
                                "/usr/bin/python3", "-c", probe], input="\0".join(paths), capture_output=True,
                               text=True, timeout=120)
            if p.returncode != 0 or p.stdout.strip():
                fail(f"uid nobody can read what belayd wrote: exit {p.returncode} {p.stdout[:2000]} {p.stderr[-500:]}")
            print(f"uid {nobody.pw_uid} can read none of the {len(paths)} files and directories under the state "
                  f"directory (its own campaign's aside); the socket stays open to it")
        DAEMON.kill(signal.SIGTERM)
        print("belayd_test: all checks passed")
    finally:
        harness.clean_up(DAEMON, tmp)


main()
