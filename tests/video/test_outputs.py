"""tracks.mp4 + results.json of the demo and the runtime (mobileinst_core.writer): written
together, whole or not at all; the json streamed. No model: a scripted tracker."""
import errno
import json
import os
import signal

import cv2
import numpy as np
import pytest

from mobileinst_core.cli import Terminated, sigterm_exits
from mobileinst_core.track_book import TrackBook
from mobileinst_core.writer import write_tracks
from mobileinst_core.ytvis_json import ytvis_entries

H, W, N = 48, 64, 12


def _frames(n=N, h=H, w=W):
    rng = np.random.RandomState(0)
    return [(i, rng.randint(0, 255, (h, w, 3)).astype(np.uint8)) for i in range(n)]


class _Tracker:
    """Two slots with moving squares; slot 3 only on even frames; class scores per keyframe."""

    def __init__(self, fail_at=None, keep=False):
        self.book = TrackBook(max_tracks=4, keep_results=keep)
        self.fail_at, self.i = fail_at, 0

    def step(self, frame):
        if self.i == self.fail_at:
            self.fail_at()
        h, w = frame.shape[:2]
        slots = [1, 3] if self.i % 2 == 0 else [1]
        masks = np.zeros((len(slots), h, w), bool)
        for k, _ in enumerate(slots):
            masks[k, 5 + self.i: 15 + self.i, 10 * k: 10 * k + 12] = True
        self.book.add_keyframe(np.random.RandomState(self.i).rand(5, 3))
        self.book.add_frame(masks, slots)
        self.i += 1
        return masks, slots, [0] * len(slots), [0.9] * len(slots)


def _run(out, frames=None, tracker=None, **kw):
    tracker = tracker or _Tracker()
    return write_tracks(frames or _frames(), tracker.step, tracker.book.top_tracks, str(out), 5.0, **kw), tracker


def _assert_earlier_pair_kept(out, before):
    assert {n: (out / n).read_bytes() for n in before} == before
    assert sorted(os.listdir(out)) == sorted(before), "a temporary file was left behind"


@pytest.fixture
def earlier(tmp_path):
    """An output folder holding a good earlier run."""
    out = tmp_path / "out"
    _run(out, _frames(3))
    return out, {n: (out / n).read_bytes() for n in ("tracks.mp4", "results.json")}


def test_streamed_json_is_ytvis_entries_and_the_video_is_whole(tmp_path):
    tracker = _Tracker(keep=True)
    (video, js, n), _ = _run(tmp_path / "o", tracker=tracker, video_id=7, category_ids=[2, 4, 9])
    assert n == N
    assert json.load(open(js)) == ytvis_entries(tracker.book.ytvis_result(7), 7, [2, 4, 9])
    cap = cv2.VideoCapture(video)
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == N
    assert sorted(os.listdir(tmp_path / "o")) == ["results.json", "tracks.mp4"]


def test_a_video_cut_short_by_a_full_disk_is_an_error_and_keeps_the_earlier_pair(earlier, monkeypatch):
    """OpenCV's writer reports no write error: a file cut short (a full disk) is found
    when the video is opened again, and nothing is renamed."""
    import mobileinst_core.writer as writer

    out, before = earlier

    real = cv2.VideoWriter

    class CutWriter:  # what ENOSPC leaves: the file ends early
        def __init__(self, path, *a):
            self.w, self.path = real(path, *a), path
            self.write, self.isOpened = self.w.write, self.w.isOpened

        def release(self):
            self.w.release()
            with open(self.path, "r+b") as f:
                f.truncate(os.path.getsize(self.path) // 3)

    monkeypatch.setattr(writer.cv2, "VideoWriter", CutWriter)
    with pytest.raises(OSError, match=r"Cannot write '.*tracks\.mp4'"):
        _run(out)
    _assert_earlier_pair_kept(out, before)


def test_a_json_write_on_a_full_disk_names_the_file_and_keeps_the_earlier_pair(earlier, monkeypatch):
    import mobileinst_core.ytvis_json as ytvis_json

    out, before = earlier

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ytvis_json.os, "fsync", no_space)
    with pytest.raises(OSError, match=r"Cannot write '.*results\.json'.*disk is full"):
        _run(out)
    _assert_earlier_pair_kept(out, before)


def test_a_real_full_disk_keeps_the_earlier_pair(tmp_path):
    """A 100 KB tmpfs holding an earlier good run, then filled: where the test may
    mount one (root); the monkeypatched tests above run everywhere."""
    import subprocess

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        out = mnt / "out"
        _run(out, _frames(3))
        before = {n: (out / n).read_bytes() for n in ("tracks.mp4", "results.json")}
        fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)  # fill it, then leave about 4 KB
        try:
            while True:
                os.write(fd, b"\1" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        os.truncate(mnt / "filler", os.path.getsize(mnt / "filler") - 4096)
        with pytest.raises(OSError, match=r"Cannot write '.*(tracks\.mp4|results\.json)'"):
            _run(out, _frames(40, 96, 128))
        _assert_earlier_pair_kept(out, before)
    finally:
        subprocess.run(["umount", str(mnt)])


def test_a_failure_after_the_last_frame_keeps_the_earlier_pair(earlier):
    out, before = earlier
    tracker = _Tracker()

    def broken_top_tracks():
        raise IndexError("class 5 of 3 class names")

    with pytest.raises(IndexError):
        write_tracks(_frames(), tracker.step, broken_top_tracks, str(out), 5.0)
    _assert_earlier_pair_kept(out, before)


def _stream_until_killed(out):
    """In a child process (``python test_outputs.py OUT``): a stream that says each frame
    it has written and waits between frames, until its parent sends SIGTERM."""
    import sys
    import time

    tracker = _Tracker()

    def step(frame):
        result = tracker.step(frame)
        print(f"step {tracker.i}", flush=True)
        time.sleep(0.2)
        return result

    with sigterm_exits():
        write_tracks(_frames(400), step, tracker.book.top_tracks, out, 5.0)
    sys.exit(0)


def test_sigterm_mid_stream_leaves_the_earlier_pair_or_no_folder(earlier, tmp_path):
    """``kill`` (SIGTERM) mid-stream, as a user or a service manager sends it to another
    process: exit status 143, the earlier pair kept, a new folder not left behind."""
    import subprocess
    import sys

    out, before = earlier
    for folder in (out, tmp_path / "new"):
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), str(folder)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                                     [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), *sys.path])))
        for line in child.stdout:
            if line.strip() == "step 4":
                child.send_signal(signal.SIGTERM)
                break
        _, err = child.communicate(timeout=60)
        assert child.returncode == 128 + signal.SIGTERM, err
        assert "Terminated (SIGTERM)" in err
    _assert_earlier_pair_kept(out, before)
    assert not (tmp_path / "new").exists()


def test_sigterm_exits_restores_the_earlier_handler():
    earlier = signal.getsignal(signal.SIGTERM)
    with sigterm_exits():
        assert signal.getsignal(signal.SIGTERM) is not earlier
    assert signal.getsignal(signal.SIGTERM) is earlier
    assert issubclass(Terminated, SystemExit)


def test_frames_the_video_writer_cannot_take_name_the_input_and_the_size(tmp_path):
    with pytest.raises(ValueError, match=r"Input 'clip\.avi': frames of 1x1 \(WxH\) cannot be written"):
        _run(tmp_path / "o", _frames(2, 1, 1), input_name="'clip.avi'")
    assert not (tmp_path / "o").exists()


def test_a_full_disk_under_atomic_write_json_names_the_file_once(tmp_path, monkeypatch):
    """The sync that fails is reported once, naming the final file (not the temporary one)."""
    import mobileinst_core.files as files

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", no_space)
    with pytest.raises(OSError) as info:
        files.atomic_write_json(str(tmp_path / "a.json"), {"x": 1})
    message = str(info.value)
    assert message.count("Cannot write") == 1 and message.count("disk is full") == 1
    assert f"'{tmp_path / 'a.json'}'" in message
    assert os.listdir(tmp_path) == []


if __name__ == "__main__":
    import sys

    _stream_until_killed(sys.argv[1])
