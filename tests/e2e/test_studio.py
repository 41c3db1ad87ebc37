"""The web studio in a real browser (Debian's Chromium through Playwright) against a real
``cinecloud serve`` with a local worker on ``cinecloud/shapes-t2v``: sign in, submit,
live progress with preview frames, playback through hls.js and as MP4, cancel, delete,
and the operators' view. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cinecloud.config import repo_root
from cinecloud.testing.service import Service

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api", reason="the dev extra installs playwright")
Browser, Page, expect = sync_api.Browser, sync_api.Page, sync_api.expect

CHROMIUM = Path(os.environ.get("CINECLOUD_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = repo_root() / "test-artifacts"
PROMPT = "a red star moving to the left on a sky background"
expect.set_options(timeout=30_000)  # CI machines are small and shared


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium), and CI must test it")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        # --no-sandbox: CI runs as root; the autoplay flag lets videos start unclicked
        args = ["--no-sandbox", "--autoplay-policy=no-user-gesture-required"]
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def sign_in(page: Any, svc: Service, key: str) -> None:
    page.goto(f"{svc.url}/")
    page.fill("#api-key", key)
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#view-create")).to_be_visible()


def submit(page: Any, steps: int, seed: int) -> None:
    page.fill("#f-prompt", PROMPT)
    page.fill("#f-steps", str(steps))
    page.fill("#f-seed", str(seed))
    page.click("#submit")


def wait_done(svc: Service, video_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with svc.client() as client:
        while time.monotonic() < deadline:
            video: dict[str, Any] = client.get(f"/v1/videos/{video_id}").json()
            if video["status"] in ("completed", "failed", "canceled"):
                return video
            time.sleep(0.1)
    raise TimeoutError(f"{video_id} did not finish:\n{svc.tail()}")


def playing(page: Any, player: str) -> None:
    """The gallery's video plays through ``player`` (its clock moves)."""
    video = page.locator("#detail video")
    expect(video).to_have_attribute("data-player", player)
    page.wait_for_function(
        "() => { const v = document.querySelector('#detail video');"
        " return v.currentTime > 0.25 && !v.paused && v.error === null; }",
        timeout=20_000,
    )


def test_a_bad_key_is_refused(page: Any, shapes_service: Service) -> None:
    page.goto(f"{shapes_service.url}/studio/")
    page.fill("#api-key", "cc-not-a-key")
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#signin-error")).to_contain_text("invalid_api_key")
    expect(page.locator("#nav")).to_be_hidden()


def test_submit_shows_progress_and_previews_then_plays_hls_and_mp4(
    page: Any, shapes_service: Service
) -> None:
    svc = shapes_service
    sign_in(page, svc, svc.admin_key)
    expect(page.locator("#f-model")).to_have_value("cinecloud/shapes-t2v")
    # every value the live panel's step takes, as it changes
    page.evaluate(
        """() => { window.steps = []; const live = document.getElementById('live');
        new MutationObserver(() => window.steps.push(Number(live.dataset.step)))
          .observe(live, {attributes: true, attributeFilter: ['data-step']}); }"""
    )
    submit(page, steps=8, seed=5)
    live = page.locator("#live")
    preview = live.locator("img.preview")
    expect(preview).to_be_visible()
    page.screenshot(path=ARTIFACTS / "studio-progress.png")
    expect(live).to_have_attribute("data-status", "completed", timeout=120_000)

    steps = page.evaluate("window.steps")
    assert steps == sorted(steps) and steps[-1] == 8 and len(set(steps)) >= 3, steps
    assert int(live.locator(".previews").inner_text()) >= 2
    assert preview.get_attribute("src").startswith("data:image/jpeg;base64,")
    assert page.evaluate("document.querySelector('#live img.preview').naturalWidth") == 64

    live.locator("[data-action=open]").click()
    detail = page.locator("#detail")
    expect(detail).to_have_attribute("data-status", "completed")
    playing(page, "hls.js")
    page.screenshot(path=ARTIFACTS / "studio-gallery-hls.png")
    detail.locator("[data-mode=mp4]").click()
    playing(page, "mp4")
    # the MP4 is H.264 at the model's display size
    assert page.evaluate("document.querySelector('#detail video').videoWidth") == 256
    page.screenshot(path=ARTIFACTS / "studio-gallery-mp4.png")
    assert "/cdn/" in (detail.locator("a.download").get_attribute("href") or "")
    assert "/cdn/" in (detail.locator("a.poster").get_attribute("href") or "")
    for stage in ("queue_wait", "denoise", "render", "upload"):
        expect(detail.locator(f".bar-row[data-stage={stage}]")).to_be_visible()

    # an HLS ladder that cannot load: the player falls back to the MP4
    page.route("**/hls/master.m3u8*", lambda route: route.fulfill(status=404))
    page.locator(f"#videos li[data-video-id={detail.get_attribute('data-video-id')}]").click()
    failed = re.compile("networkError")
    expect(page.locator("#detail video")).to_have_attribute("data-error", failed)
    playing(page, "mp4")


def test_cancel_mid_run_then_delete(page: Any, shapes_service: Service) -> None:
    svc = shapes_service
    sign_in(page, svc, svc.admin_key)
    submit(page, steps=100, seed=6)  # the model's most steps: long enough to cancel
    live = page.locator("#live")
    page.wait_for_function(
        "() => Number(document.getElementById('live').dataset.step || 0) >= 2", timeout=60_000
    )
    video_id = live.get_attribute("data-video-id")
    live.locator("[data-action=cancel]").click()
    expect(live).to_have_attribute("data-status", "canceled", timeout=10_000)
    page.screenshot(path=ARTIFACTS / "studio-canceled.png")
    video = wait_done(svc, video_id)
    assert video["status"] == "canceled" and video["outputs"] is None
    assert (video["step"] or 0) < 100

    page.click("nav [data-view=gallery]")
    item = page.locator(f"#videos li[data-video-id={video_id}]")
    expect(item).to_have_attribute("data-status", "canceled")
    item.click()
    delete = page.locator("#detail [data-action=delete]")
    delete.click()
    delete.click()  # the second click confirms
    expect(item).to_have_count(0)
    with svc.client() as client:
        assert client.get(f"/v1/videos/{video_id}").status_code == 404


def test_an_image_to_video_request_sends_its_image(
    page: Any, shapes_service: Service, tmp_path: Path
) -> None:
    import numpy as np
    from PIL import Image

    svc = shapes_service
    image = tmp_path / "boat.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 64, 3), np.uint8)).save(image)
    sign_in(page, svc, svc.admin_key)
    page.select_option("#f-model", "cinecloud/tiny-wan-i2v")
    expect(page.locator("#image-field")).to_be_visible()
    page.fill("#f-prompt", "a paper boat drifting")
    page.click("#submit")  # no image yet: the form itself refuses (the field is required)
    expect(page.locator("#live")).to_be_hidden()
    page.set_input_files("#f-image", str(image))
    page.click("#submit")
    live = page.locator("#live")
    expect(live).to_have_attribute("data-status", "queued")  # no worker here serves it
    video_id = live.get_attribute("data-video-id")
    with svc.client() as client:
        try:
            video = client.get(f"/v1/videos/{video_id}").json()
            assert (video["model"], video["prompt"]) == (
                "cinecloud/tiny-wan-i2v",
                "a paper boat drifting",
            )
            # the image arrived as input_reference, byte for byte
            digest = hashlib.sha256(image.read_bytes()).hexdigest()
            assert list((svc.home / "blobs").rglob(f"in/{digest}.png")), "input image not stored"
        finally:
            client.post(f"/v1/videos/{video_id}/cancel")
    expect(live).to_have_attribute("data-status", "canceled")


def test_ops_view_lists_the_worker_for_admins_only(
    page: Any, shapes_service: Service, user_key: str
) -> None:
    svc = shapes_service
    with svc.client() as client:  # a finished job, so the charts have a point
        job = client.post("/v1/videos", json={"prompt": PROMPT, "steps": 4, "seed": 7}).json()
        scaler = client.get("/v1/admin/autoscaler")
        autoscaler_off = scaler.status_code == 404 or scaler.json().get("enabled") is False
    assert wait_done(svc, job["id"])["status"] == "completed"

    sign_in(page, svc, svc.admin_key)
    page.click("#nav-ops")
    worker = page.locator("#ops-workers tr[data-worker-name=local-1]")
    expect(worker).to_be_visible()
    expect(worker).to_contain_text("cinecloud/shapes-t2v")
    expect(page.locator("#ops-latency canvas")).to_have_count(1)
    expect(page.locator("#ops-throughput canvas")).to_have_count(1)
    expect(page.locator("#ops-cost tr[data-model='cinecloud/shapes-t2v']")).to_be_visible()
    if autoscaler_off:
        expect(page.locator("#ops-autoscaler")).to_have_text("autoscaler off")
    page.screenshot(path=ARTIFACTS / "studio-ops.png", full_page=True)
    # an autoscaler's answer (the shape GET /v1/admin/autoscaler gives when one runs)
    decision = {
        "pool": "cinecloud/shapes-t2v",
        "at": time.time(),
        "desired": 2,
        "previous": 1,
        "on_demand": 1,
        "spot": 1,
        "target": 2,
        "reason": "backlog",
        "observed": {"queued": 5, "in_flight": 1, "workers": 1},
    }
    answer = {
        "object": "autoscaler",
        "enabled": True,
        "launcher": "local",
        "pools": [decision],
        "decisions": [decision],
    }
    page.route("**/v1/admin/autoscaler", lambda route: route.fulfill(json=answer))
    scaler_view = page.locator("#ops-autoscaler [data-autoscaler=on]")
    expect(scaler_view).to_contain_text("1 → 2")  # at the next refresh
    expect(scaler_view).to_contain_text("backlog")

    page.click("#sign-out")
    sign_in(page, svc, user_key)
    expect(page.locator("#nav-ops")).to_be_hidden()
    page.goto(f"{svc.url}/studio/#ops")
    expect(page.locator("#view-create")).to_be_visible()  # no ops view for this key
    expect(page.locator("#view-ops")).to_be_hidden()
