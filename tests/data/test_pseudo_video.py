"""COCO pseudo videos with YouTube-VIS labels, and DATASETS.TRAIN_RATIOS mixing them with videos."""
import itertools

import numpy as np
import pytest
import torch
from conftest import small_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from mobileinst.data import build_train_loader, build_train_mapper, get_train_datasets
from mobileinst.data.datasets.coco_to_ytvis import COCO_TO_YTVIS_2019, COCO_TO_YTVIS_2021, SYNTHETIC_COCO_TO_YTVIS
from mobileinst.data.datasets.pseudo_video import load_pseudo_video_dicts
from mobileinst.data.datasets.ytvis import YTVIS_2019_CATEGORIES, YTVIS_2021_CATEGORIES
from mobileinst.data.sampler import build_train_sampler, ratio_repeat_factors
from mobileinst.data.synthetic import SYNTHETIC_CATEGORIES
from mobileinst.data.ytvis_mapper import YTVISPairMapper

MIX = ("DATASETS.TRAIN", "('test_synthetic_ytvis_train', 'test_synthetic_coco2ytvis_train')")
RING = 4  # contiguous id of the shape the synthetic map leaves out


@pytest.mark.parametrize("category_map, targets, size", [
    (COCO_TO_YTVIS_2019, YTVIS_2019_CATEGORIES, 21),
    (COCO_TO_YTVIS_2021, YTVIS_2021_CATEGORIES, 23),
    (SYNTHETIC_COCO_TO_YTVIS, SYNTHETIC_CATEGORIES, 4),
])
def test_category_maps_name_the_ids_of_both_sides(category_map, targets, size):
    sources = {c["id"]: c["name"] for c in COCO_CATEGORIES if c["isthing"]}
    if category_map is SYNTHETIC_COCO_TO_YTVIS:
        sources = {c["id"]: c["name"] for c in SYNTHETIC_CATEGORIES}
    targets = {c["id"]: c["name"] for c in targets}
    assert len(category_map) == size == len({row[0] for row in category_map})
    for src, src_name, tgt, tgt_name in category_map:
        assert sources[src] == src_name and targets[tgt] == tgt_name


def test_coco_pseudo_video_sets_are_registered_lazily():
    for year, n in (("2019", 21), ("2021", 23)):
        meta = MetadataCatalog.get(f"coco2ytvis{year}_train")
        assert meta.source_dataset == "coco_2017_train" and meta.pseudo_video
        assert meta.thing_classes == MetadataCatalog.get(f"ytvis_{year}_train").thing_classes
        assert len(meta.category_map) == n


def test_pseudo_videos_keep_mapped_annotations_with_target_labels(synthetic_root):
    source = DatasetCatalog.get("test_synthetic_coco_train")
    # circle -> triangle, square -> circle; triangle, star and ring dropped
    swapped = [(1, "circle", 3, "triangle"), (2, "square", 1, "circle")]
    dicts = load_pseudo_video_dicts("test_synthetic_coco_train", swapped, SYNTHETIC_CATEGORIES, "swapped")
    expected = {}
    for d in source:
        labels = sorted({0: 2, 1: 0}[a["category_id"]] for a in d["annotations"] if a["category_id"] in (0, 1))
        if labels:
            expected[d["image_id"]] = labels
    assert 0 < len(dicts) == len(expected) < len(source)
    for d in dicts:
        assert sorted(a["category_id"] for a in d["annotations"]) == expected[d["image_id"]]
    # the registered synthetic set: every shape but the ring, the same labels
    dicts = DatasetCatalog.get("test_synthetic_coco2ytvis_train")
    kept = {d["image_id"]: d for d in source if any(a["category_id"] != RING for a in d["annotations"])}
    assert {d["image_id"] for d in dicts} == set(kept)
    for d in dicts:
        assert [a["category_id"] for a in d["annotations"]] == [
            a["category_id"] for a in kept[d["image_id"]]["annotations"] if a["category_id"] != RING]
    assert MetadataCatalog.get("test_synthetic_coco2ytvis_train").thing_classes == \
        MetadataCatalog.get("test_synthetic_ytvis_train").thing_classes
    with pytest.raises(ValueError, match=r"rows \[\(9, 'x', 1, 'circle'\)\]"):
        load_pseudo_video_dicts("test_synthetic_coco_train", [(9, "x", 1, "circle")], SYNTHETIC_CATEGORIES)


def test_ratio_repeat_factors_by_hand():
    # 2 videos and 6 images, half of the samples from each: 2 * 2.0 = 6 * (2 / 3) = 4 per epoch of 8
    torch.testing.assert_close(ratio_repeat_factors([2, 6], [1.0, 1.0]),
                               torch.tensor([2.0, 2.0] + [2 / 3] * 6))
    with pytest.raises(ValueError, match="one ratio per set"):
        ratio_repeat_factors([2, 6], [1.0])
    with pytest.raises(ValueError, match="replaces DATALOADER.SAMPLER_TRAIN"):
        build_train_sampler(small_cfg("DATASETS.TRAIN_RATIOS", "(1.0, 1.0)",
                                      "DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler"), [2, 6])
    assert build_train_sampler(small_cfg(), [2, 6]) is None


@pytest.mark.parametrize("ratios, share", [("(1.0, 1.0)", 0.5), ("(3.0, 1.0)", 0.75)])
def test_sampler_draws_the_sets_in_the_configured_shares(synthetic_root, ratios, share):
    np.random.seed(0)  # the sampler's seed is drawn from numpy, as detectron2's
    cfg = small_cfg(*MIX, "DATASETS.TRAIN_RATIOS", ratios)
    sizes = [len(s) for s in get_train_datasets(cfg)]
    assert sizes[0] * 4 < sizes[1]  # by size alone the videos would be under a fifth
    indices = list(itertools.islice(iter(build_train_sampler(cfg, sizes)), 4000))
    assert abs(np.mean(np.array(indices) < sizes[0]) - share) < 0.03


def test_mixed_loader_yields_videos_and_pseudo_videos_with_their_labels(synthetic_root):
    np.random.seed(0)
    cfg = small_cfg(*MIX, "DATASETS.TRAIN_RATIOS", "(1.0, 1.0)", "SOLVER.IMS_PER_BATCH", "4")
    assert isinstance(build_train_mapper(cfg), YTVISPairMapper)
    assert isinstance(build_train_mapper(small_cfg("DATASETS.TRAIN", "('test_synthetic_coco2ytvis_train',)")),
                      YTVISPairMapper)
    pseudo = {d["image_id"]: d for d in DatasetCatalog.get("test_synthetic_coco2ytvis_train")}
    videos = {v["video_id"] for v in DatasetCatalog.get("test_synthetic_ytvis_train")}
    kinds = []
    for batch in itertools.islice(iter(build_train_loader(cfg)), 50):
        for x in batch:
            assert len(x["image"]) == 2 and len(x["instances"]) == 2
            is_pseudo = x["file_names"][0] == x["file_names"][1] and "synthetic_coco" in x["file_names"][0]
            kinds.append(is_pseudo)
            if not is_pseudo:
                assert x["video_id"] in videos
                continue
            labels = sorted(a["category_id"] for a in pseudo[x["video_id"]]["annotations"])
            for inst in x["instances"]:  # both views: the image's objects, with their new labels
                assert sorted(inst.gt_classes.tolist()) == labels and RING not in labels
                assert inst.gt_ids.tolist() == list(range(len(labels)))
    assert len(kinds) == 200 and abs(np.mean(kinds) - 0.5) < 0.1


def test_model_trains_on_the_mix(synthetic_root, tmp_path):
    from train_net import Trainer

    cfg = small_cfg(*MIX, "DATASETS.TRAIN_RATIOS", "(1.0, 1.0)", "DATASETS.TEST", "()",
                    "MODEL.META_ARCHITECTURE", "MobileInstVideo", "SOLVER.MAX_ITER", "3",
                    "SOLVER.IMS_PER_BATCH", "2", "OUTPUT_DIR", str(tmp_path))
    trainer = Trainer(cfg)
    trainer.train()
    assert trainer.iter == 3
    hist = trainer.storage.histories()
    assert {"loss_mask_dice_qp", "loss_mask_bce_qp", "loss_cls"} <= set(hist)
    assert np.isfinite(hist["total_loss"].latest())
