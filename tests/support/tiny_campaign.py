"""The tiny campaign of the Python tests and benchmarks, as nested dicts written as TOML.

A campaign is a dict of sections (campaign, model, data, train, checkpoint, resources, restart),
each a dict of keys; an inline table (train.goldfish, restart.backoff) is a dict too.

    sys.path.insert(0, str(REPO / "tests" / "support"))
    import tiny_campaign
    tiny_campaign.write("c.toml", campaign={"name": "c"}, train={"zero_stage": 2})

Tests about the campaign file's text itself (parser errors and their positions) write TOML by
hand instead.
"""

import copy
import json
import pathlib
import sys

# GPT-2 with 2 layers, 2 heads, d_model 64, seq_len 32 and the byte vocabulary, over data that
# `belay data prepare --out data --val-fraction 0.1` wrote under ./data; 10 steps of global
# batch 8 in micro-batches of 2; checkpoints under ./ckpt.
TINY = {
    "campaign": {"name": "tiny"},
    "model": {"n_layer": 2, "n_head": 2, "d_model": 64, "seq_len": 32, "vocab_size": 257},
    "data": {"train": "data/train_*.bin", "val": "data/val_*.bin"},
    "train": {"total_steps": 10, "micro_batch": 2, "global_batch": 8, "lr": 3e-3,
              "warmup_steps": 2, "eval_every": 100, "eval_batches": 2},
    "checkpoint": {"dir": "ckpt"},
}

ORDER = ("campaign", "model", "data", "train", "checkpoint", "resources", "restart")


def merged(base, changes):
    """`base` with `changes` merged in, dict into dict; a value of None removes the key."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def spec(base=None, **sections):
    """TINY (or `base`) with each named section's keys changed as given."""
    return merged(TINY if base is None else base, sections)


def value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string for the text tests write
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML for {v!r}")


def toml(campaign):
    """The campaign file: its sections in the documented order, then any others."""
    names = [s for s in ORDER if s in campaign] + [s for s in campaign if s not in ORDER]
    out = []
    for name in names:
        out.append(f"[{name}]")
        out += [f"{k} = {value(v)}" for k, v in campaign[name].items()]
    return "\n".join(out) + "\n"


def write(path, base=None, **sections):
    """Writes spec(base, **sections) as a campaign file at `path`; returns the path."""
    path = pathlib.Path(path)
    path.write_text(toml(spec(base, **sections)))
    return path


def _parse_setting(setting):
    key, _, text = setting.partition("=")
    for parse in (int, float):
        try:
            return key, parse(text)
        except ValueError:
            pass
    return key, {"true": True, "false": False}.get(text, text)


if __name__ == "__main__":
    # tiny_campaign.py FILE [SECTION.KEY[.KEY]=VALUE ...]: for shell tests. Values that read
    # as numbers or true/false are those; anything else is a string.
    if len(sys.argv) < 2:
        sys.exit("usage: tiny_campaign.py FILE [section.key=value ...]")
    changes = {}
    for setting in sys.argv[2:]:
        dotted, v = _parse_setting(setting)
        *path, last = dotted.split(".")
        if not path:
            sys.exit(f"tiny_campaign.py: {setting}: not section.key=value")
        node = changes
        for part in path:
            node = node.setdefault(part, {})
        node[last] = v
    write(sys.argv[1], **changes)
