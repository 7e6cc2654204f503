"""Frame-pair mapper, pseudo videos, query-passing training and video evaluation with the stock trainer."""
import numpy as np
import torch
from conftest import small_cfg
from detectron2.data import DatasetCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from mobileinst.data import build_train_mapper, is_video_dataset
from mobileinst.data.ytvis_mapper import YTVISPairMapper, YTVISTestMapper


def test_video_datasets_are_recognised(synthetic_root):
    assert is_video_dataset("test_synthetic_ytvis_train")
    assert not is_video_dataset("test_synthetic_coco_train")


def test_pair_mapper_same_augmentation_and_identities(synthetic_root):
    videos = DatasetCatalog.get("test_synthetic_ytvis_train")
    mapper = YTVISPairMapper([T.RandomFlip(prob=1.0)], "RGB", "bitmask", sampling_frame_range=3, seed=0)
    for v in videos[:4]:
        out = mapper(v)
        t0, t1 = out["frame_indices"]
        assert 1 <= t1 - t0 <= 3
        for img, t in zip(out["image"], (t0, t1)):
            ref = utils.read_image(v["file_names"][t], format="RGB")[:, ::-1]  # flipped: same aug on both
            assert torch.equal(img, torch.as_tensor(ref.transpose(2, 0, 1).copy()))
        for inst, t in zip(out["instances"], (t0, t1)):
            assert sorted(inst.gt_ids.tolist()) == sorted(a["id"] for a in v["annotations"][t])
            # masks flipped like the image
            ann = {a["id"]: a for a in v["annotations"][t]}
            if not ann:
                assert len(inst) == 0
                continue
            for tid, m in zip(inst.gt_ids.tolist(), inst.gt_masks.tensor):
                ref = utils.annotations_to_instances([ann[tid]], (v["height"], v["width"]), "bitmask").gt_masks.tensor[0]
                assert torch.equal(m, ref.flip(-1))


def test_pseudo_video_from_images(synthetic_root):
    """The video meta-architecture trains on frame pairs: image sets become pseudo videos."""
    assert not isinstance(build_train_mapper(small_cfg()), YTVISPairMapper)
    cfg = small_cfg("MODEL.META_ARCHITECTURE", "MobileInstVideo")
    mapper = build_train_mapper(cfg)
    assert isinstance(mapper, YTVISPairMapper)
    d = next(x for x in DatasetCatalog.get("test_synthetic_coco_train") if len(x["annotations"]) >= 2)
    out = mapper(d)
    assert len(out["image"]) == 2 and len(out["instances"]) == 2
    for inst in out["instances"]:
        assert inst.gt_ids.tolist() == list(range(len(inst)))


def test_test_mapper_reads_frames_lazily(synthetic_root):
    v = DatasetCatalog.get("test_synthetic_ytvis_val")[0]
    out = YTVISTestMapper(small_cfg("INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64"))(v)
    assert len(out["image"]) == v["length"] == out["length"]
    assert out["image"][0].shape == (3, 64, 64)


def test_query_passing_training_and_video_eval_with_stock_trainer(synthetic_root, tmp_path):
    from train_net import Trainer

    cfg = small_cfg(
        "DATASETS.TRAIN", "('test_synthetic_ytvis_train',)", "DATASETS.TEST", "('test_synthetic_ytvis_val',)",
        "MODEL.META_ARCHITECTURE", "MobileInstVideo", "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2",
        "OUTPUT_DIR", str(tmp_path),
    )
    trainer = Trainer(cfg)
    trainer.train()
    storage_keys = set(trainer.storage.histories())
    # query passing as in the paper: the passed branch has mask losses only
    assert {"loss_mask_dice_qp", "loss_mask_bce_qp", "loss_cls", "loss_obj"} <= storage_keys
    assert not {"loss_cls_qp", "loss_obj_qp"} & storage_keys
    res = Trainer.test(cfg, trainer.model)
    assert set(res["ytvis"]) >= {"AP", "AP50", "AP75", "AR1", "AR10"}
    assert all(np.isfinite(res["ytvis"][k]) for k in ("AP", "AR10"))
    assert (tmp_path / "inference" / "test_synthetic_ytvis_val" / "results.json").exists()
