"""The engine pipeline as a local process: checkpoints, stops and resumes as a pod will.

Each case runs the built binary on a temporary STORAGE_DIR and judges only by what it
reports (stdout lines, `/status`), waiting for them rather than sleeping. The aggregate's
total must equal `expected_total(steps)` after every resume: the engine's state came back,
not only a step counter.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from localkube.cluster import REPO, free_ports
from localkube.fixtures import wait_for

from pipeline import report
from pipeline.report import Event, of_kind, parse_events

BUILD = REPO / "tests/pipeline/build.sh"
BIN_DIR = REPO / ".cache/localkube/bin"
# Fast enough for tests: a checkpoint every half second, a step every 50 ms.
FAST = ("--checkpoint-interval", "0.5", "--step-interval-ms", "50")


@pytest.fixture(scope="session")
def engine_pipeline() -> Path:
    """The binary, in the directory `make pipeline` builds into (SLUICE_ENGINE_PIPELINE) or
    .cache/localkube/bin; build.sh is a no-op there when the pins are unchanged, and takes
    ~15 min on a machine without Rust's build cache."""
    binary = Path(os.environ.get("SLUICE_ENGINE_PIPELINE", BIN_DIR / "engine-pipeline"))
    subprocess.run([str(BUILD), str(binary.parent)], check=True)
    return binary


class Pipeline:
    """One run of the engine pipeline; its stdout is collected as it comes."""

    def __init__(self, binary: Path, storage_dir: Path, *flags: str) -> None:
        (self.port,) = free_ports(1)
        self.binary = binary
        self.process = subprocess.Popen(
            [str(binary), "--storage-dir", str(storage_dir), "--port", str(self.port), *flags],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def reports(self) -> list[Event]:
        return parse_events("".join(self.lines))

    def wait_report(self, event: str, count: int = 1, timeout: float = 60) -> Event:
        """The `count`-th report of kind `event`, once it has been printed."""

        def nth() -> Event | None:
            found = of_kind(self.reports, event)
            if len(found) >= count:
                return found[count - 1]
            if self.process.poll() is not None:
                raise AssertionError(f"exited {self.process.returncode}: {self.lines}")
            return None

        return wait_for(nth, timeout=timeout, what=f"report {event} #{count}")

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=5) as r:
            value: dict[str, Any] = json.load(r)
        return value

    def wait_status(self, ok: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """The first `/status` for which `ok` holds."""

        def check() -> dict[str, Any] | None:
            status = self.status()
            return status if ok(status) else None

        return wait_for(check, timeout=60, what=what)

    def stop(self, sig: signal.Signals) -> int:
        """Send `sig`; the exit code once the process has ended and its output is read."""
        self.process.send_signal(sig)
        code = self.process.wait(timeout=60)
        self._reader.join(timeout=10)
        return code


@pytest.fixture
def start(engine_pipeline: Path) -> Iterator[Callable[..., Pipeline]]:
    runs: list[Pipeline] = []

    def _start(storage_dir: Path, *flags: str) -> Pipeline:
        run = Pipeline(engine_pipeline, storage_dir, *FAST, *flags)
        runs.append(run)
        run.wait_report("started")
        return run

    yield _start
    for run in runs:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


def expected_total(steps: int) -> int:
    """10 events a step, step s adding s to each key (the program's EVENTS_PER_STEP)."""
    return 10 * steps * (steps + 1) // 2


def checkpointed_and_stopped(start: Callable[..., Pipeline], storage: Path) -> Event:
    """Run on `storage` until two periodic checkpoints, SIGTERM; the final checkpoint."""
    run = start(storage)
    run.wait_report("checkpoint", count=2)
    assert run.stop(signal.SIGTERM) == 0, run.lines
    stopped = run.wait_report("stopped")
    final: Event = stopped["final_checkpoint"]
    # Taken after the last step: nothing the pipeline computed is lost.
    assert final["steps"] == run.wait_report("stopping")["steps"] == stopped["steps"]
    return final


def test_sigterm_checkpoints_and_restart_resumes(
    start: Callable[..., Pipeline], engine_pipeline: Path, tmp_path: Path
) -> None:
    run = start(tmp_path)
    assert run.wait_report("started")["resumed_from"] is None
    checkpoints = [run.wait_report("checkpoint", count=n) for n in (1, 2)]
    for cp in checkpoints:
        assert cp["total"] == expected_total(cp["steps"]), cp
    assert checkpoints[1]["steps"] > checkpoints[0]["steps"]

    # The subcommand that tests run through `kubectl exec`.
    out = subprocess.run(
        [str(engine_pipeline), "status", "--port", str(run.port)],
        capture_output=True,
        text=True,
        check=True,
    )
    status = json.loads(out.stdout)
    assert status["resumed_from"] is None
    assert status["checkpoints_taken"] >= 2
    assert status["last_checkpoint"]["steps"] >= checkpoints[1]["steps"]
    assert status["total"] == status["expected_total"] == expected_total(status["steps"])
    assert status["storage_dir"] == str(tmp_path / "data")

    assert run.stop(signal.SIGTERM) == 0, run.lines
    stopping, stopped = run.wait_report("stopping"), run.wait_report("stopped")
    assert stopping["signal"] == "SIGTERM"
    final = stopped["final_checkpoint"]
    assert final["steps"] == stopping["steps"] >= checkpoints[1]["steps"]
    assert final["checkpoint"] not in {cp["checkpoint"] for cp in checkpoints}
    assert stopped["total"] == expected_total(final["steps"])

    again = start(tmp_path)
    assert again.wait_report("started")["resumed_from"] == final
    status = again.wait_status(lambda s: s["steps"] > final["steps"] + 2, "steps to continue")
    assert status["resumed_from"] == final
    assert status["total"] == expected_total(status["steps"])
    resumed_cp = again.wait_report("checkpoint")
    assert resumed_cp["steps"] > final["steps"]
    assert resumed_cp["total"] == expected_total(resumed_cp["steps"])


def test_sigkill_resumes_from_the_last_periodic_checkpoint(
    start: Callable[..., Pipeline], tmp_path: Path
) -> None:
    # Checkpoints 2 s apart: the kill lands well after the first and before the next.
    run = start(tmp_path, "--checkpoint-interval", "2")
    checkpoint = run.wait_report("checkpoint")
    run.wait_status(lambda s: s["steps"] >= checkpoint["steps"] + 3, "steps past the checkpoint")
    assert run.stop(signal.SIGKILL) == -signal.SIGKILL
    # Whatever it managed to report before dying: no final checkpoint, and this was its last.
    assert not of_kind(run.reports, "stopped")
    assert of_kind(run.reports, "checkpoint")[-1] == checkpoint

    again = start(tmp_path)
    expected = {"checkpoint": checkpoint["checkpoint"], "steps": checkpoint["steps"]}
    assert again.wait_report("started")["resumed_from"] == expected
    # The steps taken after the checkpoint are gone; the count goes on from the checkpoint.
    resumed_cp = again.wait_report("checkpoint")
    assert resumed_cp["total"] == expected_total(resumed_cp["steps"])


def test_emptied_or_missing_directory_starts_fresh(
    start: Callable[..., Pipeline], tmp_path: Path
) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    # What an ext4 volume has at its root: the engine's storage is beside it, so it stays.
    (storage / "lost+found").mkdir()
    checkpointed_and_stopped(start, storage)
    assert (storage / "lost+found").is_dir()

    for entry in (storage / "data").iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    run = start(storage)
    assert run.wait_report("started")["resumed_from"] is None
    checkpoint = run.wait_report("checkpoint")
    assert checkpoint["total"] == expected_total(checkpoint["steps"])
    first_steps = checkpoint["steps"]
    assert run.stop(signal.SIGTERM) == 0

    shutil.rmtree(storage)
    run = start(storage)
    assert run.wait_report("started")["resumed_from"] is None
    status = run.status()
    assert status["steps"] <= first_steps
    assert status["total"] == expected_total(status["steps"])


def test_a_copy_of_the_directory_resumes_elsewhere(
    start: Callable[..., Pipeline], tmp_path: Path
) -> None:
    final = checkpointed_and_stopped(start, tmp_path / "original")
    shutil.copytree(tmp_path / "original", tmp_path / "restored")
    run = start(tmp_path / "restored")
    assert run.wait_report("started")["resumed_from"] == final
    status = run.wait_status(lambda s: s["steps"] > final["steps"], "steps to continue")
    assert status["total"] == expected_total(status["steps"])


def test_ignore_sigterm_keeps_running(start: Callable[..., Pipeline], tmp_path: Path) -> None:
    run = start(tmp_path, "--ignore-sigterm")
    assert run.wait_report("started")["ignore_sigterm"] is True
    run.process.send_signal(signal.SIGTERM)
    at_signal = run.status()["steps"]
    run.wait_status(lambda s: s["steps"] >= at_signal + 10, "steps after SIGTERM")
    run.wait_report("checkpoint", count=len(of_kind(run.reports, "checkpoint")) + 1)
    assert run.process.poll() is None
    assert not of_kind(run.reports, "stopping")
    assert run.stop(signal.SIGKILL) == -signal.SIGKILL


def test_report_reads_logs_and_status_through_kubectl(
    start: Callable[..., Pipeline], tmp_path: Path
) -> None:
    """pipeline.report as other tests use it, with `kubectl logs`/`exec` played by the
    local process: the log's JSON lines among others, and `status` run as exec runs it."""
    run = start(tmp_path)
    run.wait_report("checkpoint")
    calls: list[tuple[str, ...]] = []

    def kubectl(
        *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        if args[0] == "logs":
            log = "a line from something else\n" + "".join(run.lines) + "{not json\n"
            return subprocess.CompletedProcess(args, 0, log, "")
        command = list(args[args.index("--") + 1 :])
        assert command[0] == report.BINARY
        command[0] = str(run.binary)
        return subprocess.run(command, capture_output=True, text=True, check=check)

    reports = report.events(kubectl, "pod", "ns")
    assert reports[0]["event"] == "started"
    assert report.of_kind(reports, "checkpoint")
    status = report.status(kubectl, "pod", "ns", port=run.port)
    assert status["total"] == expected_total(status["steps"])
    assert calls[1][:4] == ("exec", "pod", "-n", "ns")
