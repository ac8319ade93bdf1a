"""Validate the dev request sets against the dev plugins:
.venv/bin/python tests/data/dev/check_cases.py  (from the repo root)."""

import collections
import json
import re
import sys
from pathlib import Path

import msgspec

from edged.tools import registry

HERE = Path(__file__).parent
KEYS = {"text", "device", "tool", "arguments", "agent"}


def main() -> int:
    reg = registry.load([str(HERE / "plugins")], builtin=False, entry_points=False)
    if reg.errors:
        print("plugin errors:", reg.errors)
        return 1
    bad = 0
    for path in sorted(HERE.glob("*.jsonl")):
        plugin = path.stem
        counts: collections.Counter[str] = collections.Counter()
        stt = 0
        for n, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.name}:{n}"
            try:
                case = json.loads(line)
                missing = KEYS - case.keys()
                extra = case.keys() - KEYS - {"alternatives"}
                assert not missing and not extra, f"keys: missing {missing} extra {extra}"
                assert isinstance(case["text"], str) and case["text"].strip(), "empty text"
                assert re.fullmatch(r"[A-Za-z0-9_-]+", case["device"]), "device not one level"
                assert case["agent"] == plugin, "agent differs from the file's plugin"
                name = case["tool"]
                sets = [case["arguments"], *case.get("alternatives", [])]
                if name is None:
                    assert case["arguments"] == {} and "alternatives" not in case
                else:
                    assert name.split(".")[0] == plugin, "tool of another plugin"
                    tool = reg.tools.get(name)
                    assert tool is not None, f"no tool {name}"
                    props = tool.parameters.get("properties", {})
                    required = set(tool.parameters.get("required", []))
                    for args in sets:
                        assert isinstance(args, dict)
                        unknown = set(args) - set(props)
                        assert not unknown, f"unknown arguments {unknown}"
                        assert required <= set(args), f"missing {required - set(args)}"
                        msgspec.convert(args, tool.args_type, strict=True)
                    assert len({json.dumps(a, sort_keys=True) for a in sets}) == len(sets), \
                        "duplicate alternative"
                counts[name or "null"] += 1
                t = case["text"]
                stt += t == t.lower() and not re.search(r"[.,!?:;%°'0-9-]", t)
            except (AssertionError, ValueError, msgspec.ValidationError, KeyError) as e:
                bad += 1
                print(f"{where}: {e}")
        total = sum(counts.values())
        print(f"{path.name}: {total} cases, null {counts['null']} ({counts['null']/total:.0%}),"
              f" speech-like {stt} ({stt/total:.0%})")
        for k, v in sorted(counts.items()):
            print(f"   {k}: {v}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
