"""tools/benchmark.py runs end to end and writes its figures (no timing is asserted)."""
import json
import os
import sys

from conftest import ROOT, SYNTH_CONFIG


def test_benchmark_writes_all_sections(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import benchmark

    out = tmp_path / "bench.json"
    report = benchmark.main([
        "--config-file", SYNTH_CONFIG, "--short-side", "128", "--max-size", "160", "--threads", "1",
        "--runs", "2", "--warmup", "1", "--maskrcnn-short-side", "128", "--video", "--frames", "4",
        "--intervals", "1", "3", "--onnx", "--output", str(out),
    ])
    saved = json.loads(out.read_text())
    assert saved["speedup_vs_mask_rcnn"] == report["speedup_vs_mask_rcnn"] > 0
    mi = saved["mobileinst"]
    assert mi["input_hw"] == [128, 160] and mi["params_M"] > 1 and mi["gflops"] > 0 and mi["latency_ms"] > 0
    assert 0 < mi["backbone_params_M"] < mi["params_M"]
    assert set(mi["modules_ms"]) >= {"backbone", "mask_decoder", "instance_decoder", "postprocess"}
    mr = saved["mask_rcnn_r50_fpn"]
    assert mr["params_M"] > 40 and mr["gflops"] > mi["gflops"]
    assert {"T=1", "T=3"} <= set(saved["video"])
    ort = saved["onnxruntime"]
    assert {"ort_fp32_threads1", "ort_int8_threads1"} <= set(ort)
    assert ort["ort_fp32_threads1"]["T=3"]["fps"] > 0 and ort["ort_int8_threads1"]["image_latency_ms"] > 0
    assert not os.path.exists(str(out) + ".tmp")


def test_benchmark_a_seaformer_config_without_its_imagenet_file(tmp_path):
    """The COCO SeaFormer config names pretrained/SeaFormer_T.pth; timing needs no weights."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import benchmark

    report = benchmark.main([
        "--config-file", os.path.join(ROOT, "configs", "coco", "MobileInst_SeaFormer_tiny_640.yaml"),
        "--short-side", "64", "--max-size", "96", "--threads", "1", "--runs", "1", "--warmup", "0",
        "--no-maskrcnn", "--output", str(tmp_path / "bench.json"),
    ])
    mi = report["mobileinst"]
    assert abs(mi["backbone_params_M"] - 1.62) < 0.01 and mi["gflops"] > 0 and mi["latency_ms"] > 0
