"""Writes a token shard the way llm.c's dev/data/data_common.py write_datafile does, for
shard_test: a numpy header of 256 int32 (magic, version, token count, zeros), then the tokens as
numpy uint16 ("gpt-2": magic 20240520, version 1) or uint32 ("llama-3": magic 20240801,
version 7).

usage: llmc_shard.py OUT.bin gpt-2|llama-3 TOKEN...
"""
import sys

import numpy as np

FORMATS = {"gpt-2": (20240520, 1, np.uint16), "llama-3": (20240801, 7, np.uint32)}


def main():
    path, kind, tokens = sys.argv[1], sys.argv[2], [int(t) for t in sys.argv[3:]]
    magic, version, dtype = FORMATS[kind]
    header = np.zeros(256, dtype=np.int32)
    header[0], header[1], header[2] = magic, version, len(tokens)
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.array(tokens, dtype=dtype).tobytes())


if __name__ == "__main__":
    main()
