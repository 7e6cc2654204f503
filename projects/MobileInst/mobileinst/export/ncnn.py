# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""ncnn graphs through pnnx, next to the ONNX / TorchScript graphs of tools/export.py.

``tools/export.py --ncnn`` writes them after the ONNX / TorchScript graphs (one
export command gives every backend's files, without trying to convert the graphs
whole). :func:`export_ncnn` writes, for each graph of an export folder (sizes from
its export_meta.json),
``{name}.ncnn.param``, ``{name}.ncnn.bin`` and ``{name}.ncnn.json`` (input /
output blob names, input dtypes, and the kind of numpy post-processing the
runtime adds, which takes its settings from export_meta.json), read by
``mobileinst_runtime.backends.NcnnBackend``.

What pnnx / ncnn (20261020) take of our graphs (:func:`convert_torchscript` on
the ``*.ts`` of tools/export.py reports the layers ncnn cannot create):

* ``mask_head.ts`` converts whole (Einsum, Slice, Sigmoid; any number of kernels);
  with the model at hand it is rebuilt with a MatMul instead (ncnn's Einsum layer
  is a plain loop: at 640x864 with 100 kernels 865 ms against 30 ms).
* ``nonkeyframe.ts`` and every graph taking the uint8 image: the cast
  ``image.float()`` stays a ``Tensor.to`` layer (ncnn has no uint8 tensors), and
  ``mask_logits(...)[0]`` on the einsum output a ``torch.unbind`` ("unbind along
  batch axis 0 is not supported").
* ``image.ts`` and ``keyframe.ts``: the ranking after the network does not
  convert: ``torch.topk`` (top MAX_DETECTIONS), ``aten::sort`` / ``aten::argsort``
  / ``aten::scatter`` / ``F.linear`` with a tensor weight / ``torch.eq`` (Matrix
  NMS, INFERENCE.NMS_SIGMA), ``torch.gt`` and ``Tensor.to`` (mask rescoring's
  binarisation), ``Tensor.index`` (gathering the ranked rows), ``torch.unbind``
  (the ``[0]`` of the batch), ``pnnx.Expression`` (``flat // num_classes``).

So these graphs are split (:class:`NcnnNetwork`, :class:`NcnnNonKeyframe`):
the network in ncnn, from a float image (raw pixels, the config's channel
order; normalisation and padding inside) to batched outputs, and the scoring,
ranking and Matrix NMS in numpy (``mobileinst_runtime.ranking``, the same
computations as ``mobileinst.export.ImageModel`` / ``KeyframeModel``). The
split graphs need the PyTorch model (the config and weights), the whole
``mask_head`` only its ``.ts``.

int8: neither the ``ncnn`` nor the ``pnnx`` wheel ships ncnn's quantization tools
(ncnn2table / ncnn2int8), so only fp32 graphs are written (``fp16=0``: fp32 weights).
"""
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mobileinst_core.export_meta import META_FILE, ExportMeta, read_export_meta, record_files

from .graphs import GRAPHS, _Base

logger = logging.getLogger("mobileinst.export.ncnn")


# ---------------------------------------------------------------- split modules
class _NcnnBase(_Base):
    """The export graphs' base for ncnn: a float image (1, 3, H, W) of raw pixel
    values -> normalised and padded, and mask logits as a MatMul."""

    def normalize(self, image):
        x = (image - self.model.pixel_mean) / self.model.pixel_std  # no .float(): ncnn has float tensors only
        ph, pw = self.padded
        return F.pad(x, (0, pw - self.width, 0, ph - self.height))

    def mask_logits(self, kernels, x_mask):
        """``MobileInst.mask_logits`` as a MatMul: ncnn's Einsum layer is a plain loop
        (TopFormer-base at 640x864, 100 queries: 865 ms of the graph's 1020, against
        155 ms for the whole network before it, 1 thread)."""
        b, d, h, w = x_mask.shape
        masks = torch.matmul(kernels, x_mask.reshape(b, d, h * w)).reshape(b, -1, h, w)
        if self.model.mask_upsample != 1:
            masks = F.interpolate(masks, scale_factor=float(self.model.mask_upsample), mode="bilinear",
                                  align_corners=False)
        return masks


class NcnnNetwork(_NcnnBase):
    """The network of the image and keyframe graphs, without their ranking:
    image -> pred_logits (1, N, C), pred_objectness (1, N), pred_kernels (1, N, D),
    mask_features (1, D, h, w), mask_logits (1, N, h', w'). ncnn computes only what
    the outputs extracted need (the keyframe without Matrix NMS skips mask_logits)."""

    def forward(self, image):
        x6, x_mask = self.model.encode(self.normalize(image))
        out = self.model.instance_decoder(x6, x_mask)
        masks = self.mask_logits(out["pred_kernels"], x_mask)
        return out["pred_logits"], out["pred_objectness"], out["pred_kernels"], x_mask, masks


class NcnnNonKeyframe(_NcnnBase):
    """image, kernels (k, D) -> mask_probs (1, k, h', w'); the runtime drops the batch axis."""

    def forward(self, image, kernels):
        _, x_mask = self.model.encode(self.normalize(image))
        return self.mask_logits(kernels[None], x_mask).sigmoid()


class NcnnMaskHead(_NcnnBase):
    """mask_features (1, D, h, w), kernels (k, D) -> mask_probs (1, k, h', w'): the
    mask_head graph with a MatMul instead of its Einsum (which converts, but runs as
    ncnn's plain loop)."""

    def forward(self, x_mask, kernels):
        return self.mask_logits(kernels[None], x_mask).sigmoid()


NETWORK_OUTPUTS = ["pred_logits", "pred_objectness", "pred_kernels", "mask_features", "mask_logits"]


# ---------------------------------------------------------------- pnnx
def pnnx_executable() -> str:
    """The pnnx executable of the ``pnnx`` wheel (or one on PATH)."""
    try:
        import pnnx

        path = pnnx.EXEC_PATH
        if os.path.exists(path):
            return path
    except ImportError:
        pass
    path = shutil.which("pnnx")
    if path is None:
        raise ImportError("ncnn export needs pnnx: pip install pnnx")
    return path


def _shape_arg(shapes: Sequence[Sequence[int]], types: Sequence[str]) -> str:
    return ",".join("[" + ",".join(str(int(d)) for d in s) + "]" + t for s, t in zip(shapes, types))


def unsupported_layers(param_path: str) -> List[str]:
    """Layer types of an ncnn ``.param`` that this ncnn cannot create (pnnx leaves
    the ops it cannot convert as layers named after the torch op)."""
    import ncnn

    bad = []
    with open(param_path) as f:
        lines = f.read().splitlines()[2:]
    for line in lines:
        parts = line.split()
        if parts and ncnn.layer_to_index(parts[0]) < 0 and parts[0] not in bad:
            bad.append(parts[0])
    return bad


def blob_names(param_path: str):
    """(input blob names, output blob names) in pnnx's order (in0, in1, ... / out0, ...)."""
    ins, produced, consumed = [], [], set()
    with open(param_path) as f:
        lines = f.read().splitlines()[2:]
    for line in lines:
        p = line.split()
        if not p:
            continue
        n_in, n_out = int(p[2]), int(p[3])
        bottoms, tops = p[4:4 + n_in], p[4 + n_in:4 + n_in + n_out]
        consumed.update(bottoms)
        if p[0] == "Input":
            ins += tops
        produced += tops
    key = lambda s: (len(s), s)  # noqa: E731: out2 before out10
    return sorted(ins, key=key), sorted([b for b in produced if b.startswith("out") and b not in consumed], key=key)


def batch_indices(ncnn_py: str) -> Dict[str, int]:
    """blob -> the numpy axis ncnn treats as the batch (233: none), from the test script
    pnnx writes (``ncnn.Mat(x, batch_index=...)`` / ``out.numpy(batch_index=...)``): pnnx
    keeps a batch axis on some blobs (this ncnn has batched Mats) and drops it on others."""
    with open(ncnn_py) as f:
        text = f.read()
    pattern = r'ex\.input\("(\w+)", ncnn\.Mat\(\w+\.numpy\(\), batch_index=(-?\d+)\)'
    out = {b: int(i) for b, i in re.findall(pattern, text)}
    out.update({blob: int(i) for _, blob, i in re.findall(
        r'_, (\w+) = ex\.extract\("(\w+)"\)\s*\n\s*out\.append\(torch\.from_numpy\(\1\.numpy\(batch_index=(-?\d+)\)',
        text)})
    return out


def convert_torchscript(ts_path: str, workdir: str, shapes, types, shapes2=None, timeout: float = 1800):
    """pnnx on one TorchScript file -> dict(param, bin, log, unsupported) in ``workdir``.

    ``types``: pnnx's type suffixes ("f32", "u8"); ``shapes2`` a second input
    shape set (pnnx then keeps the dimensions that differ dynamic)."""
    base = os.path.join(workdir, os.path.splitext(os.path.basename(ts_path))[0])
    cmd = [pnnx_executable(), os.path.abspath(ts_path), "inputshape=" + _shape_arg(shapes, types),
           f"pnnxparam={base}.pnnx.param", f"pnnxbin={base}.pnnx.bin", f"pnnxpy={base}_pnnx.py",
           f"pnnxonnx={base}.pnnx.onnx", f"ncnnparam={base}.ncnn.param", f"ncnnbin={base}.ncnn.bin",
           f"ncnnpy={base}_ncnn.py", "fp16=0"]
    if shapes2 is not None:
        cmd.append("inputshape2=" + _shape_arg(shapes2, types))
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    param, binf = base + ".ncnn.param", base + ".ncnn.bin"
    if proc.returncode != 0 or not os.path.exists(param) or not os.path.exists(binf):
        raise RuntimeError(f"pnnx failed on '{ts_path}' (exit {proc.returncode}):\n{log[-3000:]}")
    return {"param": param, "bin": binf, "log": log, "unsupported": unsupported_layers(param),
            "batch_index": batch_indices(base + "_ncnn.py")}


def _trace(module, inputs, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, inputs, check_trace=False)
    traced.save(path)
    return path


def _install(files: Dict[str, str], spec: dict, model_dir: str, name: str) -> Dict[str, str]:
    """Copy param/bin and write the json next to them: each to a temporary name in
    ``model_dir`` first, renamed when all three are complete."""
    final = {"param": os.path.join(model_dir, f"{name}.ncnn.param"),
             "bin": os.path.join(model_dir, f"{name}.ncnn.bin"),
             "json": os.path.join(model_dir, f"{name}.ncnn.json")}
    tmps = {k: os.path.join(model_dir, f".{os.path.basename(v)}.tmp{os.getpid()}") for k, v in final.items()}
    try:
        shutil.copyfile(files["param"], tmps["param"])
        shutil.copyfile(files["bin"], tmps["bin"])
        with open(tmps["json"], "w") as f:
            json.dump(spec, f, indent=2)
        # the json last: a reader that finds it finds the param and bin it describes
        for k in ("param", "bin", "json"):
            os.replace(tmps[k], final[k])
    except BaseException:
        for t in tmps.values():
            if os.path.exists(t):
                os.remove(t)
        raise
    return final


def _spec(res, inputs, outputs, dtypes, shapes, post=None, whole=True, blocked=None):
    """inputs / outputs: graph names in blob order (in0, in1 ... / out0, out1 ...);
    ``dtypes`` / ``shapes``: what the runtime gives (uint8 images are cast to float)."""
    ins, outs = blob_names(res["param"])
    if len(ins) != len(inputs) or len(outs) != len(outputs):
        raise RuntimeError(f"'{res['param']}': blobs {ins} -> {outs}, expected {inputs} -> {outputs}")
    bi = res["batch_index"]
    if set(bi) != set(ins) | set(outs):
        raise RuntimeError(f"pnnx's test script gives batch axes for {sorted(bi)}, expected {ins + outs}")
    return {"inputs": [{"name": n, "blob": b, "dtype": t, "shape": list(s), "batch_index": bi[b]}
                       for n, b, t, s in zip(inputs, ins, dtypes, shapes)],
            "outputs": [{"name": n, "blob": b, "batch_index": bi[b]} for n, b in zip(outputs, outs)],
            "post": post, "converted_whole": whole, "blocked_by": blocked or []}


def export_ncnn(model_dir: str, model: Optional[nn.Module] = None, graphs: Sequence[str] = GRAPHS,
                try_whole: bool = True) -> dict:
    """ncnn graphs for ``graphs`` of a tools/export.py folder. Each graph is first
    converted whole from its ``.ts`` (``try_whole``); where ncnn cannot create
    some of its layers, the split graph is built from ``model`` (the same weights,
    conv+BN fused as :func:`mobileinst.export.load_model` gives it) with the numpy post-processing named in
    its json. With ``model`` given, mask_head (which converts whole) is rebuilt with a
    MatMul in place of its Einsum (:class:`NcnnMaskHead`, ncnn's Einsum is slow).
    The split image / keyframe graphs rank with the settings of the folder's
    export_meta.json (MASK_THRESHOLD, MAX_DETECTIONS, MULTI_CLASS, NMS_SIGMA), which
    must be ``model``'s. export_meta.json's "files" is then rewritten with the new files.
    Returns {name: {"files", "converted_whole", "blocked_by"}}."""
    meta = read_export_meta(model_dir)
    if model is not None:
        check_ranking_settings(model, meta, os.path.join(model_dir, META_FILE))
    h, w = meta.input_size
    nh, nw = meta.nonkey_input_size
    report = {}
    with tempfile.TemporaryDirectory(prefix="ncnn_export_") as tmp:
        for name in graphs:
            ts = os.path.join(model_dir, f"{name}.ts")
            blocked = None
            if try_whole and os.path.exists(ts) and not (name == "mask_head" and model is not None):
                res = _convert_whole(name, ts, tmp, meta)
                if not res["unsupported"]:
                    spec = _spec(res, *_WHOLE_IO[name], _whole_shapes(name, model_dir, meta), whole=True)
                    report[name] = {"files": _install(res, spec, model_dir, name), "converted_whole": True,
                                    "blocked_by": []}
                    logger.info(f"{name}: converted whole")
                    continue
                blocked = res["unsupported"]
                logger.info(f"{name}: ncnn cannot create {blocked}; splitting")
            if model is None:
                raise ValueError(f"Graph '{name}' does not convert whole to ncnn (blocked by {blocked}): "
                                 "the split graph needs the PyTorch model (--config-file and MODEL.WEIGHTS)")
            res, spec = _convert_split(name, model, meta, h, w, nh, nw, tmp)
            if res["unsupported"]:
                raise RuntimeError(f"Split graph '{name}' still has layers ncnn cannot create: {res['unsupported']}")
            spec.update(converted_whole=False, blocked_by=blocked or [])
            report[name] = {"files": _install(res, spec, model_dir, name), "converted_whole": False,
                            "blocked_by": blocked or []}
    record_files(model_dir)  # export_meta.json lists the new files (the runtime opens only listed ones)
    return report


def convert_graph(ts_path: str, model_dir: str, name: str, inputs: Sequence[str], outputs: Sequence[str],
                  shapes, dtypes: Sequence[str], shapes2=None) -> Dict[str, str]:
    """Any TorchScript graph (e.g. a peer model for tools/benchmark_backends.py) whole to
    ``{name}.ncnn.*`` in ``model_dir``, run by the ncnn backend without post-processing.
    ``dtypes``: numpy dtype names of the inputs ("float32"; "uint8" is given to ncnn as float)."""
    types = ["u8" if d == "uint8" else "f32" for d in dtypes]
    with tempfile.TemporaryDirectory(prefix="ncnn_export_") as tmp:
        res = convert_torchscript(ts_path, tmp, shapes, types, shapes2)
        if res["unsupported"]:
            raise RuntimeError(f"'{ts_path}' has layers ncnn cannot create: {res['unsupported']}")
        spec = _spec(res, inputs, outputs, dtypes, shapes, whole=True)
        return _install(res, spec, model_dir, name)


# graph name -> (input names, output names, input dtypes) of the whole graphs (build_graph_modules)
_WHOLE_IO = {
    "image": (["image"], ["scores", "classes", "mask_probs"], ["uint8"]),
    "keyframe": (["image"], ["kernels", "scores", "classes", "class_scores", "mask_features"], ["uint8"]),
    "mask_head": (["mask_features", "kernels"], ["mask_probs"], ["float32", "float32"]),
    "nonkeyframe": (["image", "kernels"], ["mask_probs"], ["uint8", "float32"]),
}


def onnx_input_shapes(path: str) -> Dict[str, list]:
    """name -> shape of an ONNX graph's inputs (a dynamic axis as its name)."""
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    return {i.name: [d.dim_value if d.HasField("dim_value") else d.dim_param for d in i.type.tensor_type.shape.dim]
            for i in graph.input}


def check_ranking_settings(model, meta: ExportMeta, path: str) -> None:
    """The split graphs rank in the runtime with export_meta.json's settings: they must be
    the model's (the config given to the export), else ``ValueError`` naming the field."""
    own = {"mask_threshold": float(model.mask_threshold), "max_detections": int(model.max_detections),
           "multi_class": bool(model.multi_class), "nms_sigma": float(model.nms_sigma)}
    for field, value in own.items():
        if getattr(meta, field) != value:
            raise ValueError(f"'{path}': field '{field}' is {getattr(meta, field)!r} but the model's is {value!r}; "
                             "export the ncnn graphs with the config of the ONNX export")


def _whole_shapes(name, model_dir, meta):
    shapes = onnx_input_shapes(os.path.join(model_dir, f"{name}.onnx"))
    return [shapes[n] for n in _WHOLE_IO[name][0]]


def _convert_whole(name, ts, tmp, meta):
    """The fixed input shapes of the ONNX graph of the same name (tools/export.py
    writes both); the kernels' count is given at 4 and 7 so that pnnx keeps it dynamic."""
    h, w = meta.input_size
    if name in ("image", "keyframe"):
        return convert_torchscript(ts, tmp, [[1, 3, h, w]], ["u8"])
    shapes = onnx_input_shapes(os.path.join(os.path.dirname(ts), f"{name}.onnx"))
    first = "mask_features" if name == "mask_head" else "image"
    d = int(shapes["kernels"][1])
    types = ["f32" if name == "mask_head" else "u8", "f32"]
    return convert_torchscript(ts, tmp, [shapes[first], [4, d]], types, [shapes[first], [7, d]])


def _convert_split(name, model, meta, h, w, nh, nw, tmp):
    """The network in ncnn; the json's "post" names what the runtime adds in numpy
    (the ranking of the image / keyframe graphs, with export_meta.json's settings)."""
    d = int(model.mask_decoder.kernel_dim)
    img = torch.randint(0, 255, (1, 3, h, w)).float()
    if name in ("image", "keyframe"):
        ts = _trace(NcnnNetwork(model, h, w), (img,), os.path.join(tmp, f"{name}_net.ts"))
        res = convert_torchscript(ts, tmp, [[1, 3, h, w]], ["f32"])
        return res, _spec(res, ["image"], NETWORK_OUTPUTS, ["uint8"], [[1, 3, h, w]], post={"kind": name},
                          whole=False)
    if name == "mask_head":
        ph, pw = meta.padded_size
        s = int(model.mask_stride)
        x_mask = torch.randn(1, d, ph // s, pw // s)
        ts = _trace(NcnnMaskHead(model, h, w), (x_mask, torch.randn(4, d)), os.path.join(tmp, f"{name}_net.ts"))
        shape = list(x_mask.shape)
        res = convert_torchscript(ts, tmp, [shape, [4, d]], ["f32", "f32"], [shape, [7, d]])
        return res, _spec(res, ["mask_features", "kernels"], ["mask_probs"], ["float32", "float32"],
                          [shape, ["k", d]], post={"kind": "drop_batch"}, whole=False)
    if name == "nonkeyframe":
        img = torch.randint(0, 255, (1, 3, nh, nw)).float()
        ts = _trace(NcnnNonKeyframe(model, nh, nw), (img, torch.randn(4, d)), os.path.join(tmp, f"{name}_net.ts"))
        res = convert_torchscript(ts, tmp, [[1, 3, nh, nw], [4, d]], ["f32", "f32"], [[1, 3, nh, nw], [7, d]])
        return res, _spec(res, ["image", "kernels"], ["mask_probs"], ["uint8", "float32"],
                          [[1, 3, nh, nw], ["k", d]], post={"kind": "drop_batch"}, whole=False)
    raise ValueError(f"No split graph for '{name}'")

