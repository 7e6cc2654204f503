"""tools/quickstart.py: --device / --num-workers reach the image and the video part alike; --video-opt the video part."""
import os
import sys

import pytest
from conftest import ROOT

if os.path.join(ROOT, "tools") not in sys.path:
    sys.path.insert(0, os.path.join(ROOT, "tools"))

import quickstart  # noqa: E402


def test_device_and_workers_reach_both_parts(tmp_path):
    args = quickstart.parse_args(["--output", str(tmp_path), "--device", "cuda:1", "--num-workers", "3",
                                  "--max-iter", "50", "--video-max-iter", "20", "SOLVER.BASE_LR", "0.01"])
    image = quickstart.image_config(args)
    video = quickstart.video_config(args, "weights.pth")
    for cfg in (image, video):
        assert cfg.MODEL.DEVICE == "cuda:1" and cfg.DATALOADER.NUM_WORKERS == 3
    assert image.SOLVER.MAX_ITER == 50 and image.SOLVER.STEPS == (40, 46)
    assert video.SOLVER.MAX_ITER == 20 and video.SOLVER.STEPS == (17,) and video.MODEL.WEIGHTS == "weights.pth"
    # the trailing overrides are the image part's; the video config keeps its own
    assert image.SOLVER.BASE_LR == 0.01 and video.SOLVER.BASE_LR == 0.0002
    assert image.OUTPUT_DIR == os.path.join(str(tmp_path), "image") and video.OUTPUT_DIR == os.path.join(str(tmp_path), "video")


def test_defaults_keep_the_configs_device(tmp_path):
    args = quickstart.parse_args(["--output", str(tmp_path)])
    image, video = quickstart.image_config(args), quickstart.video_config(args, "w.pth")
    assert image.MODEL.DEVICE == video.MODEL.DEVICE == "cpu"
    assert image.DATALOADER.NUM_WORKERS == video.DATALOADER.NUM_WORKERS == 0
    # the schedules' shapes are the configs'; their lengths come from the 20-minute budget
    assert image.SOLVER.MAX_ITER == 1800 and video.SOLVER.MAX_ITER == 600
    assert image.SOLVER.TIME_BUDGET == 15 * 60 and video.SOLVER.TIME_BUDGET == 5 * 60


def test_budget_split_and_fixed_schedules(tmp_path):
    args = quickstart.parse_args(["--output", str(tmp_path), "--budget-min", "8", "--video-share", "0.5"])
    assert quickstart.image_config(args).SOLVER.TIME_BUDGET == quickstart.video_config(args, "w").SOLVER.TIME_BUDGET == 240
    args = quickstart.parse_args(["--output", str(tmp_path), "--budget-min", "8", "--no-video"])
    assert quickstart.image_config(args).SOLVER.TIME_BUDGET == 480
    # a fixed schedule switches the budget off for that part only
    args = quickstart.parse_args(["--output", str(tmp_path), "--max-iter", "30"])
    assert quickstart.image_config(args).SOLVER.TIME_BUDGET == 0 and quickstart.image_config(args).SOLVER.MAX_ITER == 30
    assert quickstart.video_config(args, "w").SOLVER.TIME_BUDGET == 300
    for bad in (["--video-share", "1.0"], ["--budget-min", "-1"]):
        with pytest.raises(SystemExit):
            quickstart.parse_args(["--output", str(tmp_path)] + bad)


def test_short_schedules_get_distinct_steps(tmp_path):
    """--max-iter 5: 80% and 93% both fall on iteration 4; detectron2 rejects a repeated milestone."""
    args = quickstart.parse_args(["--output", str(tmp_path), "--max-iter", "5", "--video-max-iter", "1"])
    assert quickstart.image_config(args).SOLVER.STEPS == (4,)
    assert quickstart.video_config(args, "w.pth").SOLVER.STEPS == ()


def test_video_opts_reach_the_video_part_only(tmp_path):
    args = quickstart.parse_args(["--output", str(tmp_path), "--video-opt", "SOLVER.IMS_PER_BATCH", "8",
                                  "--video-opt", "MODEL.MOBILEINST.VIDEO.REUSE_INTERVAL", "5",
                                  "SOLVER.IMS_PER_BATCH", "16"])
    image, video = quickstart.image_config(args), quickstart.video_config(args, "w.pth")
    assert image.SOLVER.IMS_PER_BATCH == 16 and image.MODEL.MOBILEINST.VIDEO.REUSE_INTERVAL == 3
    assert video.SOLVER.IMS_PER_BATCH == 8 and video.MODEL.MOBILEINST.VIDEO.REUSE_INTERVAL == 5
    # an override applies after --video-max-iter's schedule, so it can set the steps too
    args = quickstart.parse_args(["--output", str(tmp_path), "--video-max-iter", "100",
                                  "--video-opt", "SOLVER.STEPS", "(60,90)"])
    assert quickstart.video_config(args, "w.pth").SOLVER.STEPS == (60, 90)
