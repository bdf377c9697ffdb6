"""Where the test suite spends its CPU: a pytest plugin that writes each test's CPU seconds.

    python -m pytest -q -p bench.suite_cpu --cpu-report suite_cpu.csv

On two cores the suite is bound by the CPU (`vmstat` reads a few % idle over a run), so its wall time is
its CPU time over the cores and a test's wall time says little: one that waits lends its core to the
other worker. Each row: the test, `worker_s` (CPU of the pytest process that ran it, setup and teardown
included), `children_s` (CPU of the processes it started and waited for: RUSAGE_CHILDREN; a SLURM job is
slurmd's child and is not counted), `wall_s`. Under pytest-xdist each worker writes its own rows beside
the report and the controller merges them, sorted by total CPU, and prints the largest."""
from __future__ import annotations

import csv
import os
import resource
import time
from pathlib import Path

import pytest

COLUMNS = ["test", "worker_s", "children_s", "wall_s"]


def pytest_addoption(parser):
    parser.addoption("--cpu-report", metavar="CSV", type=Path, default=None,
                     help="write each test's CPU seconds (worker, started processes, wall) to CSV")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _worker(config) -> str | None:
    """The xdist worker's id in a worker process, None in the controller or without xdist (read from the
    config, not the environment: a pytest started by a test inherits its worker's variables)."""
    return getattr(config, "workerinput", {}).get("workerid")


def _part(config, report: Path) -> Path:
    """This process's rows: the report itself without xdist, one file per worker with it."""
    worker = _worker(config)
    return report if worker is None else report.with_name(f"{report.name}.{worker}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    report = item.config.getoption("--cpu-report")
    if report is None:
        yield
        return
    cpu, children, wall = time.process_time(), _children_cpu(), time.perf_counter()
    yield
    row = [item.nodeid, time.process_time() - cpu, _children_cpu() - children, time.perf_counter() - wall]
    part = _part(item.config, report)
    new = not getattr(item.config, "_cpu_report_started", False)
    item.config._cpu_report_started = True
    with open(part, "w" if new else "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(COLUMNS)
        writer.writerow([row[0], *(f"{v:.3f}" for v in row[1:])])


def pytest_sessionstart(session):
    report = session.config.getoption("--cpu-report")
    if report is not None and _worker(session.config) is None:
        for stale in [report, *report.parent.glob(f"{report.name}.gw*")]:
            stale.unlink(missing_ok=True)  # rows of an earlier run never mix with this one's


def merge(report: Path) -> list[dict]:
    """The workers' rows (or the single process's) as one table, largest total CPU first."""
    rows = []
    for part in [report, *sorted(report.parent.glob(f"{report.name}.gw*"))]:
        if part.exists():
            with open(part, newline="") as f:
                rows += [{"test": r["test"], **{k: float(r[k]) for k in COLUMNS[1:]}} for r in csv.DictReader(f)]
    rows.sort(key=lambda r: -(r["worker_s"] + r["children_s"]))
    return rows


def pytest_terminal_summary(terminalreporter, config):
    report = config.getoption("--cpu-report")
    if report is None or _worker(config) is not None:
        return
    rows = merge(report)
    parts = list(report.parent.glob(f"{report.name}.gw*"))
    tmp = report.with_name(report.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows({k: (f"{v:.3f}" if k != "test" else v) for k, v in r.items()} for r in rows)
    os.replace(tmp, report)
    for part in parts:
        part.unlink()
    worker, children = sum(r["worker_s"] for r in rows), sum(r["children_s"] for r in rows)
    terminalreporter.write_sep("-", f"CPU seconds: {worker:.1f} in pytest, {children:.1f} in the processes "
                                    f"tests started ({len(rows)} tests, {report})")
    for r in rows[:15]:
        terminalreporter.write_line(f"{r['worker_s'] + r['children_s']:7.2f} s  {r['test']}")
