"""The Open MPI sandbox settings of scripts/mpi-sandbox.conf, for the Python tests and benches.

    sys.path.insert(0, str(REPO / "tests" / "support"))
    import mpi_sandbox
    env.update(mpi_sandbox.environment("one-node"))
"""

import pathlib

CONF = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "mpi-sandbox.conf"


def environment(profile="one-node", conf=CONF):
    """The variables of [common] and then of [profile] ("one-node" or "nodes"), as a dict."""
    sections = {}
    section = None
    for number, raw in enumerate(conf.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = sections.setdefault(line[1:-1], {})
        elif "=" in line and section is not None:
            key, value = line.split("=", 1)
            section[key.strip()] = value.strip()
        else:
            raise ValueError(f"{conf}:{number}: not KEY=VALUE in a [section]: {raw}")
    if profile not in sections or profile == "common":
        raise ValueError(f"{conf}: no profile [{profile}]")
    return {**sections.get("common", {}), **sections[profile]}


if __name__ == "__main__":
    import sys
    for k, v in environment(*sys.argv[1:2]).items():
        print(f"{k}={v}")
