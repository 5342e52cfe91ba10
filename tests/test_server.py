"""The localization server end to end, in process (FastAPI's TestClient), on the tiny over-fitted map:
every endpoint, auth, limits, sessions, queueing, micro-batches, fuzzed requests and the client."""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sceneloc.cli.main import main
from sceneloc.cli.serve import is_local_host, map_names, server_token
from sceneloc.data.dataset import load_scene
from sceneloc.errors import SceneLocError
from sceneloc.geometry import invert_pose, pose_errors, quaternion_to_matrix
from sceneloc.localize.tracking import TrackingConfig
from sceneloc.service.batching import predict_batch
from sceneloc.service.client import Client, ServerError
from sceneloc.service.request import RequestError, decode_depth, image_size
from sceneloc.service.server import Job, LocalizationService, ServerConfig, create_app

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def frames(overfit_scene):
    return load_scene(overfit_scene).frames("train")


def make_service(the_map, **limits) -> LocalizationService:
    # the tiny map's surface is sparse: a lenient tracking gate (test_tracking.py says why)
    return LocalizationService({"tiny": the_map}, ServerConfig(**limits),
                               tracking=TrackingConfig(min_matched=0.1, min_view_inliers=30))


@pytest.fixture(scope="module")
def http(the_map):
    with TestClient(create_app(make_service(the_map, max_request_bytes=1 << 20), TOKEN)) as c:
        yield c


def png_header_only(width: int, height: int, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    """A PNG signature and IHDR claiming ``width x height``, no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def assert_one_line_error(response, status: int | None = None) -> None:
    if status is None:
        assert 400 <= response.status_code < 500, (response.status_code, response.text)
    else:
        assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"] and "\n" not in body["error"]


# ---------------------------------------------------------------------------------------- endpoints


def test_health_needs_no_token_and_everything_else_does(http):
    assert http.get("/healthz").json() == {"status": "ok", "maps": 1}
    for method, path in (("GET", "/v1/maps"), ("GET", "/metrics"), ("POST", "/v1/sessions"), ("POST", "/v1/localize")):
        assert_one_line_error(http.request(method, path), 401)
        assert_one_line_error(http.request(method, path, headers={"Authorization": "Bearer wrong"}), 401)
        assert_one_line_error(http.request(method, path, headers={"Authorization": TOKEN}), 401)
    maps = http.get("/v1/maps", headers=AUTH).json()["maps"]
    assert [m["name"] for m in maps] == ["tiny"] and maps[0]["image_size"] == [120, 160]
    assert maps[0]["depth_surface"] and maps[0]["image_view"]


def test_localize_rgbd_and_rgb_return_the_frame_pose(http, frames):
    frame = frames[0]
    image, depth = frame.image_path.read_bytes(), frame.depth_path.read_bytes()
    for files in ({"image": image, "depth": depth}, {"image": image}):
        r = http.post("/v1/localize", headers=AUTH, files=files)
        assert r.status_code == 200, r.text
        body = r.json()
        pose = np.array(body["pose"])
        assert pose.shape == (4, 4) and pose_errors(pose, frame.pose)[1] < 0.05
        # qvec/tvec: world-to-camera, the pose-file convention
        T_cw = invert_pose(pose)
        assert np.allclose(quaternion_to_matrix(np.array(body["qvec"])), T_cw[:3, :3], atol=1e-6)
        assert np.allclose(body["tvec"], T_cw[:3, 3], atol=1e-6)
        assert body["failure"] is None and body["inliers"] > 0 and body["map"] == "tiny"
        assert body["timings_ms"]["network"] > 0 and body["timings_ms"]["server"] >= body["timings_ms"]["total"]
        assert body["probability"] is None or 0 <= body["probability"] <= 1


def test_explicit_intrinsics_map_and_unknown_map(http, frames):
    frame = frames[0]
    K = frame.K
    data = {"intrinsics": f"{K[0, 0]},{K[1, 1]},{K[0, 2]},{K[1, 2]}", "map": "tiny"}
    r = http.post("/v1/localize", headers=AUTH, files={"image": frame.image_path.read_bytes()}, data=data)
    assert r.status_code == 200 and r.json()["pose"] is not None
    r = http.post("/v1/localize", headers=AUTH, files={"image": frame.image_path.read_bytes()}, data={"map": "../x"})
    assert_one_line_error(r, 404)
    for bad in ("1,2,3", "0,1,2,3", "nan,1,2,3", "/etc/passwd"):
        r = http.post("/v1/localize", headers=AUTH, files={"image": frame.image_path.read_bytes()},
                      data={"intrinsics": bad})
        assert_one_line_error(r, 400)


def test_sessions_track_frames_after_the_first(http, frames):
    sid = http.post("/v1/sessions", headers=AUTH).json()["session"]
    answers = []
    for frame in [frames[0], frames[0], frames[1], frames[1]]:
        files = {"image": frame.image_path.read_bytes(), "depth": frame.depth_path.read_bytes()}
        r = http.post("/v1/localize", headers=AUTH, files=files, data={"session": sid})
        assert r.status_code == 200, r.text
        answers.append(r.json())
        assert pose_errors(np.array(r.json()["pose"]), frame.pose)[1] < 0.05
    assert answers[0]["tracked"] is False and answers[1]["tracked"] is True
    assert answers[1]["timings_ms"]["network"] == 0.0
    assert http.delete(f"/v1/sessions/{sid}", headers=AUTH).json()["status"] == "closed"
    r = http.post("/v1/localize", headers=AUTH, files={"image": frames[0].image_path.read_bytes()},
                  data={"session": sid})
    assert_one_line_error(r, 404)
    assert_one_line_error(http.delete("/v1/sessions/nope", headers=AUTH), 404)
    assert_one_line_error(http.post("/v1/sessions", headers=AUTH, json={"map": "other"}), 404)
    assert_one_line_error(http.post("/v1/sessions", headers={**AUTH, "content-type": "application/json"},
                                    content=b"{not json"), 400)


def test_two_maps_need_a_name_unless_a_session_names_one(the_map, frames):
    service = LocalizationService({"a": the_map, "b": the_map}, tracking=TrackingConfig(min_matched=0.1))
    image = frames[0].image_path.read_bytes()
    with TestClient(create_app(service, None)) as c:
        assert [m["name"] for m in c.get("/v1/maps").json()["maps"]] == ["a", "b"]
        assert_one_line_error(c.post("/v1/localize", files={"image": image}), 400)
        sid = c.post("/v1/sessions", json={"map": "b"}).json()["session"]
        r = c.post("/v1/localize", files={"image": image}, data={"session": sid})
        assert r.status_code == 200 and r.json()["map"] == "b"
        assert_one_line_error(c.post("/v1/localize", files={"image": image}, data={"session": sid, "map": "a"}), 400)
        assert_one_line_error(c.post("/v1/sessions", json={"map": 3}), 400)


def test_metrics_count_requests_latency_queue_and_failures(http, frames):
    http.post("/v1/localize", headers=AUTH, files={"image": b"garbage"})
    text = http.get("/metrics", headers=AUTH).text
    assert 'sceneloc_requests_total{endpoint="/v1/localize",status="200"}' in text
    assert 'sceneloc_requests_total{endpoint="/v1/localize",status="415"}' in text
    assert "sceneloc_request_seconds_bucket" in text and "sceneloc_queue_depth" in text
    assert "sceneloc_batch_size_count" in text


# ------------------------------------------------------------------------------------------- limits


def test_a_huge_image_is_refused_from_its_header(http):
    r = http.post("/v1/localize", headers=AUTH, files={"image": png_header_only(100_000, 100_000)})
    assert_one_line_error(r, 413)
    assert "100000x100000" in r.json()["error"]
    assert image_size(png_header_only(640, 480)) == (640, 480)


def test_request_size_limit_and_content_types(http, frames):
    big = frames[0].image_path.read_bytes() + b"\0" * (1 << 20)
    assert_one_line_error(http.post("/v1/localize", headers=AUTH, files={"image": big}), 413)
    assert_one_line_error(http.post("/v1/localize", headers=AUTH, json={"image": "x"}), 415)
    assert_one_line_error(http.post("/v1/localize", headers=AUTH, files={"depth": b"x"}), 400)
    assert_one_line_error(http.post("/v1/localize", headers=AUTH, files={"image": b"x", "other": b"y"}), 400)


def test_truncated_and_mismatched_images_are_refused(http, frames):
    image = frames[0].image_path.read_bytes()
    depth = frames[0].depth_path.read_bytes()
    assert_one_line_error(http.post("/v1/localize", headers=AUTH, files={"image": image[: len(image) // 2]}), 400)
    ok, jpeg = cv2.imencode(".jpg", cv2.imread(str(frames[0].image_path)))
    jpeg = jpeg.tobytes()
    assert http.post("/v1/localize", headers=AUTH, files={"image": jpeg}).status_code == 200
    assert_one_line_error(http.post("/v1/localize", headers=AUTH, files={"image": jpeg[:-400]}), 400)
    # an 8-bit depth, a colour "depth" and a depth of another size
    assert_one_line_error(http.post("/v1/localize", headers=AUTH, files={"image": image, "depth": image}), 400)
    small = cv2.imencode(".png", np.zeros((60, 80), np.uint16))[1].tobytes()
    assert_one_line_error(http.post("/v1/localize", headers=AUTH, files={"image": image, "depth": small}), 400)
    assert decode_depth(depth, (120, 160), 10**6).shape == (120, 160)
    with pytest.raises(RequestError, match="16-bit"):
        decode_depth(cv2.imencode(".png", np.zeros((120, 160), np.uint8))[1].tobytes(), (120, 160), 10**6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.one_of(st.binary(max_size=300),
                         st.builds(lambda n, junk: b"\x89PNG\r\n\x1a\n" + junk[:n], st.integers(0, 64),
                                   st.binary(max_size=64)),
                         st.builds(lambda junk: b"\xff\xd8\xff" + junk, st.binary(max_size=200)),
                         st.builds(png_header_only, st.integers(0, 70_000), st.integers(0, 70_000))),
       content_type=st.sampled_from(["image/png", "image/jpeg", "text/plain", "application/octet-stream"]),
       field=st.sampled_from(["image", "depth"]))
def test_fuzzed_requests_get_a_4xx_and_the_next_valid_request_is_served(http, frames, payload, content_type, field):
    files = {field: ("f", payload, content_type)}
    if field == "depth":
        files["image"] = ("i.png", frames[0].image_path.read_bytes(), "image/png")
    assert_one_line_error(http.post("/v1/localize", headers=AUTH, files=files))


def test_after_fuzzing_a_valid_request_is_still_served(http, frames):
    for raw in (b"", b"--x\r\n", b"\x00" * 100):
        r = http.post("/v1/localize", headers={**AUTH, "content-type": "multipart/form-data; boundary=x"},
                      content=raw)
        assert_one_line_error(r)
    r = http.post("/v1/localize", headers=AUTH, files={"image": frames[0].image_path.read_bytes()})
    assert r.status_code == 200 and r.json()["pose"] is not None


def test_a_full_queue_answers_503_and_a_slow_request_times_out(the_map, frames):
    service = make_service(the_map, queue_size=1, timeout_s=0.2)
    image = frames[0].image_path.read_bytes()

    async def scenario():
        service.queue = asyncio.Queue(maxsize=1)   # no workers started: nothing leaves the queue
        loop = asyncio.get_running_loop()
        first = asyncio.create_task(service.localize(Job("tiny", image, None, None, None, loop.create_future())))
        await asyncio.sleep(0.01)
        with pytest.raises(RequestError) as full:
            await service.localize(Job("tiny", image, None, None, None, loop.create_future()))
        with pytest.raises(RequestError) as late:
            await first
        return full.value, late.value

    full, late = asyncio.run(scenario())
    assert full.status == 503 and "queue full" in full.message
    assert late.status == 503 and "timed out" in late.message
    app = create_app(service, None)
    with TestClient(app) as c:   # the HTTP answer carries Retry-After; no token on loopback: open
        service.queue = asyncio.Queue(maxsize=1)
        service.queue.put_nowait(None)  # type: ignore[arg-type]   # full, and its workers never see it
        for task in service.tasks:
            task.cancel()
        r = c.post("/v1/localize", files={"image": image})
        assert_one_line_error(r, 503)
        assert r.headers["retry-after"] == "1"


def test_concurrent_requests_share_network_passes(the_map, frames):
    images = [f.load_image() for f in frames]
    batched = predict_batch(the_map, images)
    for image, pred in zip(images, batched, strict=True):
        alone = the_map.predict(image, confidence=False)
        assert np.allclose(pred.coords, alone.coords, atol=1e-4) and np.array_equal(pred.pixels, alone.pixels)
    with pytest.raises(ValueError, match="one size"):
        predict_batch(the_map, [images[0], images[0][:60]])
    # through the service: four requests queued at once run as one batch
    service = make_service(the_map, max_batch=4, batch_wait_ms=50)
    with TestClient(create_app(service, None)) as c:
        async def four():
            loop = asyncio.get_running_loop()
            jobs = [Job("tiny", frames[i % 2].image_path.read_bytes(), None, None, None, loop.create_future())
                    for i in range(4)]
            return await asyncio.gather(*(service.localize(j) for j in jobs))
        results = c.portal.call(four)
        assert all(r.pose is not None for r in results)
        text = c.get("/metrics").text
    assert "sceneloc_batch_size_count 1.0" in text and "sceneloc_batch_size_sum 4.0" in text


# ------------------------------------------------------------------------------------------- client


def test_client_localizes_arrays_files_and_raises_server_errors(http, frames, tmp_path):
    client = Client("http://testserver", TOKEN, http=http)
    frame = frames[0].load()
    assert client.health()["status"] == "ok" and client.maps()[0]["name"] == "tiny"
    res = client.localize(frame.image, depth=frame.depth, intrinsics=frame.K)
    assert res.pose is not None and pose_errors(res.pose, frame.pose)[1] < 0.05
    assert res.tvec is not None and np.allclose(invert_pose(res.pose)[:3, 3], res.tvec, atol=1e-6)
    sid = client.new_session()
    first = client.localize(frames[0].image_path, depth=frames[0].depth_path, session=sid)
    second = client.localize(str(frames[0].image_path), depth=frames[0].depth_path.read_bytes(), session=sid)
    assert first.tracked is False and second.tracked is True
    client.close_session(sid)
    with pytest.raises(ServerError) as e:
        client.localize(b"not an image")
    assert e.value.status == 415
    with pytest.raises(ServerError) as e:
        Client("http://testserver", "wrong", http=http).maps()
    assert e.value.status == 401
    http.headers.pop("Authorization", None)   # the client set it on the shared test client


def test_the_client_imports_without_torch():
    code = "import sys, sceneloc.service.client; assert 'torch' not in sys.modules and 'fastapi' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]


# ------------------------------------------------------------------------------------------ command


def test_serve_refuses_an_open_host_without_a_token(monkeypatch, tmp_path):
    monkeypatch.delenv("SCENELOC_TOKEN", raising=False)
    assert is_local_host("127.0.0.1") and is_local_host("::1") and is_local_host("localhost")
    assert not is_local_host("0.0.0.0") and not is_local_host("example.org")
    assert server_token(None, "127.0.0.1") is None
    with pytest.raises(SceneLocError, match="--token"):
        server_token(None, "0.0.0.0")
    monkeypatch.setenv("SCENELOC_TOKEN", "from-env")
    assert server_token(None, "0.0.0.0") == "from-env" and server_token("given", "0.0.0.0") == "given"
    (tmp_path / "a" / "kitchen").mkdir(parents=True)
    (tmp_path / "b" / "kitchen").mkdir(parents=True)
    with pytest.raises(SceneLocError, match="second map named 'kitchen'"):
        map_names([str(tmp_path / "a" / "kitchen"), str(tmp_path / "b" / "kitchen")])


def test_serve_command_answers_one_line_errors(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing"), "--host", "0.0.0.0"]) == 2
    assert main(["serve", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--token" in err[0] and "missing" in err[1] and "map directory does not exist" in err[1]


@pytest.mark.slow
def test_sceneloc_serve_answers_over_loopback(tiny_map, frames):
    # the real command on uvicorn, a real socket on 127.0.0.1, the client over HTTP
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "sceneloc.cli", "serve", str(tiny_map), "--port", str(port),
                             "--token", TOKEN], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        with Client(url, TOKEN) as client:
            res = client.localize(frames[0].image_path, depth=frames[0].depth_path)
            assert res.pose is not None and pose_errors(res.pose, frames[0].pose)[1] < 0.05
        assert httpx.get(f"{url}/v1/maps", timeout=5).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # uvicorn shuts down and re-raises the SIGTERM it caught: a crash would exit with 1
    assert proc.returncode in (0, -signal.SIGTERM)
