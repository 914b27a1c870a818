"""What the benchmarks share: ports, the database, reading processes' CPU from /proc, and how
busy and how fast the machine is while they run."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def load_average() -> float:
    """The one-minute load average: how much else wanted the cores (the machine may be shared)."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def cpu_reference_ms() -> float:
    """The CPU time a fixed piece of Python work takes now, in ms (the best of five): a VM's
    core is not the same speed at every hour, so runs made at different times compare by
    their CPU per unit of work only with this beside them (a higher value: a slower core)."""
    record = {"id": 4711, "to": "ada@example.com", "personalisation": {"code": "123456"}}
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for n in range(20_000):
            record["id"] = n
            body = json.dumps(record).encode()
            hashlib.sha256(body).hexdigest()
            json.loads(body)
        best = min(best, time.process_time() - started)
    return round(best * 1000, 1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_database() -> None:
    """Create the database named by DATABASE_URL if it does not exist, then migrate."""
    import psycopg

    url = os.environ["DATABASE_URL"]
    base, name = url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True)


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(child) for child in children)
    return pids


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / TICKS


def wrk(
    url: str,
    script: Path,
    *,
    threads: int,
    connections: int,
    seconds: float,
    timeout: str,
    env: dict[str, str],
) -> dict:
    """Run wrk with a Lua `script` whose done() prints one line "WRK {json}"; that JSON."""
    result = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
         "--timeout", timeout, "-s", str(script), url],
        env={**os.environ, **env}, capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode:
        raise RuntimeError(f"wrk failed: {result.stderr or result.stdout}")
    line = next(x for x in result.stdout.splitlines() if x.startswith("WRK "))
    return json.loads(line[4:])
