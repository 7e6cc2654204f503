"""Copy-paste augmentation (mobileinst.data.copy_paste) on hand-made images."""
import cv2
import numpy as np
import pycocotools.mask as mask_util
from detectron2.structures import BoxMode

from mobileinst.data.copy_paste import decode_segmentation, paste_objects


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return rle


def _box(x0, y0, x1, y1, h=40, w=40):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _anno(mask, cat, poly=False):
    ys, xs = np.nonzero(mask)
    seg = ([[xs.min(), ys.min(), xs.max() + 1, ys.min(), xs.max() + 1, ys.max() + 1, xs.min(), ys.max() + 1]]
           if poly else _rle(mask))
    return {"segmentation": seg, "bbox": [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()],
            "bbox_mode": BoxMode.XYWH_ABS, "category_id": cat, "iscrowd": 0}


def test_paste_occludes_and_drops():
    image = np.zeros((40, 40, 3), np.uint8)
    src = np.full((40, 40, 3), 200, np.uint8)
    partly = _box(0, 0, 20, 20)      # 400 px, 100 of them covered: stays with 300
    hidden = _box(22, 22, 28, 28)    # 36 px, all covered: dropped
    apart = _box(30, 0, 40, 8)       # untouched: kept as it is
    annos = [_anno(partly, 1), _anno(hidden, 2, poly=True), _anno(apart, 3)]
    pasted = _box(10, 10, 30, 30)
    src_annos = [_anno(pasted, 4)]
    out_image, out = paste_objects(image, annos, src, src_annos, np.random.default_rng(0), max_objects=1)

    assert (out_image[pasted] == 200).all() and (out_image[~pasted] == 0).all()
    assert (image == 0).all()  # the input is not modified
    assert [a["category_id"] for a in out] == [1, 3, 4]
    masks = [decode_segmentation(a["segmentation"], 40, 40) for a in out]
    np.testing.assert_array_equal(masks[0], partly & ~pasted)
    assert masks[0].sum() == 300 and out[0]["bbox"] == [0, 0, 20, 20]
    assert out[1] is annos[2]
    np.testing.assert_array_equal(masks[2], pasted)
    assert out[2]["bbox"] == [10, 10, 20, 20] and out[2]["bbox_mode"] == BoxMode.XYWH_ABS


def test_later_pasted_objects_lie_on_top_and_sizes_are_matched():
    image = np.zeros((40, 40, 3), np.uint8)
    src = np.zeros((20, 20, 3), np.uint8)  # half the size: resized to 40x40
    src[:, :10] = 100
    src[:, 10:] = 50
    first, second = np.zeros((20, 20), bool), np.zeros((20, 20), bool)
    first[0:10, 0:10] = True   # -> (0:20, 0:20) on the target
    second[5:10, 5:15] = True  # -> (10:20, 10:30), over the first
    annos = [_anno(first, 1), _anno(second, 2)]
    _, out = paste_objects(image, [], src, annos, np.random.default_rng(0), max_objects=1)
    assert len(out) == 1  # max_objects
    # a seed whose first draw (the number of objects, in 1..2) is 2
    seed = next(s for s in range(100) if np.random.default_rng(s).integers(1, 3) == 2)
    out_image, out = paste_objects(image, [], src, annos, np.random.default_rng(seed), max_objects=2)
    masks = {a["category_id"]: decode_segmentation(a["segmentation"], 40, 40) for a in out}
    assert sorted(masks) == [1, 2]
    assert masks[2].sum() == 200 and masks[1].sum() == 400 - 100 and not (masks[1] & masks[2]).any()
    cover = masks[1] | masks[2]
    resized = cv2.resize(src, (40, 40), interpolation=cv2.INTER_LINEAR)
    assert (out_image[cover] == resized[cover]).all() and (out_image[~cover] == 0).all()
