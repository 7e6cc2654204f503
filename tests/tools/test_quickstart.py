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



class _OracleTracker:
    """Stands in for VideoTracker in :func:`quickstart.tracking_metrics`: the ground-truth
    masks of the video, with their ids; without association the ids change from the middle
    frame on. Each frame also holds a score-0.1 mask, below the 0.2 threshold."""

    videos = []
    calls = []

    def __init__(self, association, output_size):
        from mobileinst.evaluation.mot_metrics import ytvis_gt_tracks

        self.video = self.videos[len(self.calls) // 2]  # with, then without association, per video
        self.calls.append((self.video["video_id"], association))
        assert tuple(output_size) == (self.video["height"], self.video["width"])
        self.tracks = ytvis_gt_tracks(self.video)
        self.association, self.t = association, 0
        self.categories = {a["id"]: a["category_id"] for f in self.video["annotations"] for a in f}  # contiguous

    @classmethod
    def from_model(cls, model, association, keep_results, output_size):
        return cls(association, output_size)

    def step(self, frame):
        import numpy as np
        import torch
        from detectron2.structures import Instances

        h, w = self.video["height"], self.video["width"]
        present = [(i, m[self.t]) for i, m in self.tracks.items() if m[self.t] is not None]
        shift = 1000 if not self.association and self.t >= self.video["length"] // 2 else 0
        inst = Instances((h, w))
        inst.pred_masks = torch.as_tensor(np.stack([m for _, m in present] + [np.ones((h, w), bool)]))
        inst.track_ids = torch.tensor([i + shift for i, _ in present] + [99999])
        inst.scores = torch.tensor([0.9] * len(present) + [0.1])
        self.t += 1
        return inst

    def ytvis_result(self, video_id):
        """The ground-truth tracks as the prediction (cut in two without association)."""
        tracks = []
        half = self.video["length"] // 2
        for i, masks in self.tracks.items():
            parts = [masks] if self.association else [masks[:half] + [None] * (len(masks) - half),
                                                      [None] * half + masks[half:]]
            tracks += [{"score": 0.9, "category_id": self.categories[i], "segmentations": p}
                       for p in parts if any(m is not None for m in p)]
        return {"video_id": video_id, "tracks": tracks}


def test_tracking_metrics_on_oracle_tracks(synthetic_root, monkeypatch):
    """make demo's tracking figures on the val videos, tracks given: perfect with association;
    without it every object seen on both sides of the middle frame switches once."""
    import mobileinst.video
    from detectron2.data import DatasetCatalog

    from conftest import small_cfg

    name = "test_synthetic_ytvis_val"
    videos = DatasetCatalog.get(name)
    monkeypatch.setattr(_OracleTracker, "videos", videos)
    monkeypatch.setattr(_OracleTracker, "calls", [])
    monkeypatch.setattr(mobileinst.video, "VideoTracker", _OracleTracker)
    out = quickstart.tracking_metrics(small_cfg("DATASETS.TEST", f"('{name}',)"), None, name)
    assert _OracleTracker.calls == [(v["video_id"], a) for v in videos for a in (True, False)]  # once per setting
    objects = sum(len(frame) for v in videos for frame in v["annotations"])
    switches = sum(
        any(a["id"] == i for f in v["annotations"][: v["length"] // 2] for a in f)
        and any(a["id"] == i for f in v["annotations"][v["length"] // 2:] for a in f)
        for v in videos for i in {a["id"] for f in v["annotations"] for a in f})
    assert objects > 0 and switches > 0 and f"score >= {quickstart.MOT_SCORE_THRESHOLD}" in out["rule"]
    perfect = out["with_association"]
    assert perfect["num_objects"] == perfect["num_matches"] == perfect["num_predictions"] == objects
    assert perfect["idf1"] == perfect["mota"] == 1.0 and perfect["num_switches"] == perfect["num_false_positives"] == 0
    assert perfect["num_frames"] == sum(v["length"] for v in videos)
    shifted = out["without_association"]
    assert shifted["num_switches"] == switches and shifted["num_false_positives"] == shifted["num_misses"] == 0
    assert shifted["mota"] == pytest.approx(1 - switches / objects) and shifted["idf1"] < 1.0
    assert "video_AP" not in perfect

    monkeypatch.setattr(_OracleTracker, "calls", [])
    out = quickstart.tracking_metrics(small_cfg("DATASETS.TEST", f"('{name}',)"), None, name, video_ap=True)
    assert out["with_association"]["video_AP"] == pytest.approx(100.0)
    assert out["without_association"]["video_AP"] < 100.0  # tracks cut in two
    assert out["with_association"]["num_switches"] == 0


def test_auto_processes(monkeypatch):
    """--processes 0: the most processes the cores allow that divide both parts' batches; 1 off the CPU."""
    from conftest import small_cfg

    monkeypatch.setattr(quickstart, "available_cores", lambda: 4)
    batch = {n: small_cfg("SOLVER.IMS_PER_BATCH", str(n)) for n in (4, 6, 8)}
    assert quickstart.auto_processes([batch[8], batch[4]]) == 4
    assert quickstart.auto_processes([batch[6]]) == 3
    assert quickstart.auto_processes([batch[6], batch[4]]) == 2
    assert quickstart.auto_processes([small_cfg("MODEL.DEVICE", "cuda"), batch[4]]) == 1
    monkeypatch.setattr(quickstart, "available_cores", lambda: 1)
    assert quickstart.auto_processes([batch[8]]) == 1


def test_training_in_two_processes(synthetic_root, tmp_path, monkeypatch):
    """make demo's default on a 2-core CPU: DistributedDataParallel over gloo in two processes of
    one thread each; the parent gets the trained weights and the final evaluation's results."""
    import torch
    from conftest import small_cfg

    # the spawned processes register the built-in synthetic sets from this root
    monkeypatch.setenv("DETECTRON2_DATASETS", synthetic_root)
    cfg = small_cfg("DATASETS.TRAIN", "('synthetic_coco_train',)", "DATASETS.TEST", "('synthetic_coco_val',)",
                    "SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "()", "SEED", "1", "OUTPUT_DIR", str(tmp_path))
    before = quickstart.Trainer.build_model(cfg).state_dict()
    model, record, results = quickstart.train(cfg, processes=2)
    assert record["processes"] == 2 and record["iterations"] == 4
    assert record["threads_per_process"] == max(1, quickstart.available_cores() // 2)
    assert {"bbox", "segm"} <= set(results) and 0.0 <= results["segm"]["AP"] <= 100.0
    saved = torch.load(os.path.join(str(tmp_path), "model_final.pth"), weights_only=True)["model"]
    after = model.state_dict()
    assert not model.training
    for k, v in saved.items():
        torch.testing.assert_close(after[k], v)
    assert any(not torch.equal(before[k], after[k]) for k in saved if after[k].is_floating_point())


def test_seed_makes_training_repeatable(synthetic_root, tmp_path):
    """SEED >= 0 seeds the model's initialisation, the sampler and the augmentations (as
    train_net.py's default_setup): two trainings give the same weights; SEED -1 does not."""
    import torch
    from conftest import small_cfg

    def weights(seed, name):  # in this process: the fixture's test_synthetic_* sets
        cfg = small_cfg("SOLVER.MAX_ITER", "3", "SOLVER.STEPS", "()", "SEED", str(seed),
                        "OUTPUT_DIR", str(tmp_path / name))
        model, _, _ = quickstart.train(cfg, processes=1)
        return model.state_dict()

    a, b, c = weights(7, "a"), weights(7, "b"), weights(-1, "c")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_trained_folder_keeps_its_config(synthetic_root, tmp_path):
    """<OUTPUT_DIR>/config.yaml: the config as trained, MODEL.WEIGHTS the trained weights;
    demo.py, --eval-only and the export load it as it is."""
    from conftest import small_cfg
    from mobileinst.config import load_mobileinst_config

    cfg = small_cfg("OUTPUT_DIR", str(tmp_path), "SOLVER.BASE_LR", "0.0123")
    path = quickstart.save_config(cfg, str(tmp_path / "model_final.pth"))
    assert path == str(tmp_path / "config.yaml")
    loaded = load_mobileinst_config(path)
    assert loaded.MODEL.WEIGHTS == str(tmp_path / "model_final.pth") and loaded.SOLVER.BASE_LR == 0.0123
    assert loaded.MODEL.MOBILEINST.INSTANCE_DECODER.NAME == cfg.MODEL.MOBILEINST.INSTANCE_DECODER.NAME
    assert cfg.MODEL.WEIGHTS != loaded.MODEL.WEIGHTS  # the config given is left as it was


def test_strip_of_an_annotated_video(tmp_path):
    """The README strip: evenly spaced frames side by side, at the width asked."""
    import cv2
    import numpy as np

    path = str(tmp_path / "v.mp4")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 5, (64, 48))
    for i in range(9):
        writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    writer.release()
    strip = cv2.imread(quickstart.save_strip(path, str(tmp_path / "strip.png"), num=3, width=200))
    assert strip.shape[1] == 200 and strip.shape[0] == round(48 * 200 / (3 * 64 + 2 * 6))
    # frames 0, 4, 8: grey 0, 80, 160 (away from the frame number written at the bottom)
    for k, grey in enumerate((0, 80, 160)):
        x = round((k * 70 + 32) * 200 / 204)
        assert abs(int(strip[5, x, 0]) - grey) <= 12
    with pytest.raises(RuntimeError, match="read 0 of the 3 strip frames"):
        quickstart.save_strip(str(tmp_path / "missing.mp4"), str(tmp_path / "s.png"), num=3)
