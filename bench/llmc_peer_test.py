"""Unit test of bench/llmc_peer.py: the shard it writes, and its reading of train_gpt2cu's output.

The sample log is written with the printf formats of llm.c's train_gpt2.cu (the parameter table,
the allocation lines, "val loss", the per-step line, the closing average), so a change of that
format in a newer llm.c shows up here rather than as a missing row on a GPU machine.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llmc_peer  # noqa: E402

STEP_FMT = ("step %4d/%d | loss %7.6f (%+.2fz)| norm %6.4f (%+.2fz)| lr %.2e | %.2f ms | "
            "%.1f%% bf16 MFU | %.0f tok/s\n")


def sample_log(times, losses=None, params=True):
    n = len(times)
    losses = losses or [11.0 - 0.05 * i for i in range(n)]
    out = ["+-----------------------+----------------------------------------------------+\n",
           "| %-21s | %-50d |\n" % ("micro batch size B", 64),
           "| %-21s | %-50s |\n" % ("weight init method", "d12"),
           "| %-21s | %-50d |\n" % ("num_layers L", 12),
           "| %-21s | %-50d |\n" % ("num_heads NH", 12),
           "| %-21s | %-50d |\n" % ("channels C", 768),
           "| %-21s | %-50d |\n" % ("num_parameters", 124475904),
           "HellaSwag eval not found at %s, skipping its evaluation\n" % "dev/data/hellaswag/x.bin"]
    if params:
        out.append("num_parameters: %d => bytes: %d\n" % (124475904, 248951808))
    out += ["allocated %d MiB for model parameters\n" % 237,
            "batch_size B=%d * seq_len T=%d * num_processes=%d and total_batch_size=%d\n"
            % (64, 1024, 1, 65536),
            "=> setting grad_accum_steps=%d\n" % 1,
            "val loss %f\n" % 11.01]
    for i, (ms, loss) in enumerate(zip(times, losses)):
        out.append(STEP_FMT % (i + 1, n, loss, 0.0, 3.1234, 0.0, 3e-4, ms, 40.0,
                               64 * 1024 / ms * 1e3))
    out += ["val loss %f\n" % 10.2,
            "total average iteration time: %f ms\n" % (sum(times[1:]) / (n - 1))]
    return "".join(out)


class ParseTest(unittest.TestCase):
    def test_mean_of_the_steady_steps(self):
        times = [900.0, 200.0, 150.0] + [130.0 + i for i in range(10)]
        row = llmc_peer.parse_log(sample_log(times), 64, 1024, 3, 10)
        self.assertEqual(row["impl"], "llm.c")
        self.assertEqual((row["B"], row["T"], row["layers"]), (64, 1024, 12))
        self.assertAlmostEqual(row["step_ms"], 134.5)
        self.assertAlmostEqual(row["tokens_per_s"], 64 * 1024 / 0.1345, places=0)
        flops = 6.0 * 124475904 + 6.0 * 12 * 768 * 1024
        self.assertAlmostEqual(row["mfu"], row["tokens_per_s"] * flops / 989e12, places=3)
        self.assertAlmostEqual(row["first_loss"], 11.0)
        self.assertAlmostEqual(row["last_loss"], 11.0 - 0.05 * 12)

    def test_steps_after_the_window_are_ignored(self):
        times = [900.0, 100.0, 100.0, 100.0, 500.0]
        row = llmc_peer.parse_log(sample_log(times), 8, 1024, 1, 3)
        self.assertAlmostEqual(row["step_ms"], 100.0)

    def test_managed_memory_is_noted(self):
        text = sample_log([100.0] * 4).replace(
            "val loss", "WARNING: Fell back to cudaMallocManaged when initializing m,v,master_weights "
            "on 1 GPUs\nval loss", 1)
        self.assertIn("managed", llmc_peer.parse_log(text, 4, 64, 1, 3)["note"])
        self.assertNotIn("note", llmc_peer.parse_log(sample_log([100.0] * 4), 4, 64, 1, 3))

    def test_too_few_steps(self):
        with self.assertRaisesRegex(ValueError, "12 step lines, step 13 missing"):
            llmc_peer.parse_log(sample_log([100.0] * 12), 64, 1024, 3, 10)

    def test_no_parameter_count(self):
        with self.assertRaisesRegex(ValueError, "no num_parameters"):
            llmc_peer.parse_log(sample_log([100.0] * 13, params=False), 64, 1024, 3, 10)

    def test_nan_loss_still_times(self):
        row = llmc_peer.parse_log(sample_log([100.0] * 4, losses=[float("nan")] * 4), 4, 64, 1, 3)
        self.assertAlmostEqual(row["step_ms"], 100.0)
        self.assertNotEqual(row["last_loss"], row["last_loss"])

    def test_command_line(self):
        with tempfile.TemporaryDirectory() as d:
            log = os.path.join(d, "llmc.log")
            with open(log, "w") as f:
                f.write(sample_log([120.0] * 13))
            script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llmc_peer.py")
            ok = subprocess.run([sys.executable, script, "parse", log, "--batch", "64", "--seq",
                                 "1024", "--warmup", "3", "--steps", "10"],
                                capture_output=True, text=True)
            self.assertEqual(ok.returncode, 0, ok.stderr)
            self.assertAlmostEqual(json.loads(ok.stdout)["step_ms"], 120.0)
            short = subprocess.run([sys.executable, script, "parse", log, "--batch", "64",
                                    "--seq", "1024", "--warmup", "3", "--steps", "20"],
                                   capture_output=True, text=True)
            self.assertEqual(short.returncode, 1)
            self.assertIn("step 14 missing", short.stdout)


class ShardTest(unittest.TestCase):
    def test_llmc_gpt2_format(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "tokens.bin")
            llmc_peer.write_shard(path, 1000, 1)
            data = open(path, "rb").read()
            header = struct.unpack("<256i", data[:1024])
            self.assertEqual(header[:3], (20240520, 1, 1000))
            self.assertEqual(set(header[3:]), {0})
            self.assertEqual(len(data), 1024 + 2 * 1000)
            tokens = struct.unpack("<1000H", data[1024:])
            self.assertTrue(all(t < 50257 for t in tokens))
            self.assertGreater(len(set(tokens)), 900)
            again = os.path.join(d, "again.bin")
            llmc_peer.write_shard(again, 1000, 1)
            self.assertEqual(open(again, "rb").read(), data)


if __name__ == "__main__":
    unittest.main()
