"""Real worker processes (parent + spawned child, fake runner) against the fake control plane."""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cinecloud.config import Config, load_config
from cinecloud.engine.registry import GenerationParams, ModelSpec
from cinecloud.engine.runner import RunResult, StepInfo
from cinecloud.testing.fake_control_plane import FakeControlPlane
from cinecloud.testing.fake_runner import FakeRunner
from cinecloud.workers import LocalLauncher
from cinecloud.workers.delivery import UPLOAD_THREADS

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
FAST = "cinecloud.testing.fake_runner:fake_runner_factory"  # 20 ms a step
SLOW = "cinecloud.testing.fake_runner:slow_fake_runner_factory"  # 0.5 s a step
STUBBORN = f"{Path(__file__).stem}:stubborn_runner_factory"  # ignores cancel
CRASHING = f"{Path(__file__).stem}:crashing_runner_factory"  # exits mid-run
PARAMS = {
    "prompt": "a paper boat on a pond",
    "negative_prompt": "",
    "width": 64,
    "height": 64,
    "num_frames": 9,
    "fps": 8,
    "steps": 4,
    "guidance_scale": 5.0,
    "seed": 42,
}


class _Misbehaving:
    """A fake runner that ignores cancel (``"hang"``) or dies after step 1 (``"crash"``)."""

    def __init__(self, spec: ModelSpec, mode: str) -> None:
        self._inner = FakeRunner(spec, step_s=0.1)
        self._mode = mode
        self.spec = spec

    def load(self) -> float:
        return self._inner.load()

    def run(
        self,
        params: GenerationParams,
        on_step: Callable[[StepInfo], None],
        should_cancel: Callable[[], bool],
    ) -> RunResult:
        if self._mode == "hang":
            return self._inner.run(params, on_step, lambda: False)

        def step_then_crash(info: StepInfo) -> None:
            on_step(info)
            if info.step == 1:
                os._exit(3)

        return self._inner.run(params, step_then_crash, should_cancel)


#: What the render writes for every job, besides the HLS ladder under ``hls/``.
RENDERED = {"video.mp4", "poster.jpg", "thumbnail.jpg", "spritesheet.jpg", "preview.webp"}


def rendered_names(artifacts: list[dict[str, Any]]) -> set[str]:
    """The artifact names outside ``hls/``; the ladder's master playlist must be there."""
    names = {str(a["name"]) for a in artifacts}
    assert "hls/master.m3u8" in names, names
    return {n for n in names if not n.startswith("hls/")}


def stubborn_runner_factory(spec: ModelSpec, cfg: Config) -> _Misbehaving:
    return _Misbehaving(spec, "hang")


def crashing_runner_factory(spec: ModelSpec, cfg: Config) -> _Misbehaving:
    return _Misbehaving(spec, "crash")


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def cp(tmp_path: Path) -> Iterator[FakeControlPlane]:
    with FakeControlPlane(tmp_path / "blobs", heartbeat_interval_s=0.5) as plane:
        yield plane


Launch = Callable[..., tuple[LocalLauncher, Config]]


@pytest.fixture
def launch(cp: FakeControlPlane, tmp_path: Path) -> Iterator[Launch]:
    launchers: list[LocalLauncher] = []

    def start(
        runner_factory: str, cancel_grace_s: float = 3.0, overlap: bool = True
    ) -> tuple[LocalLauncher, Config]:
        cfg = load_config(
            server={"home": tmp_path / "home"},
            delivery={"secret": "test"},
            queue={"lease_long_poll_s": 1.0},
            # worker mechanics against fake runners, on the tiny Wan's limits
            engine={"default_model": "cinecloud/tiny-wan"},
            worker={
                "token": cp.token,
                "runner_factory": runner_factory,
                "cancel_grace_s": cancel_grace_s,
                "overlap": overlap,
                "work_dir": tmp_path / "work",
            },
        )
        pythonpath = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": pythonpath}
        launcher = LocalLauncher(cfg, 1, server_url=cp.url, env=env)
        launchers.append(launcher)
        launcher.start()
        assert cp.wait_for(lambda: len(cp.workers) == 1, timeout=30), "worker never registered"
        return launcher, cfg

    yield start
    for launcher in launchers:
        launcher.stop(timeout=5)


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every live (not zombie) process."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is in the dev environment
        return _processes_from_proc()
    table = {}
    for p in psutil.process_iter(["ppid", "cmdline", "status"]):
        if p.info["status"] != psutil.STATUS_ZOMBIE:
            table[p.pid] = (p.info["ppid"], " ".join(p.info["cmdline"] or ()))
    return table


def _processes_from_proc() -> dict[int, tuple[int, str]]:
    table = {}
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, NotADirectoryError, ProcessLookupError):
            continue
        if entry.name.isdigit() and fields[0] != "Z":
            table[int(entry.name)] = (int(fields[1]), cmdline)
    return table


def descendants(pid: int) -> list[int]:
    """Live processes below ``pid`` (the engine child and multiprocessing's helper)."""
    table, found, frontier = _processes(), [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, (ppid, _) in table.items() if ppid == parent]
        found += kids
        frontier += kids
    return found


def _spawned_by(pid: int) -> list[int]:
    table = _processes()
    return [p for p, (ppid, cmd) in table.items() if ppid == pid and "spawn_main" in cmd]


def engine_children(pid: int) -> list[int]:
    """The worker's engine child (spawned by the worker process itself)."""
    return _spawned_by(pid)


def render_processes(pid: int) -> list[int]:
    """The render processes below the worker (each spawned by an engine child)."""
    return [r for child in engine_children(pid) for r in _spawned_by(child)]


def pid_alive(pid: int) -> bool:
    return pid in _processes()


def denoise_steps(cp: FakeControlPlane, job_id: str) -> list[int]:
    return [e["step"] for e in cp.job(job_id).events if e["stage"] == "denoise"]


def started(cp: FakeControlPlane, job_id: str) -> Callable[[], bool]:
    return lambda: any(step >= 1 for step in denoise_steps(cp, job_id))


def result_of(cp: FakeControlPlane, job_id: str) -> dict[str, Any]:
    result = cp.job(job_id).result
    assert result is not None, f"{job_id} was not completed"
    return result


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_dropped(cp: FakeControlPlane, job_id: str, work_dir: Path) -> None:
    """The job left nothing behind and reported nothing."""
    job = cp.job(job_id)
    assert job.result is None
    assert job.failures == []
    assert not (work_dir / job_id).exists()
    assert not list(cp.blob_dir.rglob(f"{job_id}/*"))


# ---------------------------------------------------------------- tests


def test_job_completes_with_artifacts_and_progress(
    launch: Launch, cp: FakeControlPlane, tmp_path: Path
) -> None:
    _, cfg = launch(FAST)
    first = cp.submit(PARAMS)
    second = cp.submit({**PARAMS, "seed": 7})
    assert cp.wait_for(lambda: cp.job(second).status == "completed", timeout=30)

    job = cp.job(first)
    assert job.status == "completed" and job.result is not None
    artifacts: list[dict[str, Any]] = job.result["artifacts"]
    assert rendered_names(artifacts) == RENDERED
    for art in artifacts:
        blob = cp.blob_dir / art["key"]
        assert art["size"] == blob.stat().st_size > 0
        assert art["sha256"] == sha256(blob)
    assert {a["content_type"] for a in artifacts} == {
        "video/mp4",
        "image/jpeg",
        "image/webp",
        "application/vnd.apple.mpegurl",
    }

    timings = job.result["timings"]
    stages = ("model_load", "text_encode", "denoise", "decode", "render", "upload")
    assert set(timings) == {*stages, "qc", "provenance"}  # the last two: parts of render
    assert timings["qc"] + timings["provenance"] <= timings["render"]
    assert job.result["qc"]["passed"] == 1 and job.result["qc"]["frames"] == PARAMS["num_frames"]
    assert timings["denoise"] > 0 and timings["render"] > 0 and timings["upload"] > 0
    assert result_of(cp, second)["timings"]["model_load"] == 0.0  # loaded once
    assert job.result["gpu_seconds"] >= timings["denoise"]
    assert job.result["seed"] == 42
    assert job.result["engine"] == {"device": "cpu", "dtype": "float32"}

    steps = denoise_steps(cp, first)
    assert steps == sorted(steps) and steps[-1] == PARAMS["steps"]
    assert len(set(steps)) == len(steps)
    stages_seen = [e["stage"] for e in job.events]
    assert stages_seen.index("render") < stages_seen.index("upload")
    assert not (cfg.worker.work_dir / first).exists()
    assert next(iter(cp.workers.values()))["models"] == ["cinecloud/tiny-wan"]
    assert next(iter(cp.workers.values()))["width"] == 1
    assert cp.lease_widths and set(cp.lease_widths) == {1}


@pytest.mark.parametrize(("overlap", "steps"), [(True, 4), (True, 1), (False, 4)])
def test_next_job_is_leased_while_the_last_one_renders(
    launch: Launch, cp: FakeControlPlane, overlap: bool, steps: int
) -> None:
    """With overlap the engine takes job n+1 as soon as job n's engine work is done, before
    job n is rendered, uploaded and completed; without it, one job at a time. At one
    step a job's engine work ends while the job before it still uploads: the lease of
    the job after it must not wait for that."""
    launch(FAST, overlap=overlap)
    jobs = [cp.submit({**PARAMS, "seed": seed, "steps": steps}) for seed in range(4)]
    assert cp.wait_for(lambda: all(cp.job(j).status == "completed" for j in jobs), timeout=60)
    order = sorted((cp.job(j) for j in jobs), key=lambda job: job.leased_at or 0.0)
    ahead = [
        (nxt.leased_at or 0.0) < (prev.completed_at or 0.0)
        for prev, nxt in itertools.pairwise(order)
    ]
    assert all(ahead) if overlap else not any(ahead), ahead
    for job in order:  # every job is whole, with its own seed and its progress reported
        assert job.attempt == 1 and job.result is not None
        reported = denoise_steps(cp, job.job_id)
        assert reported[0] <= 1 and reported[-1] == steps, reported
        assert rendered_names(job.result["artifacts"]) == RENDERED
    assert sorted(cp.job(j).result["seed"] for j in jobs) == [0, 1, 2, 3]  # type: ignore[index]


def test_cancel_mid_run_stops_the_child_within_grace(launch: Launch, cp: FakeControlPlane) -> None:
    launcher, cfg = launch(SLOW, cancel_grace_s=3.0)
    job_id = cp.submit({**PARAMS, "steps": 20})  # 10 s of work
    assert cp.wait_for(started(cp, job_id), timeout=30)
    assert (cfg.worker.work_dir / job_id).is_dir()
    child_before = engine_children(launcher.pids[0])

    cp.cancel(job_id)
    gone = cp.wait_for(lambda: not (cfg.worker.work_dir / job_id).exists(), timeout=2.0)
    assert gone, "job files still there 2 s after the cancel"
    assert_dropped(cp, job_id, cfg.worker.work_dir)
    assert max(denoise_steps(cp, job_id)) < 20
    # The child acknowledged the cancel itself: it was not killed and replaced.
    assert engine_children(launcher.pids[0]) == child_before


def test_hung_child_is_killed_and_replaced(launch: Launch, cp: FakeControlPlane) -> None:
    launcher, cfg = launch(STUBBORN, cancel_grace_s=0.5)
    hung = cp.submit({**PARAMS, "steps": 60})  # 6 s, deaf to cancel
    assert cp.wait_for(started(cp, hung), timeout=30)
    [old_child] = engine_children(launcher.pids[0])

    cp.cancel(hung)
    assert cp.wait_for(lambda: not pid_alive(old_child), timeout=2.5), "hung child not killed"
    assert cp.wait_for(lambda: not (cfg.worker.work_dir / hung).exists(), timeout=2.0)

    nxt = cp.submit({**PARAMS, "steps": 2})
    assert cp.wait_for(lambda: cp.job(nxt).status == "completed", timeout=30)
    [new_child] = engine_children(launcher.pids[0])
    assert new_child != old_child
    assert_dropped(cp, hung, cfg.worker.work_dir)
    assert result_of(cp, nxt)["timings"]["model_load"] > 0.0  # the fresh child loaded again


def test_child_crash_fails_retryable_and_respawns(launch: Launch, cp: FakeControlPlane) -> None:
    launcher, _ = launch(CRASHING)
    job_id = cp.submit(PARAMS)
    assert cp.wait_for(lambda: cp.job(job_id).status == "failed", timeout=30)
    job = cp.job(job_id)
    assert job.attempt == cp.max_attempts == 3  # each crash re-queued it, on a fresh child
    assert [f["code"] for f in job.failures] == ["worker_crashed"] * 3
    assert all(f["retryable"] for f in job.failures)
    assert cp.wait_for(lambda: len(engine_children(launcher.pids[0])) == 1, timeout=10)


def test_sigterm_gives_the_job_back_and_exits_cleanly(launch: Launch, cp: FakeControlPlane) -> None:
    launcher, cfg = launch(SLOW)
    job_id = cp.submit({**PARAMS, "steps": 20})
    assert cp.wait_for(started(cp, job_id), timeout=30)
    [worker] = launcher.pids
    kids = descendants(worker)
    assert len(engine_children(worker)) == 1

    assert launcher.stop(timeout=10) == [0]
    assert cp.wait_for(lambda: not any(pid_alive(pid) for pid in kids), timeout=2.0), kids
    assert launcher.alive() == 0
    assert_dropped(cp, job_id, cfg.worker.work_dir)
    # a preemption: the lease is given back at once and the attempt does not count
    job = cp.job(job_id)
    assert (job.status, job.attempt, job.failures) == ("queued", 0, [])
    assert [r["reason"] for r in job.releases] == ["preempted"]


def test_render_runs_in_its_own_process(launch: Launch, cp: FakeControlPlane) -> None:
    """The engine child hands each job's frames to a render process of its own; one that
    dies is replaced for the next job without touching the engine, and one killed with the
    engine child does not outlive it."""
    launcher, _ = launch(FAST)
    worker = launcher.pids[0]
    assert cp.wait_for(lambda: len(render_processes(worker)) == 1, timeout=30)
    [child], [render] = engine_children(worker), render_processes(worker)
    first = cp.submit(PARAMS)
    assert cp.wait_for(lambda: cp.job(first).status == "completed", timeout=30)
    # the frames file that crossed to the render process is not one of them
    assert rendered_names(result_of(cp, first)["artifacts"]) == RENDERED

    os.kill(render, signal.SIGKILL)
    assert cp.wait_for(lambda: not pid_alive(render), timeout=5)
    second = cp.submit({**PARAMS, "seed": 7})
    assert cp.wait_for(lambda: cp.job(second).status == "completed", timeout=30)
    assert cp.job(second).attempt == 1 and cp.job(second).failures == []
    assert engine_children(worker) == [child]  # the engine was not replaced
    [fresh] = render_processes(worker)
    assert fresh != render

    os.kill(child, signal.SIGKILL)
    assert cp.wait_for(lambda: not pid_alive(fresh), timeout=5), "render process outlived"


def test_render_process_death_fails_its_job_retryable(launch: Launch, cp: FakeControlPlane) -> None:
    """A job held by a render process that dies goes back to the queue and completes on its
    next attempt, on the same engine."""
    launcher, _ = launch(FAST)
    worker = launcher.pids[0]
    assert cp.wait_for(lambda: len(render_processes(worker)) == 1, timeout=30)
    [child], [render] = engine_children(worker), render_processes(worker)
    os.kill(render, signal.SIGSTOP)  # the job waits in it, surely held
    try:
        job_id = cp.submit(PARAMS)
        rendering = lambda: any(e["stage"] == "render" for e in cp.job(job_id).events)  # noqa: E731
        assert cp.wait_for(rendering, timeout=30)
    finally:
        os.kill(render, signal.SIGKILL)
    assert cp.wait_for(lambda: cp.job(job_id).status == "completed", timeout=30)
    job = cp.job(job_id)
    assert [(f["code"], f["retryable"]) for f in job.failures] == [("worker_crashed", True)]
    assert job.attempt == 2
    assert engine_children(worker) == [child]


def test_child_crash_returns_both_held_jobs(launch: Launch, cp: FakeControlPlane) -> None:
    """A one-step job's last step leases the next job ahead; the engine dies right after
    it, so each crash gives back both the running job and the one leased ahead."""
    launch(CRASHING)
    jobs = [cp.submit({**PARAMS, "steps": 1, "seed": seed}) for seed in range(2)]
    assert cp.wait_for(lambda: all(cp.job(j).status == "failed" for j in jobs), timeout=60)
    for job_id in jobs:
        job = cp.job(job_id)
        assert job.attempt == cp.max_attempts
        assert {(f["code"], f["retryable"]) for f in job.failures} == {("worker_crashed", True)}


def test_a_jobs_files_upload_together(launch: Launch, cp: FakeControlPlane) -> None:
    """Each PUT takes 0.5 s: the job's files one after another would take several s."""
    cp.put_delay_s = 0.5
    launch(FAST)
    job_id = cp.submit(PARAMS)
    assert cp.wait_for(lambda: cp.job(job_id).status == "completed", timeout=30)
    result = result_of(cp, job_id)
    assert 9 <= len(result["artifacts"]) <= UPLOAD_THREADS
    assert 0.5 <= result["timings"]["upload"] < 1.0, result["timings"]


def test_progress_events_carry_preview_frames(launch: Launch, cp: FakeControlPlane) -> None:
    import base64
    import io

    import numpy as np
    from PIL import Image

    from cinecloud.engine.registry import GenerationParams
    from cinecloud.testing.fake_runner import fake_frames

    launch(FAST)  # 20 ms a step: the first step and the last get a preview (1 s apart)
    job_id = cp.submit(PARAMS)
    assert cp.wait_for(lambda: cp.job(job_id).status == "completed", timeout=30)
    previews = [e for e in cp.job(job_id).events if "preview" in e]
    steps = [e["step"] for e in previews]
    assert {e["stage"] for e in previews} == {"denoise"}
    # (a slow machine may fit one more in between)
    assert steps[0] == 1 and steps[-1] == PARAMS["steps"] and steps == sorted(set(steps))
    head, _, data = previews[-1]["preview"].partition(",")
    assert head == "data:image/jpeg;base64"
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"), np.int16)
    # the engine's middle frame, through JPEG (its sharp wrap-arounds cost some accuracy)
    expected = fake_frames(GenerationParams(**PARAMS))[PARAMS["num_frames"] // 2]
    assert image.shape == expected.shape
    assert np.abs(image - expected.astype(np.int16)).mean() < 16
    other = fake_frames(GenerationParams(**{**PARAMS, "seed": 1}))[PARAMS["num_frames"] // 2]
    assert np.abs(image - other.astype(np.int16)).mean() > 60  # another video's is far off
