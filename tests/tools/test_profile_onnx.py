"""tools/analysis/profile_onnx.py: onnxruntime's node profile of an exported graph,
aggregated by op type and by part of the model."""
import os
import sys

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools", "analysis"))

import profile_onnx  # noqa: E402


def test_node_parts_by_module_path():
    assert profile_onnx.node_part("/model/backbone/stem/0/c/Conv") == "backbone"
    assert profile_onnx.node_part("/model/mask_decoder/lateral.0/Conv") == "mask decoder"
    assert profile_onnx.node_part("/model/instance_decoder/global_stage/cross_attn/q_proj/Gemm") == \
        "instance decoder"
    assert profile_onnx.node_part("/model/Einsum") == "mask head"
    assert profile_onnx.node_part("/TopK") == "ranking"
    assert profile_onnx.node_part("ReorderOutput_token_3") == "other"
    assert profile_onnx.node_part("/model.0/conv/Conv") == "other"  # another model's graph (YOLO)


def test_profile_of_the_image_graph(exported):
    path = os.path.join(str(exported[1]), "image.onnx")
    res = profile_onnx.profile(path, threads=1, runs=2, warmup=1)
    # every part of the image graph ran, and the parts add up to the op types
    assert {"backbone", "mask decoder", "instance decoder", "mask head", "ranking"} <= set(res["parts"])
    assert abs(sum(res["parts"].values()) - res["total_ms"]) < 1e-6 * max(1.0, res["total_ms"])
    assert abs(sum(res["op_types"].values()) - res["total_ms"]) < 1e-6 * max(1.0, res["total_ms"])
    assert res["op_types"]["Conv"] > 0 and res["total_ms"] > 0
    ms = profile_onnx.time_alternated([path, path], threads=1, runs=2, warmup=1)
    assert len(ms) == 2 and all(m > 0 for m in ms)
