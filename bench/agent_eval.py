"""Agent accuracy and latency: a set of spoken-style requests through the WHOLE daemon.

Starts a private mosquitto and ``python -m edged run`` with the house agent (bundled
SmolLM2-135M on llama.cpp, one thread; MiniLM embeddings; the example plugins), then sends each
case of a JSON-lines file to ``edged/in/<device>`` with an MQTT v5 response topic and
correlation data, one at a time, and compares the reply's ``tool_calls`` with the expectation:

- tool accuracy: the first tool call's tool is the expected one (no tool call when the
  expectation is ``null``);
- argument accuracy: among cases with the right tool, every expected argument is present with
  that value (numbers compared as floats, strings case-insensitively; arguments left to their
  default are not listed in a case);
- exact: tool and arguments right; router accuracy: ``reply["agent"]`` is the expected agent;
- latency from publishing the request to receiving the reply, p50/p95 over all cases and
  p50 over the cases that expect one tool call.

A case: ``{"text", "device", "tool": "<plugin.tool>" | null, "arguments": {...}, "agent"}``.

    .venv/bin/python bench/agent_eval.py [--cases tests/data/agent_eval.jsonl] [--limit N]
        [--extra-toml FILE]   # appended to the config, e.g. a second [agents.x] for routing
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._runner import ROOT, Bench, Timing  # noqa: E402
from tests.harness import Broker, DaemonProcess, Peer, write_config  # noqa: E402

DEFAULT_CASES = ROOT / "tests" / "data" / "agent_eval.jsonl"
REPLY_TOPIC = "edged/out/{device}/agent-eval"  # in each device's own reply space
# the agent chose a tool but could not fill a choice or a yes/no, and asks instead of calling
_ASKS = re.compile(r"^(sorry, )?which \S+ do you mean", re.I)
WARMUP = ["turn on the kitchen lights", "note that the plumber comes on friday"]

AGENTS = """
[models.small]
backend = "llama_cpp"
path = "bundled:smollm2-135m"
context = 1024
threads = 1

[agents.house]
model = "small"
description = "Controls lights, heating, locks, notes and tells the time."
tools = {tools}

[router]
default_agent = "house"

[plugins]
dirs = [{plugins}]
"""

# A blind set's agent: the held-out plugin's tools only (no memory or clock tools), and the
# default agent (no routing in the figure)
BLIND = ROOT / "tests" / "data" / "blind"
DEV = ROOT / "tests" / "data" / "dev"  # development sets: other plugins, for tuning
BLIND_AGENT = AGENTS.replace("[agents.house]", "[agents.{name}]").replace(
    'description = "Controls lights, heating, locks, notes and tells the time."',
    'description = "Runs the {name}."').replace('default_agent = "house"',
                                                 'default_agent = "{name}"')


@dataclass
class Case:
    n: int
    text: str
    device: str
    tool: str | None
    arguments: dict[str, Any]
    agent: str
    # other argument sets that are just as right ("2 kilograms": 2 kg or 2000 g)
    alternatives: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Outcome:
    case: Case
    reply: dict[str, Any]
    latency_s: float
    got_tool: str | None = None
    got_args: dict[str, Any] = field(default_factory=dict)
    tool_ok: bool = False
    args_ok: bool = False
    router_ok: bool = False

    @property
    def exact(self) -> bool:
        return self.tool_ok and self.args_ok

    @property
    def asked(self) -> bool:
        """No call, and the reply is a clarifying question ("Which room do you mean?")."""
        return not self.reply.get("tool_calls") and bool(_ASKS.match(_reply_text(self.reply)))

    @property
    def kind(self) -> str:
        """What went wrong: ok, asked, no call, wrong tool, called (none expected), args,
        router, error."""
        if "error" in self.reply:
            return "error"
        if not self.tool_ok:
            if self.case.tool is None:
                return "called"
            return "asked" if self.asked else "no call" if self.got_tool is None \
                else "wrong tool"
        if not self.args_ok:
            return "args"
        return "ok" if self.router_ok else "router"

    def to_json(self) -> dict[str, Any]:
        return {"n": self.case.n, "text": self.case.text, "device": self.case.device,
                "expected": {"tool": self.case.tool, "arguments": self.case.arguments,
                             "agent": self.case.agent},
                "got": {"tool": self.got_tool, "arguments": self.got_args,
                        "agent": self.reply.get("agent"), "text": _reply_text(self.reply),
                        "tool_calls": len(self.reply.get("tool_calls") or [])},
                "kind": self.kind, "tool_ok": self.tool_ok, "args_ok": self.args_ok,
                "exact": self.exact, "router_ok": self.router_ok,
                "latency_ms": round(self.latency_s * 1e3, 1)}


def load_cases(path: Path, limit: int | None) -> list[Case]:
    cases: list[Case] = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            d = json.loads(line)
            case = Case(n=len(cases) + 1, text=str(d["text"]), device=str(d["device"]),
                        tool=d.get("tool"), arguments=dict(d.get("arguments") or {}),
                        agent=str(d.get("agent", "house")),
                        alternatives=[dict(a) for a in d.get("alternatives") or []])
        except (ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"{path}:{lineno}: bad case: {e}") from None
        if "/" in case.device or "+" in case.device or "#" in case.device:
            raise SystemExit(f"{path}:{lineno}: device {case.device!r} is not one topic level")
        cases.append(case)
    if not cases:
        raise SystemExit(f"{path}: no cases")
    return cases[:limit] if limit else cases


def same(expected: Any, got: Any) -> bool:
    """Numbers as floats, strings case-insensitively (and trimmed), the rest exactly."""
    if isinstance(expected, bool) or isinstance(got, bool):
        return isinstance(expected, bool) and isinstance(got, bool) and expected == got
    if isinstance(expected, int | float) and isinstance(got, int | float):
        return abs(float(expected) - float(got)) < 1e-9
    if isinstance(expected, str) and isinstance(got, str):
        return expected.strip().casefold() == got.strip().casefold()
    return bool(expected == got)


def judge(case: Case, reply: dict[str, Any], latency_s: float) -> Outcome:
    out = Outcome(case, reply, latency_s)
    calls = reply.get("tool_calls") or []
    if calls:
        out.got_tool = calls[0].get("tool")
        out.got_args = dict(calls[0].get("arguments") or {})
    if "error" in reply:
        out.tool_ok = out.args_ok = False
    elif case.tool is None:
        out.tool_ok = out.args_ok = not calls
    else:
        out.tool_ok = out.got_tool == case.tool
        out.args_ok = out.tool_ok and any(
            all(k in out.got_args and same(v, out.got_args[k]) for k, v in expected.items())
            for expected in [case.arguments, *case.alternatives])
    out.router_ok = reply.get("agent") == case.agent
    return out


def _reply_text(reply: dict[str, Any]) -> str:
    if "error" in reply:
        err = reply["error"] or {}
        return f"error {err.get('code')}: {err.get('message')}"
    return str(reply.get("text", ""))


class Asker:
    """A v5 peer that sends one request at a time and stamps when its reply arrives."""

    def __init__(self, port: int) -> None:
        self.peer = Peer(port).connect()
        self.cond = threading.Condition()
        self.replies: dict[bytes, tuple[float, bytes]] = {}
        self.peer.c.on_message = self._on_message
        self.peer.subscribe(REPLY_TOPIC.format(device="+"))

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        t = time.perf_counter()
        corr = getattr(msg.properties, "CorrelationData", None) or b""
        with self.cond:
            self.replies[bytes(corr)] = (t, msg.payload)
            self.cond.notify_all()

    def ask(self, device: str, text: str, timeout: float) -> tuple[dict[str, Any], float]:
        corr = f"eval-{uuid.uuid4().hex[:16]}".encode()
        t0 = time.perf_counter()
        self.peer.publish(f"edged/in/{device}", text.encode(),
                          response_topic=REPLY_TOPIC.format(device=device),
                          correlation=corr, wait=False)
        deadline = time.monotonic() + timeout
        with self.cond:
            while corr not in self.replies:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no reply to {text!r} in {timeout:g} s")
                self.cond.wait(left)
            t1, payload = self.replies.pop(corr)
        return json.loads(payload), t1 - t0

    def close(self) -> None:
        self.peer.close()


def _fmt_call(tool: str | None, args: dict[str, Any]) -> str:
    return "(no tool)" if tool is None else f"{tool} {json.dumps(args, ensure_ascii=False)}"


def print_misses(outcomes: list[Outcome]) -> None:
    misses = [o for o in outcomes if not (o.exact and o.router_ok)]
    print(f"\n== misses: {len(misses)} of {len(outcomes)} ==")
    w = max(len(str(o.case.n)) for o in outcomes)
    for o in misses:
        c = o.case
        print(f"{c.n:>{w}}  [{o.kind}] {c.text!r}  ({c.device}, {o.latency_s * 1e3:.0f} ms)")
        pad = " " * (w + 2)
        print(f"{pad}expected {_fmt_call(c.tool, c.arguments)}"
              + (f"  agent={c.agent}" if not o.router_ok else ""))
        got = _fmt_call(o.got_tool, o.got_args)
        n_calls = len(o.reply.get("tool_calls") or [])
        if n_calls > 1:
            got += f" (+{n_calls - 1} more call(s))"
        print(f"{pad}got      {got}" + (f"  agent={o.reply.get('agent')}"
                                         if not o.router_ok else ""))
        reply = textwrap.shorten(_reply_text(o.reply), 110, placeholder="...")
        print(f"{pad}reply    {reply!r}  (confidence {o.reply.get('confidence')})")
    lucky = [o for o in outcomes if o.case.tool is None and o.exact and o.asked]
    if lucky:
        print("\n== no-tool cases that passed only because the agent asked (it chose a tool) ==")
        for o in lucky:
            print(f"{o.case.n:>{w}}  {o.case.text!r} -> {_reply_text(o.reply)!r}")


def print_per_tool(outcomes: list[Outcome]) -> None:
    by: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by.setdefault(o.case.tool or "(no tool)", []).append(o)
    rows = [("expected tool", "n", "tool ok", "exact")]
    for name in sorted(by):
        os_ = by[name]
        rows.append((name, str(len(os_)), str(sum(o.tool_ok for o in os_)),
                     str(sum(o.exact for o in os_))))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print("\n== per tool ==")
    for j, r in enumerate(rows):
        print("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                        for i, c in enumerate(r)))
        if j == 0:
            print("  ".join("-" * x for x in widths))


def _level(line: str) -> str:
    try:
        return str(json.loads(line).get("level", ""))
    except (ValueError, AttributeError):
        return ""


def pct(k: int, n: int) -> float:
    return 100.0 * k / n if n else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--cases", type=Path, default=DEFAULT_CASES,
                    help="JSON-lines file of cases (default: %(default)s)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N cases")
    ap.add_argument("--extra-toml", type=Path, default=None,
                    help="TOML appended to the daemon config (e.g. a second agent)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait per reply")
    ap.add_argument("--plugin-dir", action="append", default=[],
                    help="another plugin folder (a held-out plugin); its files' tools join "
                         "the agent")
    ap.add_argument("--name", default="agent_eval", help="results file name (default: %(default)s)")
    ap.add_argument("--blind", metavar="PLUGIN", default=None,
                    help="a blind set: tests/data/blind/PLUGIN.jsonl against an agent PLUGIN "
                         "whose only tools are tests/data/blind/plugins/PLUGIN.py's")
    ap.add_argument("--dev", metavar="PLUGIN", default=None,
                    help="a development set (the rules may be tuned on these): "
                         "tests/data/dev/PLUGIN.jsonl, like --blind")
    args = ap.parse_args()
    agent_toml = AGENTS
    held_out = args.blind or args.dev
    if held_out:
        where = BLIND if args.blind else DEV
        args.cases = where / f"{held_out}.jsonl"
        args.plugin_dir = [str(where / "plugins")]
        args.name = f"agent_eval_{'blind' if args.blind else 'dev'}_{held_out}"
        agent_toml = BLIND_AGENT.replace("{name}", held_out)
        args.blind = held_out

    cases = load_cases(args.cases, args.limit)
    bench = Bench(args.name)
    bench.param(cases=str(args.cases), n=len(cases), model="bundled:smollm2-135m",
                threads=1, context=1024, warmup=len(WARMUP),
                extra_toml=str(args.extra_toml) if args.extra_toml else None)
    work = Path(tempfile.mkdtemp(prefix="edged-eval-"))
    (work / "state").mkdir()
    dirs = [str(ROOT / "plugins")] + [str(Path(d).resolve()) for d in args.plugin_dir]
    tools = ["home.*", "notes.*", "locks.*", "clock.*", "system.*", "gateway.*", "memory.*"]
    tools += [f"{f.stem}.*" for d in args.plugin_dir for f in sorted(Path(d).glob("*.py"))]
    if args.blind:
        tools = [f"{args.blind}.*"]
    extra = agent_toml.format(plugins=", ".join(json.dumps(d) for d in dirs),
                              tools=json.dumps(tools))
    if args.extra_toml:
        extra += "\n" + args.extra_toml.read_text()
    broker = Broker().start()
    daemon: DaemonProcess | None = None
    asker: Asker | None = None
    outcomes: list[Outcome] = []
    try:
        cfg = write_config(work / "edged.toml", broker, db=work / "state" / "edged.db",
                           client_id="edged-eval", extra=extra, delivery="rate_per_s = 0")
        t_start = time.perf_counter()
        daemon = DaemonProcess(cfg, work).start(timeout=120)
        bench.param(daemon_ready_s=round(time.perf_counter() - t_start, 2))
        asker = Asker(broker.port)
        for text in WARMUP:
            asker.ask("bench-warmup", text, args.timeout)
        for case in cases:
            try:
                reply, dt = asker.ask(case.device, case.text, args.timeout)
            except TimeoutError as e:
                if daemon.proc is not None and daemon.proc.poll() is not None:
                    raise SystemExit(f"daemon exited; log:\n{daemon.tail()}") from None
                reply, dt = {"id": "", "error": {"code": "timeout", "message": str(e)}}, \
                    args.timeout
            o = judge(case, reply, dt)
            outcomes.append(o)
            mark = "ok " if o.exact and o.router_ok else "MISS"
            print(f"{mark} {case.n:>3} {dt * 1e3:7.0f} ms  {case.text}", flush=True)
    finally:
        if asker:
            asker.close()
        log_tail = daemon.tail(200) if daemon else ""
        if daemon:
            daemon.kill()
        broker.cleanup()
        problems = [ln for ln in log_tail.splitlines() if _level(ln) in ("warning", "error")]
        if problems:
            print("\n== daemon warnings and errors (of its last 200 log lines) ==")
            print("\n".join(problems[-20:]))
        shutil.rmtree(work, ignore_errors=True)

    n = len(outcomes)
    tool_ok = sum(o.tool_ok for o in outcomes)
    with_tool = [o for o in outcomes if o.tool_ok and o.case.tool is not None]
    args_ok = sum(o.args_ok for o in with_tool)
    exact = sum(o.exact for o in outcomes)
    router_ok = sum(o.router_ok for o in outcomes)
    print_misses(outcomes)
    print_per_tool(outcomes)
    print()
    bench.record("tool accuracy", pct(tool_ok, n), "%", correct=tool_ok, n=n)
    bench.record("argument accuracy (right tool)", pct(args_ok, len(with_tool)), "%",
                 correct=args_ok, n=len(with_tool))
    bench.record("exact (tool + arguments)", pct(exact, n), "%", correct=exact, n=n)
    bench.record("router accuracy", pct(router_ok, n), "%", correct=router_ok, n=n)
    kinds: dict[str, int] = {}
    for o in outcomes:
        kinds[o.kind] = kinds.get(o.kind, 0) + 1
    n_tool = sum(o.case.tool is not None for o in outcomes)
    asked = kinds.get("asked", 0)
    wrong = kinds.get("wrong tool", 0) + kinds.get("called", 0)
    bench.record("asked instead of calling (tool cases)", pct(asked, n_tool), "%",
                 count=asked, n=n_tool)
    bench.record("a wrong tool ran (all cases)", pct(wrong, n), "%", count=wrong, n=n)
    wrong_call = wrong + kinds.get("args", 0)
    bench.record("a wrong call ran: wrong tool or arguments (all cases)", pct(wrong_call, n),
                 "%", count=wrong_call, n=n)
    bench.param(kinds=kinds)
    bench.record_timing("latency, all cases", Timing.of([o.latency_s for o in outcomes]))
    one_tool = [o.latency_s for o in outcomes if o.case.tool is not None]
    if one_tool:
        bench.record_timing("latency, one-tool commands", Timing.of(one_tool))
    no_tool = [o.latency_s for o in outcomes if o.case.tool is None]
    if no_tool:
        bench.record_timing("latency, no-tool requests", Timing.of(no_tool))
    bench.param(outcomes=[o.to_json() for o in outcomes])
    bench.finish()


if __name__ == "__main__":
    main()
