"""Bounded load test of a running memserve: locust headless, then a Markdown report and a chart.

    make run                                   # in one terminal
    make load                                  # in another: writes load-report/report.md + chart.png
    .venv/bin/python benchmarks/load_report.py --host http://127.0.0.1:8000 --duration 60s \\
        --users 16 --spawn-rate 4 --out load-report [--dashboard http://127.0.0.1:8265]

Runs `benchmarks/locustfile.py` headless for `--duration` with `--csv` and `--csv-full-history`
into `--out`. Meanwhile it samples, every 2 s, the RUNNING replicas of every deployment from Ray
Serve's own status (the Ray dashboard's `GET /api/serve/applications/`). Then it writes
`report.md` (per-endpoint table, run parameters, replica counts) and `chart.png` (requests/s,
p50/p95 response time, replicas per deployment over time). If the dashboard cannot be reached
the report says so and has no replica panel.

Since Ray 2.5x a local `ray.init()` (so `serve run`) turns on token authentication by default
and the dashboard answers 401 without `Authorization: Bearer <token>`. Like Ray's own clients,
this script takes the token from `RAY_AUTH_TOKEN`, else the file `--dashboard-token-file`
(default `$RAY_AUTH_TOKEN_PATH`, else `~/.ray/auth_token`, which that local cluster wrote).
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from serve_app.serve_status import DEFAULT_TOKEN_FILE, applications_url, dashboard_headers, fetch_replicas

logger = logging.getLogger("load_report")

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
CSV_PREFIX = "locust"
SAMPLE_INTERVAL_S = 2.0
AGGREGATED = "Aggregated"


# ---------------------------------------------------------------------------- data


@dataclass
class EndpointStats:
    """One row of locust's `_stats.csv`: whole-run totals for one endpoint (or the aggregate)."""

    method: str
    name: str
    requests: int
    failures: int
    rps: float
    p50: float
    p95: float
    p99: float


@dataclass
class HistoryPoint:
    """One row of locust's `_stats_history.csv`; percentiles cover its last ~10 s window."""

    t: float
    users: int
    rps: float
    fps: float
    p50: float
    p95: float


@dataclass
class ReplicaSample:
    """RUNNING and target replica counts per deployment at one moment (`t` since the run start)."""

    t: float
    running: dict[str, int]
    target: dict[str, int]


@dataclass
class ReplicaLog:
    """Everything the sampler saw: successful samples and how many polls failed (and why)."""

    url: str
    auth: str = "none"
    polls: int = 0
    samples: list[ReplicaSample] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None

    @property
    def deployments(self) -> list[str]:
        """Every deployment seen in any sample, in first-seen order."""
        names: dict[str, None] = {}
        for sample in self.samples:
            names.update(dict.fromkeys(sample.running))
        return list(names)


# ---------------------------------------------------------------------------- helpers


def parse_duration(text: str) -> float:
    """Seconds in a locust run-time string: `90`, `45s`, `2m`, `1h30m`."""
    if re.fullmatch(r"\d+", text):
        return float(text)
    parts = re.findall(r"(\d+)\s*([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != re.sub(r"\s", "", text):
        raise argparse.ArgumentTypeError(f"not a duration like 45s, 2m or 1h30m: {text!r}")
    scale = {"h": 3600, "m": 60, "s": 1}
    return float(sum(int(n) * scale[u] for n, u in parts))


def duration_arg(text: str) -> str:
    """argparse type for `--duration`: validated, passed on to locust unchanged."""
    parse_duration(text)
    return text


def to_float(value: str | None) -> float:
    """A CSV cell as float; `N/A`, empty and missing become NaN."""
    try:
        return float(value) if value not in (None, "", "N/A") else math.nan
    except ValueError:
        return math.nan


def fmt_ms(value: float) -> str:
    """Milliseconds for a table cell (`-` when unknown)."""
    return "-" if math.isnan(value) else f"{value:,.0f}"


# ---------------------------------------------------------------------------- replica sampling


class ReplicaSampler(threading.Thread):
    """Polls the Ray dashboard's Serve status every `interval` seconds until stopped."""

    def __init__(self, dashboard: str, token_file: Path, t0: float, interval: float = SAMPLE_INTERVAL_S) -> None:
        super().__init__(name="replica-sampler", daemon=True)
        self.headers, auth = dashboard_headers(token_file)
        self.dashboard = dashboard
        self.log = ReplicaLog(url=applications_url(dashboard), auth=auth)
        self.t0 = t0
        self.interval = interval
        self._stop_event = threading.Event()

    def stop(self) -> ReplicaLog:
        """Stop polling and return what was collected."""
        self._stop_event.set()
        self.join(timeout=10)
        return self.log

    def run(self) -> None:
        """Poll on a fixed schedule; a slow answer shortens the following wait."""
        with httpx.Client(timeout=5.0, headers=self.headers) as client:
            while not self._stop_event.is_set():
                started = time.monotonic()
                self._poll(client)
                self._stop_event.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def _poll(self, client: httpx.Client) -> None:
        """One sample, or one counted error (the first one is kept for the report)."""
        self.log.polls += 1
        try:
            counts = fetch_replicas(client, self.dashboard)
        except (httpx.HTTPError, ValueError) as exc:
            self.log.errors += 1
            if self.log.first_error is None:
                self.log.first_error = describe_error(exc)
                logger.warning("Ray dashboard poll failed (%s); going on without it", self.log.first_error)
            return
        self.log.samples.append(ReplicaSample(time.time() - self.t0, counts.running, counts.target))


def describe_error(exc: Exception) -> str:
    """A poll failure for the log and report; a 401/403 gets the token hint."""
    if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in (401, 403):
        return (f"HTTP {exc.response.status_code} {exc.response.text.strip()[:120]}: the cluster uses Ray token "
                "auth; set RAY_AUTH_TOKEN or --dashboard-token-file")
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------- locust


def locust_command(args: argparse.Namespace) -> list[str]:
    """The headless locust invocation: bounded run time, CSV stats with the full history."""
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", args.host, "--headless",
        "--users", str(args.users), "--spawn-rate", str(args.spawn_rate), "--run-time", args.duration,
        "--csv", str(args.out / CSV_PREFIX), "--csv-full-history", "--only-summary",
        "--html", str(args.out / "locust.html"),
    ]


def run_locust(args: argparse.Namespace) -> int:
    """Run locust to completion (killed if it overruns the duration by a minute); its exit code."""
    log_path = args.out / "locust.log"
    command = locust_command(args)
    logger.info("locust: %d users, spawn %s/s, %s against %s (log: %s)",
                args.users, args.spawn_rate, args.duration, args.host, log_path)
    with log_path.open("w") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            return process.wait(timeout=parse_duration(args.duration) + 60)
        except subprocess.TimeoutExpired:
            logger.error("locust overran its run time by 60 s; terminating it")
            process.terminate()
            return process.wait(timeout=30)


def check_host(host: str) -> None:
    """Warn early when nothing answers at `host`/health (locust would then only record failures)."""
    try:
        httpx.get(host.rstrip("/") + "/health", timeout=5.0).raise_for_status()
    except httpx.HTTPError as exc:
        logger.warning("%s/health does not answer (%s): is the app running (`make run`)?", host, exc)


# ---------------------------------------------------------------------------- locust CSV parsing


def read_stats(path: Path) -> list[EndpointStats]:
    """Whole-run rows of `_stats.csv`, endpoints first and the Aggregated row last."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return [
            EndpointStats(
                method=row["Type"], name=row["Name"], requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]), rps=to_float(row["Requests/s"]),
                p50=to_float(row["50%"]), p95=to_float(row["95%"]), p99=to_float(row["99%"]),
            )
            for row in csv.DictReader(handle)
        ]


def read_history(path: Path, t0: float) -> dict[str, list[HistoryPoint]]:
    """`_stats_history.csv` as one time series per endpoint name (plus `Aggregated`)."""
    series: dict[str, list[HistoryPoint]] = {}
    if not path.exists():
        return series
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            point = HistoryPoint(
                t=float(row["Timestamp"]) - t0, users=int(row["User Count"]), rps=to_float(row["Requests/s"]),
                fps=to_float(row["Failures/s"]), p50=to_float(row["50%"]), p95=to_float(row["95%"]),
            )
            series.setdefault(row["Name"], []).append(point)
    return series


def read_failures(path: Path, limit: int = 5) -> list[dict[str, str]]:
    """The most frequent rows of `_failures.csv`."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return sorted(rows, key=lambda r: -int(r["Occurrences"]))[:limit]


# ---------------------------------------------------------------------------- chart


def legend_outside(ax: Any, handles: list[Any] | None = None, x: float = 1.01) -> None:
    """A legend to the right of the panel (past a twin axis' labels at `x`), so it hides no line."""
    kwargs = {"handles": handles} if handles else {}
    ax.legend(loc="upper left", bbox_to_anchor=(x, 1.0), fontsize=7, frameon=False, **kwargs)


def positive(value: float) -> float:
    """A response time for a log axis: 0 (no request in the window) becomes a gap."""
    return value if value > 0 else math.nan


def plot_requests(ax: Any, history: dict[str, list[HistoryPoint]]) -> None:
    """Panel 1: total requests/s and failures/s (locust's moving rate), users on a second axis."""
    total = history.get(AGGREGATED, [])
    ts = [p.t for p in total]
    lines = ax.plot(ts, [p.rps for p in total], label="requests/s", color="tab:blue")
    lines += ax.plot(ts, [p.fps for p in total], label="failures/s", color="tab:red")
    ax.set_ylabel("per second")
    users = ax.twinx()
    lines += users.plot(ts, [p.users for p in total], label="users", color="gray", linestyle=":")
    users.set_ylabel("users")
    users.set_ylim(bottom=0)
    legend_outside(users, lines, x=1.06)


def plot_latency(ax: Any, history: dict[str, list[HistoryPoint]]) -> None:
    """Panel 2: aggregated p50/p95 (thick) and each endpoint's p95 (thin), log scale."""
    for name, points in history.items():
        if name != AGGREGATED:
            ax.plot([p.t for p in points], [positive(p.p95) for p in points], linewidth=0.9, alpha=0.8,
                    label=f"{name} p95")
    total = history.get(AGGREGATED, [])
    ax.plot([p.t for p in total], [positive(p.p50) for p in total], color="black", linewidth=2, label="all p50")
    ax.plot([p.t for p in total], [positive(p.p95) for p in total], color="black", linewidth=2, linestyle="--",
            label="all p95")
    ax.set_yscale("log")
    ax.set_ylabel("response time (ms)")
    legend_outside(ax)


def plot_replicas(ax: Any, replicas: ReplicaLog) -> None:
    """Panel 3: RUNNING replicas per deployment (step plot, nudged apart so equal lines stay visible)."""
    names = replicas.deployments
    for i, name in enumerate(names):
        nudge = (i - (len(names) - 1) / 2) * 0.04
        ts = [s.t for s in replicas.samples]
        counts = [s.running.get(name, 0) + nudge for s in replicas.samples]
        ax.step(ts, counts, where="post", label=name)
    top = max(max(s.running.values(), default=0) for s in replicas.samples)
    ax.set_ylim(0, top + 0.5)
    ax.set_ylabel("RUNNING replicas\n(lines nudged apart)")
    ax.yaxis.get_major_locator().set_params(integer=True)
    legend_outside(ax)


def write_chart(path: Path, history: dict[str, list[HistoryPoint]], replicas: ReplicaLog) -> None:
    """Stacked panels over time since the run start: rates, latency, and replicas if sampled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if replicas.samples else 2
    fig, axes = plt.subplots(panels, 1, sharex=True, figsize=(13, 3.2 * panels))
    plot_requests(axes[0], history)
    plot_latency(axes[1], history)
    if replicas.samples:
        plot_replicas(axes[2], replicas)
    for ax in axes:
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("seconds since the run started")
    fig.suptitle("memserve load test")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- report


def endpoint_table(stats: list[EndpointStats]) -> list[str]:
    """Markdown table of the whole-run stats per endpoint."""
    lines = ["| endpoint | requests | failures | requests/s | p50 ms | p95 ms | p99 ms |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for s in stats:
        name = f"**{s.name}**" if s.name == AGGREGATED else f"{s.method} {s.name}".strip()
        lines.append(f"| {name} | {s.requests} | {s.failures} | {s.rps:.2f} | {fmt_ms(s.p50)} | "
                     f"{fmt_ms(s.p95)} | {fmt_ms(s.p99)} |")
    return lines


def replica_changes(replicas: ReplicaLog, name: str) -> str:
    """The RUNNING-count series of one deployment as its changes: `1 → 2 @ 14 s → 1 @ 52 s`."""
    text, last = "", None
    for sample in replicas.samples:
        count = sample.running.get(name, 0)
        if last is None:
            text = str(count)
        elif count != last:
            text += f" → {count} @ {sample.t:.0f} s"
        last = count
    return text if " → " in text else f"{text} throughout"


def replica_section(replicas: ReplicaLog) -> list[str]:
    """Markdown for the replica counts, or why there are none."""
    lines = ["## Replicas per deployment", ""]
    if not replicas.samples:
        reason = replicas.first_error or "no answer"
        return [*lines, f"The Ray dashboard at `{replicas.url}` could not be read ({reason}), so this "
                        "report has no replica counts and the chart no replica panel.", ""]
    lines += [f"From `{replicas.url}` (Ray token from: {replicas.auth}) every {SAMPLE_INTERVAL_S:.0f} s: "
              f"{len(replicas.samples)} samples ({replicas.errors} of {replicas.polls} polls failed). "
              "min/max count RUNNING replicas; target is the autoscaler's wanted count.", "",
              "| deployment | min | max | max target | RUNNING over time |", "|---|---:|---:|---:|---|"]
    for name in replicas.deployments:
        counts = [s.running.get(name, 0) for s in replicas.samples]
        target = max(s.target.get(name, 0) for s in replicas.samples)
        lines.append(f"| {name} | {min(counts)} | {max(counts)} | {target} | {replica_changes(replicas, name)} |")
    return [*lines, ""]


def failure_section(failures: list[dict[str, str]]) -> list[str]:
    """Markdown list of the most frequent failures (nothing when there were none)."""
    if not failures:
        return []
    lines = ["## Most frequent failures", ""]
    for row in failures:
        lines.append(f"- {row['Occurrences']} x `{row['Method']} {row['Name']}`: {row['Error'][:200]}")
    return [*lines, ""]


def write_report(args: argparse.Namespace, started: datetime, exit_code: int, replicas: ReplicaLog) -> Path:
    """Write `report.md` (and `chart.png`) into `--out`; returns the report's path."""
    prefix = args.out / CSV_PREFIX
    stats = read_stats(Path(f"{prefix}_stats.csv"))
    history = read_history(Path(f"{prefix}_stats_history.csv"), started.timestamp())
    write_chart(args.out / "chart.png", history, replicas)
    lines = [
        "# memserve load test", "",
        f"- started: {started:%Y-%m-%d %H:%M:%S} · host: `{args.host}` · duration: {args.duration} · "
        f"users: {args.users} · spawn rate: {args.spawn_rate}/s",
        f"- locustfile: `benchmarks/locustfile.py` · locust exit code: {exit_code} "
        "(1 means some requests failed) · raw CSVs, `locust.html` and `locust.log` next to this file",
        "", "## Endpoints (whole run)", "", *endpoint_table(stats), "",
        "Streamed chats: `[stream]` times the response headers, `ttft` the first content chunk and "
        "`whole stream` the `[DONE]`.", "",
        *failure_section(read_failures(Path(f"{prefix}_failures.csv"))),
        *replica_section(replicas),
        "## Over time", "", "![requests/s, response times and replicas over time](chart.png)", "",
        "Response-time percentiles in the chart cover locust's trailing ~10 s window.", "",
    ]
    path: Path = args.out / "report.md"
    path.write_text("\n".join(lines))
    return path


def write_replica_csv(path: Path, replicas: ReplicaLog) -> None:
    """The raw replica samples: one row per sample and deployment."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["t_s", "deployment", "running", "target"])
        for sample in replicas.samples:
            for name, count in sample.running.items():
                writer.writerow([f"{sample.t:.1f}", name, count, sample.target.get(name, 0)])


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="http://127.0.0.1:8000", help="memserve base URL")
    parser.add_argument("--dashboard", default="http://127.0.0.1:8265", help="Ray dashboard URL")
    parser.add_argument("--dashboard-token-file", type=Path, default=DEFAULT_TOKEN_FILE,
                        help="Ray auth token for the dashboard when $RAY_AUTH_TOKEN is unset "
                             "(default: $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)")
    parser.add_argument("--users", type=int, default=16, help="concurrent locust users")
    parser.add_argument("--spawn-rate", type=float, default=4.0, help="users started per second")
    parser.add_argument("--duration", default="60s", type=duration_arg, help="locust run time: 45s, 2m, 1h30m")
    parser.add_argument("--out", type=Path, default=Path("load-report"), help="output directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run locust with the replica sampler alongside, then write the report and chart."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    check_host(args.host)
    started = datetime.now()
    sampler = ReplicaSampler(args.dashboard, args.dashboard_token_file, started.timestamp())
    sampler.start()
    try:
        exit_code = run_locust(args)
    finally:
        replicas = sampler.stop()
    logger.info("locust exited with %d; %d replica samples (%d failed polls)",
                exit_code, len(replicas.samples), replicas.errors)
    write_replica_csv(args.out / "replicas.csv", replicas)
    print(write_report(args, started, exit_code, replicas))


if __name__ == "__main__":
    main()
