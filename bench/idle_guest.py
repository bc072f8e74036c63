"""What an idle serving county costs the host, and what wakes it (issue #14, item 12).

Provisions COUNTIES (default: keelung) from the template in the bench's own environment (the
state dir and ports of bench/provision.py), waits for the `tenant create` to end, then measures each
county's QEMU CPU (utime + stime from /proc, per thread: the vCPU thread runs the guest, the main
loop runs user-mode networking and QEMU's timers) over --window seconds, in turn:

- `checks`: as it serves (HAProxy checks its /healthz every 2 s);
- `no-checks`: HAProxy's health checks of its server disabled (`disable health`), so only the
  guest's own wakeups remain;
- `no-app`: also the app stopped in the guest (`systemctl stop tenant-app`), so only the kernel,
  systemd and the guest agent remain.

Between windows (not inside them) it reads the guest's timer interrupts and per-process CPU over
SSH. Every county is retired with --purge at the end.

Last line: one JSON object, `core_pct` per condition (percent of one core, mean over counties).
Run: .venv/bin/python bench/idle_guest.py [--window 30] [COUNTY ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import provision as pv

from provisioning import haproxy

TICKS = os.sysconf("SC_CLK_TCK")
GUEST_PROBE = ("grep -E 'LOC|TLB|RES|CAL' /proc/interrupts; "
               "ps -eo pid,comm,time --sort=-time | head -12")


def thread_ticks(pid: int) -> dict[str, int]:
    """utime + stime of each QEMU thread, by its name (CPU 0/TCG, qemu-system-x86, worker ...)."""
    found: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            raw = (task / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1: raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        found[name] = found.get(name, 0) + int(fields[11]) + int(fields[12])
    return found


def measure(pids: dict[str, int], window: float) -> dict[str, Any]:
    before = {vm: thread_ticks(pid) for vm, pid in pids.items()}
    time.sleep(window)
    after = {vm: thread_ticks(pid) for vm, pid in pids.items()}
    per_vm: dict[str, Any] = {}
    for vm in pids:
        threads = {name: round(100.0 * (after[vm].get(name, 0) - before[vm].get(name, 0)) / TICKS / window, 2)
                   for name in after[vm]}
        per_vm[vm] = {"core_pct": round(sum(threads.values()), 2),
                      "threads": {k: v for k, v in threads.items() if v > 0}}
    mean = sum(v["core_pct"] for v in per_vm.values()) / max(1, len(per_vm))
    return {"core_pct": round(mean, 2), "vms": per_vm}


def guest_probe(cli: pv.Cli, county: str) -> str:
    return cli.run("tenant", "exec", county, "--", "sh", "-c", GUEST_PROBE, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("counties", nargs="*", default=["keelung"])
    parser.add_argument("--window", type=float, default=30.0, help="seconds per condition")
    args = parser.parse_args()
    state_dir = pv.STATE_DIR
    logs = state_dir / "bench-logs" / time.strftime("idle-%Y%m%dT%H%M%SZ", time.gmtime())
    logs.mkdir(parents=True)
    env = {**os.environ, **pv.BENCH_ENV, "COUNTYCLOUD_STATE_DIR": str(state_dir),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cli = pv.Cli(source=pv.ROOT, env=env, logs=logs)
    out: dict[str, Any] = {"window_s": args.window, "counties": args.counties, "load": pv.load_note()}
    cli.run("setup", "--no-templates")
    cli.run("inventory", "apply")
    cli.run("template", "build", pv.SITE)
    pv.retire(cli, args.counties)
    try:
        began = time.monotonic()
        cli.run("tenant", "create", *args.counties)
        out["create_s"] = round(time.monotonic() - began, 1)
        vms = {vm: c.slug for c in (pv.describe(cli, slug) for slug in args.counties) for vm in c.vms}
        pids = pv.qemu_pids(vms, state_dir)
        gateway = haproxy.HAProxyGateway(state_dir / "haproxy")
        probes: dict[str, str] = {"before": guest_probe(cli, args.counties[0])}
        time.sleep(5.0)  # the create's last SSH and converge skip settle
        out["checks"] = measure(pids, args.window)
        for vm, slug in vms.items():
            haproxy._ask(gateway.paths.runtime_socket, f"disable health be_{slug}/{vm}")
        out["no-checks"] = measure(pids, args.window)
        probes["after-no-checks"] = guest_probe(cli, args.counties[0])
        for slug in args.counties:
            cli.run("tenant", "exec", slug, "--", "systemctl", "stop", "tenant-app", check=False)
        time.sleep(3.0)
        out["no-app"] = measure(pids, args.window)
        probes["after-no-app"] = guest_probe(cli, args.counties[0])
        (logs / "guest-probes.txt").write_text("\n".join(f"== {k}\n{v}" for k, v in probes.items()))
        out["logs"] = str(logs)
    finally:
        pv.retire(cli, args.counties)
    print(json.dumps(out, ensure_ascii=False, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
