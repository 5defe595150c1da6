"""mp4 writing (atomic, with metadata), video reading, image loading and fitting."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from ltx_core import video
from ltx_core.errors import SettingsError

REPO = Path(__file__).resolve().parent.parent
# Lossy H.264 at near-lossless quality on smooth frames: the mean error stays small.
MEAN_ABS_ERROR = 0.03


def smooth_frames(count: int = 9, height: int = 32, width: int = 64) -> torch.Tensor:
    """A moving colour gradient: smooth enough for H.264 to keep it nearly exact."""
    y = torch.linspace(0, 1, height)[:, None]
    x = torch.linspace(0, 1, width)[None, :]
    frames = [
        torch.stack([x.expand(height, width), y.expand(height, width), torch.full((height, width), t / count)], -1)
        for t in range(count)
    ]
    return torch.stack(frames)


def test_written_mp4_decodes_to_the_same_frame_count_size_and_content(tmp_path):
    """A broken encoder setup (wrong size, frame drops at flush) fails this."""
    frames = smooth_frames()
    out = video.write_mp4(frames, tmp_path / "clip.mp4", fps=24)
    decoded = video.read_video_frames(out)
    assert decoded.shape == frames.shape
    assert (decoded - frames).abs().mean() < MEAN_ABS_ERROR


def test_uint8_frames_are_accepted_as_they_are(tmp_path):
    frames = (smooth_frames(count=2) * 255).round().to(torch.uint8).numpy()
    out = video.write_mp4(frames, tmp_path / "clip.mp4", fps=8)
    assert video.read_video_frames(out).shape == (2, 32, 64, 3)


def test_frame_rate_is_stored_in_the_stream(tmp_path):
    import av

    out = video.write_mp4(smooth_frames(count=3), tmp_path / "clip.mp4", fps=24)
    with av.open(str(out)) as container:
        assert container.streams.video[0].average_rate == 24


def test_metadata_is_stored_as_container_tags_the_way_comfyui_reads_them(tmp_path):
    """ComfyUI reopens a workflow from the `prompt`/`workflow` tags: they must be JSON text."""
    workflow = {"nodes": [{"id": 1, "type": "LTXVSampler"}], "links": []}
    prompt = {"1": {"class_type": "LTXVSampler", "inputs": {"seed": 0}}}
    out = video.write_mp4(
        smooth_frames(count=2),
        tmp_path / "clip.mp4",
        fps=24,
        metadata={"prompt": prompt, "workflow": workflow, "comment": "made by ltx_core"},
    )
    tags = video.read_video_metadata(out)
    assert json.loads(tags["prompt"]) == prompt
    assert json.loads(tags["workflow"]) == workflow
    assert tags["comment"] == "made by ltx_core"


def test_existing_output_is_refused_without_overwrite_and_left_untouched(tmp_path):
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"old")
    with pytest.raises(SettingsError, match="already exists; pass overwrite=True"):
        video.write_mp4(smooth_frames(count=2), target, fps=24)
    assert target.read_bytes() == b"old"


def test_an_unknown_x264_preset_is_refused_before_any_file_is_written(tmp_path):
    with pytest.raises(SettingsError, match="x264 preset 'placebo': allowed medium, fast, veryfast"):
        video.write_mp4(smooth_frames(count=2), tmp_path / "clip.mp4", fps=24, x264_preset="placebo")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_replaced_with_overwrite(tmp_path):
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"old")
    video.write_mp4(smooth_frames(count=2), target, fps=24, overwrite=True)
    assert video.read_video_frames(target).shape[0] == 2


def test_missing_output_folder_is_refused_before_any_work(tmp_path):
    with pytest.raises(SettingsError, match="output folder .*nowhere.* does not exist"):
        video.check_output_path(tmp_path / "nowhere" / "clip.mp4")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_output_folder_is_refused_before_any_work(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(SettingsError, match="is not writable"):
            video.check_output_path(folder / "clip.mp4")
    finally:
        folder.chmod(0o700)


def test_output_path_that_is_a_folder_or_not_mp4_is_refused(tmp_path):
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(SettingsError, match="is a folder"):
        video.check_output_path(tmp_path / "dir.mp4")
    with pytest.raises(SettingsError, match=r"must end in \.mp4"):
        video.check_output_path(tmp_path / "clip.avi")


def test_interrupt_while_encoding_leaves_no_partial_file(tmp_path, monkeypatch):
    """Ctrl-C during encoding must not leave clip.mp4 nor the temporary file (BAD_INPUTS 24)."""
    real_from_ndarray = av.VideoFrame.from_ndarray
    calls = []

    def interrupt_on_third_frame(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_from_ndarray(*args, **kwargs)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", interrupt_on_third_frame)
    with pytest.raises(KeyboardInterrupt):
        video.write_mp4(smooth_frames(count=5), tmp_path / "clip.mp4", fps=24)
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"old")

    def fail(*args, **kwargs):
        raise RuntimeError("encoder failed")

    monkeypatch.setattr(video, "_encode", fail)
    with pytest.raises(RuntimeError, match="encoder failed"):
        video.write_mp4(smooth_frames(count=2), target, fps=24, overwrite=True)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_mpeg4_fallback_writes_a_decodable_file_where_libx264_is_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(video, "PREFERRED_CODECS", ("no-such-encoder", "mpeg4"))
    out = video.write_mp4(smooth_frames(count=3), tmp_path / "clip.mp4", fps=24)
    import av

    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
    assert video.read_video_frames(out).shape == (3, 32, 64, 3)


@pytest.mark.parametrize(
    ("frames", "fps", "message"),
    [
        (torch.zeros(2, 32, 64), 24, r"expected \(frames >= 1, height, width, 3\)"),
        (torch.zeros(0, 32, 64, 3), 24, r"expected \(frames >= 1"),
        (torch.zeros(2, 33, 64, 3), 24, "odd side"),
        (torch.zeros(2, 32, 64, 3), 0, "fps 0 must be a positive finite number"),
        (torch.zeros(2, 32, 64, 3), float("nan"), "fps nan must be a positive"),
    ],
)
def test_bad_frames_or_frame_rate_are_refused_and_write_nothing(tmp_path, frames, fps, message):
    with pytest.raises(SettingsError, match=message):
        video.write_mp4(frames, tmp_path / "clip.mp4", fps=fps)
    assert list(tmp_path.iterdir()) == []


def test_reading_a_missing_or_non_video_file_says_so(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        video.read_video_frames(tmp_path / "none.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 10)
    with pytest.raises(SettingsError, match="could not be opened"):
        video.read_video_frames(junk)


# ---------------------------------------------------------------- images


def save_image(tmp_path, mode: str, name: str = "image.png", size=(6, 4)) -> tuple:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(rgb).convert(mode)
    path = tmp_path / name
    image.save(path)
    return path, image


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "LA"])
def test_images_of_every_colour_mode_load_as_rgb_floats(tmp_path, mode):
    path, image = save_image(tmp_path, mode)
    loaded = video.load_image(path)
    assert loaded.shape == (4, 6, 3) and loaded.dtype == torch.float32
    expected = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    np.testing.assert_allclose(loaded.numpy(), expected, atol=1e-6)


def test_palette_image_with_transparency_loads_without_warning(tmp_path):
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.info["transparency"] = 0
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = video.load_image(path)
    assert torch.allclose(loaded[0, 0], torch.tensor([1.0, 0.0, 0.0]))


def test_sixteen_bit_grayscale_keeps_its_range(tmp_path):
    gray = np.array([[0, 65535], [32768, 65535]], dtype=np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(gray).save(path)
    loaded = video.load_image(path)
    assert loaded.shape == (2, 2, 3)
    assert loaded[0, 1, 0] == 1.0 and abs(loaded[1, 0, 2] - 0.5) < 1e-3


def test_missing_image_not_an_image_and_corrupt_image_each_say_so(tmp_path):
    with pytest.raises(SettingsError, match="image .*missing.png.* does not exist"):
        video.load_image(tmp_path / "missing.png")
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(SettingsError, match="is not an image PIL can read"):
        video.load_image(text)
    path, _ = save_image(tmp_path, "RGB", "big.jpg", size=(64, 64))
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(SettingsError, match="corrupt or truncated"):
        video.load_image(path)


def test_resize_center_crop_of_a_wider_image_cuts_the_sides_equally():
    """A 3-column-wide band in the middle must stay in the middle after fitting."""
    image = torch.zeros(4, 12, 3)
    image[:, 4:8] = 1.0  # middle third of a 3:1 image
    with pytest.warns(UserWarning, match="12x4 was center-cropped to the aspect of 4x4"):
        fitted = video.resize_center_crop(image, width=4, height=4)
    assert fitted.shape == (4, 4, 3)
    assert torch.allclose(fitted, torch.ones(4, 4, 3))


def test_resize_center_crop_of_a_taller_image_cuts_top_and_bottom():
    image = torch.zeros(12, 4, 3)
    image[4:8] = 1.0
    with pytest.warns(UserWarning):
        fitted = video.resize_center_crop(image, width=4, height=4)
    assert torch.allclose(fitted, torch.ones(4, 4, 3))


def test_resize_center_crop_of_the_right_size_returns_the_image_unchanged_and_silently():
    image = torch.rand(8, 16, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert video.resize_center_crop(image, width=16, height=8) is image


def test_resize_center_crop_scales_a_same_aspect_image_without_cropping():
    image = torch.rand(16, 32, 3)
    with pytest.warns(UserWarning):
        fitted = video.resize_center_crop(image, width=16, height=8)
    assert fitted.shape == (8, 16, 3)
    # bilinear halving without antialias samples between pixel pairs: mean of a 2x2 block
    expected = image.reshape(8, 2, 16, 2, 3).mean(dim=(1, 3))
    assert torch.allclose(fitted, expected, atol=1e-6)


def test_the_written_video_gets_the_usual_file_permissions_not_a_temp_files(tmp_path):
    """A user's mp4 must be readable by others as any file they make (umask 022 -> 0644)."""
    old_mask = os.umask(0o022)
    try:
        path = video.write_mp4(torch.rand(9, 32, 32, 3), tmp_path / "clip.mp4", fps=8)
    finally:
        os.umask(old_mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


# ---------------------------------------------------------------- part files a killed run left


def part(folder, name: str, age_s: float = 3600.0):
    path = folder / name
    path.write_bytes(b"half a video")
    os.utime(path, (time.time() - age_s,) * 2)
    return path


def test_only_old_unlocked_part_files_of_the_same_output_are_removed(tmp_path):
    stale = part(tmp_path, ".clip.0123abcd.part")
    kept = [
        part(tmp_path, ".clip.0123abcd.part.bak"),
        part(tmp_path, ".clip.0123ABCD.part"),
        part(tmp_path, ".clip.0123abc.part"),
        part(tmp_path, ".clip2.0123abcd.part"),
        part(tmp_path, "clip.0123abcd.part"),
    ]
    young = part(tmp_path, ".clip.fedcba98.part", age_s=1.0)
    link = tmp_path / ".clip.11111111.part"
    link.symlink_to(kept[0])
    os.utime(link, (time.time() - 3600,) * 2, follow_symlinks=False)
    with pytest.warns(UserWarning, match=r"removed .*\.clip\.0123abcd\.part', a partial file an interrupted run left"):
        assert video.remove_stale_parts(tmp_path / "clip.mp4") == [stale]
    assert not stale.exists() and young.exists() and link.is_symlink()
    assert all(path.exists() for path in kept[:5])


@pytest.mark.skipif(video.fcntl is None, reason="no POSIX locks here: Windows refuses to delete an open file")
def test_a_part_file_whose_writer_holds_its_lock_is_left_alone(tmp_path):
    name, lock = video._new_hidden_file(tmp_path / "clip.mp4")
    os.utime(name, (time.time() - 3600,) * 2)  # even an old one: a live writer holds the lock
    try:
        assert video.remove_stale_parts(tmp_path / "clip.mp4") == []
    finally:
        lock.close()
    with pytest.warns(UserWarning, match="removed"):
        assert [str(p) for p in video.remove_stale_parts(tmp_path / "clip.mp4")] == [name]


@pytest.mark.skipif(video.fcntl is None, reason="no POSIX locks here")
def test_the_part_file_of_a_writer_killed_with_sigkill_is_removed_by_the_next_write(tmp_path):
    """kill -9 runs no cleanup: the part file stays, but the kernel drops the dead writer's
    lock, so the next write of the same output removes it."""
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from ltx_core import video; "
            "name, lock = video._new_hidden_file(Path(sys.argv[1])); print(name, flush=True); time.sleep(120)",
            str(tmp_path / "clip.mp4"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    name = writer.stdout.readline().strip()
    os.utime(name, (time.time() - 3600,) * 2)
    assert video._locked_by_another(Path(name))
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert Path(name).exists() and not video._locked_by_another(Path(name))
    with pytest.warns(UserWarning, match="a partial file an interrupted run left"):
        video.write_mp4(smooth_frames(count=2), tmp_path / "clip.mp4", fps=24)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_frames_are_converted_to_pixels_one_frame_at_a_time_with_the_same_rounding():
    frames = torch.rand(3, 4, 6, 3, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1
    expected = np.round(np.clip(frames.numpy().astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    assert np.array_equal(video._frames_to_uint8(frames), expected)
    assert np.array_equal(video._frames_to_uint8(frames.numpy()), expected)
    assert np.array_equal(video._frames_to_uint8(frames.double()), expected)
