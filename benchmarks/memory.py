"""Peak memory with 100,000 events queued while the server is down.

Each side runs in a fresh child process (`python -m benchmarks.memory <side> <n>`),
so that the peak RSS it reports belongs to that side alone. The reference holds
the same events in a plain list: what the events themselves cost.
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import subprocess
import sys
from pathlib import Path

from fluxgate_async import AiEventMetadata, AiEventUsage, FluxGate, LLMEvent

from ._common import Settings, background_client, require
from ._table import Row

TARGET_BYTES = 700


def _event(i: int) -> LLMEvent:
    # Distinct objects, as an application builds one per call.
    return LLMEvent(
        AiEventUsage(
            input_tokens=1000 + i % 500,
            output_tokens=200 + i % 300,
            model="gpt-4o",
            provider="openai",
            latency_in_ms=800.0 + i % 97,
        ),
        metadata=AiEventMetadata(feature="chat", user=f"user-{i % 1000}"),
    )


def _memory_kb(field: str) -> int:
    """`VmRSS` (resident now) or `VmHWM` (its peak) of this process, in KiB."""
    # The peak of this process image alone, which `getrusage`'s `ru_maxrss` is not:
    # on Linux, exec keeps the peak of the process image it replaces, so a child
    # started by a large benchmark process (vfork, then exec) reported its
    # parent's peak.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    msg = f"no {field} in /proc/self/status"
    raise RuntimeError(msg)


def _stopped_server_url() -> str:
    # A port that was free a moment ago: connections to it are refused, as to a stopped server.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api/events"


async def _client_side(count: int) -> dict[str, int]:
    fg = background_client(_stopped_server_url(), max_queue_size=count + 1)
    fg.record_event_nowait(_event(0))  # starts the workers before the baseline
    await asyncio.sleep(0.05)
    gc.collect()
    baseline = _memory_kb("VmRSS")
    accepted = sum(fg.record_event_nowait(_event(i)) for i in range(1, count + 1))
    peak = _memory_kb("VmHWM")
    await fg.aclose(timeout=1.0)
    return {"baseline_kb": baseline, "peak_kb": peak, "accepted": accepted}


def _list_side(count: int) -> dict[str, int]:
    gc.collect()
    baseline = _memory_kb("VmRSS")
    kept = [_event(i) for i in range(1, count + 1)]
    peak = _memory_kb("VmHWM")
    return {"baseline_kb": baseline, "peak_kb": peak, "accepted": len(kept)}


def _child(side: str, count: int) -> dict[str, int]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", side, str(count)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result: dict[str, int] = json.loads(proc.stdout.splitlines()[-1])
    return result


async def queued(settings: Settings) -> Row:
    """Bytes of peak RSS per queued event, client against the events alone."""
    require(FluxGate, "record_event_nowait", "flush")
    count = settings.count(100_000, 2_000)
    client = await asyncio.to_thread(_child, "client", count)
    if client["accepted"] != count:
        msg = f"only {client['accepted']} of {count} events were queued"
        raise RuntimeError(msg)
    events = await asyncio.to_thread(_child, "list", count)
    per_event = (client["peak_kb"] - client["baseline_kb"]) * 1024 / count
    per_list = (events["peak_kb"] - events["baseline_kb"]) * 1024 / count
    return Row(
        "memory, 100,000 events queued, server down",
        f"{per_event:,.0f} B/event (peak RSS {client['peak_kb'] / 1024:,.0f} MiB)",
        f"{per_list:,.0f} B/event (the events in a list)",
        per_event / per_list if per_list > 0 else None,
        f"<= {TARGET_BYTES} B/event",
        per_event <= TARGET_BYTES,
    )


if __name__ == "__main__":
    side, number = sys.argv[1], int(sys.argv[2])
    figures = asyncio.run(_client_side(number)) if side == "client" else _list_side(number)
    print(json.dumps(figures))
