"""The systemd unit (systemd/edged.service) and its example drop-in, checked by systemd itself.

``systemd-analyze verify`` exits 0 on warnings (an unknown key, a bad value that is ignored),
so these tests fail on *any* output, stdout or stderr, as well as on a nonzero exit.

The unit's ExecStart is /usr/local/bin/edged, which verify checks for: it must exist and be
executable. That path is not where the package is installed for these tests, so the unit is
verified as a copy in a temporary directory whose ExecStart points at the real absolute path
of this environment's ``edged`` console script (the sibling of ``sys.executable``, else the one
on $PATH). That one line is the only difference; everything else is verified as shipped.

The drop-in is verified by placing it as ``edged.service.d/memory.conf`` next to that copy:
verify loads drop-in directories next to a unit given by path. A deliberately broken drop-in
must make verify complain, so a clean result is known to have read the file.

systemd-analyze missing is a failure with the install command, not a skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "edged.service"
DROPIN = ROOT / "systemd" / "edged.service.d" / "memory.conf.example"
SHIPPED_EXEC = "/usr/local/bin/edged"
INSTALL_HINT = "apt-get install -y systemd"
# The exposure score of `systemd-analyze security` (0 = locked down, 10 = wide open) must stay
# under this: a regression guard against quietly weakening the sandbox (1.3 when written).
MAX_EXPOSURE = 2.0


def analyze() -> str:
    exe = shutil.which("systemd-analyze") or next(
        (p for p in ("/usr/bin/systemd-analyze", "/bin/systemd-analyze") if Path(p).exists()),
        None)
    if exe is None:
        pytest.fail(f"systemd-analyze is not installed; run: {INSTALL_HINT}")
    return exe


def edged_script() -> str:
    """The absolute path of this environment's ``edged`` console script (not resolved
    through symlinks: a venv's bin/ is the point)."""
    sibling = Path(sys.executable).with_name("edged")
    if sibling.is_file():
        return str(sibling.absolute())
    found = shutil.which("edged")
    if found is None:
        pytest.fail("no `edged` console script next to sys.executable or on $PATH; "
                    "install the package: pip install -e .")
    return str(Path(found).absolute())


def staged_unit(directory: Path, dropin: str | None = None) -> Path:
    """A copy of the unit in ``directory`` with only ExecStart's program path replaced (and
    ``dropin`` as edged.service.d/memory.conf when given)."""
    text = UNIT.read_text()
    prefix = f"ExecStart={SHIPPED_EXEC} "
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    assert len(hits) == 1, f"expected one line starting with {prefix!r} in {UNIT}"
    lines[hits[0]] = lines[hits[0]].replace(SHIPPED_EXEC, edged_script(), 1)
    unit = directory / "edged.service"
    unit.write_text("".join(lines))
    if dropin is not None:
        d = directory / "edged.service.d"
        d.mkdir()
        (d / "memory.conf").write_text(dropin)
    return unit


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([analyze(), "verify", str(unit)], capture_output=True, text=True,
                          timeout=120)


def assert_clean(r: subprocess.CompletedProcess[str]) -> None:
    assert r.returncode == 0 and not r.stdout and not r.stderr, (
        f"systemd-analyze verify exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value in order (keys such as SystemCallFilter= repeat, which
    configparser cannot represent). Comments and blank lines are skipped; a trailing
    backslash continues a line, as in systemd."""
    out: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            section = out.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"key outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return out


# ---------------------------------------------------------------------------------------------
# systemd's own verdict


def test_unit_verifies_without_any_output(tmp_path: Path) -> None:
    assert_clean(verify(staged_unit(tmp_path)))


def test_unit_with_the_example_dropin_verifies_without_any_output(tmp_path: Path) -> None:
    assert_clean(verify(staged_unit(tmp_path, DROPIN.read_text())))


def test_verify_really_reads_the_dropin(tmp_path: Path) -> None:
    """The check above is not vacuous: a bad value in a drop-in placed the same way is
    reported (with exit 0: hence failing on output, not on the exit code)."""
    bad = DROPIN.read_text().replace("MemoryMax=", "MemoryMax=lots-", 1)
    assert bad != DROPIN.read_text()
    r = verify(staged_unit(tmp_path, bad))
    assert "memory.conf" in r.stdout + r.stderr, (r.returncode, r.stdout, r.stderr)


def test_shipped_execstart_path_is_what_verify_would_reject(tmp_path: Path) -> None:
    """Why the copy exists: the unit as shipped names /usr/local/bin/edged, which verify
    rejects when it is absent. If it is present, the unit must verify as shipped too."""
    r = verify(UNIT)
    if Path(SHIPPED_EXEC).exists():
        assert_clean(r)
    else:
        assert SHIPPED_EXEC in r.stdout + r.stderr, (r.returncode, r.stdout, r.stderr)


def test_security_exposure_stays_low(tmp_path: Path) -> None:
    unit = staged_unit(tmp_path)
    r = subprocess.run(
        [analyze(), "security", "--offline=yes", "--no-pager",
         f"--threshold={MAX_EXPOSURE * 10:.0f}", str(unit)],  # threshold is in tenths
        capture_output=True, text=True, timeout=120)
    line = next((x for x in r.stdout.splitlines() if "Overall exposure level" in x), "")
    assert line, f"no exposure line (systemd >= 250 is needed for --offline):\n{r.stderr}"
    score = float(re.search(r":\s*([\d.]+)", line).group(1))  # type: ignore[union-attr]
    assert score <= MAX_EXPOSURE and r.returncode == 0, f"{line}\n{r.stderr}"


# ---------------------------------------------------------------------------------------------
# Settings nobody should drop silently


REQUIRED_SERVICE = {
    "Type": "notify",
    "NotifyAccess": "main",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "WatchdogSec": "30",
    "Restart": "always",
    "RestartSec": "5",
    "TimeoutStopSec": "30",
    "DynamicUser": "yes",
    "StateDirectory": "edged",
    "ConfigurationDirectory": "edged",
    "CacheDirectory": "edged",
    "UMask": "0077",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "NoNewPrivileges": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "SystemCallArchitectures": "native",
    "SystemCallErrorNumber": "EPERM",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
}


def test_unit_keeps_the_settings_edged_relies_on() -> None:
    unit = parse_unit(UNIT.read_text())
    svc = unit["Service"]
    for key, want in REQUIRED_SERVICE.items():
        assert svc.get(key) == [want], f"[Service] {key}={want!r} expected, found {svc.get(key)}"
    assert svc["ExecStart"] == [f"{SHIPPED_EXEC} run -c /etc/edged/edged.toml"]
    assert svc["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    # systemd sets these itself; edged's storage default depends on STATE_DIRECTORY
    assert not any(v.startswith(("STATE_DIRECTORY=", "CACHE_DIRECTORY="))
                   for v in svc.get("Environment", []))
    # deliberately absent (see the unit's comments): W^X would break ctypes/libffi on some
    # platforms, ProcSubset=pid would hide /proc/meminfo from psutil
    assert "MemoryDenyWriteExecute" not in svc and "ProcSubset" not in svc
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    u = unit["Unit"]
    assert "network-online.target" in u["Wants"] and "network-online.target" in u["After"]
    assert "mosquitto.service" in u["Wants"] and "mosquitto.service" in u["After"]
    assert "Requires" not in u and "BindsTo" not in u  # the broker may restart or be remote


def test_stop_timeout_covers_the_drain() -> None:
    """systemd's SIGKILL must not come before edged's own shutdown deadline."""
    from edged.config import DeliveryConfig

    stop = int(parse_unit(UNIT.read_text())["Service"]["TimeoutStopSec"][0])
    assert stop > DeliveryConfig().shutdown_timeout_s


def test_dropin_example_sets_the_limits() -> None:
    dropin = parse_unit(DROPIN.read_text())
    assert set(dropin) == {"Service"}
    for key in ("MemoryHigh", "MemoryMax", "CPUQuota"):
        assert len(dropin["Service"].get(key, [])) == 1, key
    text = DROPIN.read_text()
    assert "/etc/systemd/system/edged.service.d/memory.conf" in text
    assert "systemctl daemon-reload" in text
