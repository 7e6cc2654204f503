# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Inference backends for the exported graphs: onnxruntime, OpenVINO, ncnn.

One interface, so that the runtime runs the same tracker on any of them::

    graph = open_graph(model_dir, "keyframe", backend="ncnn", threads=1)
    graph.inputs                       # [TensorInfo(name, shape, dtype)], shape with "k" for dynamic axes
    out = graph({"image": x})          # {output name: np.ndarray}
    kernels, scores, *_ = graph.run(None, {"image": x})   # onnxruntime's call form

Graph names are those of tools/export.py (``image``, ``keyframe``, ``mask_head``,
``nonkeyframe``, with ``_int8`` for the quantized ones); a file name (``image.onnx``)
is taken too. Files read per backend:

* ``onnxruntime``: ``{name}.onnx`` (fp32 and the int8 QDQ graphs).
* ``openvino``: ``{name}.xml`` (an OpenVINO IR: the int8 graphs NNCF wrote,
  ``mobileinst.export.openvino``) where there is one, else the same ``{name}.onnx``;
  compiled for the CPU (f32 inference precision: no bf16 on CPUs that have it).
  onnxruntime's QDQ graphs compile partly as fp32 fake quantization (below).
* ``ncnn``: ``{name}.ncnn.param`` / ``.bin`` / ``.json`` (``mobileinst.export.ncnn``);
  where a graph had to be split, the json names the numpy post-processing
  (``ranking``) that gives the same outputs as the ONNX graph, with the ranking
  settings of export_meta.json (``mobileinst_core.export_meta``). fp32 only.

In an export folder (one with export_meta.json) a graph is opened only if
export_meta.json's "files" lists each file it reads, with that file's size and
sha256 (:func:`mobileinst_core.export_meta.verify_file`): a stale graph or one of
another export is refused, naming the file and the field. A folder of graphs
without export_meta.json (other models' graphs, ``tools/benchmark_backends.py``)
is read as it is.

Each library is imported when its backend is first used; a missing one raises
ImportError naming the package (the extra: ``pip install mobileinst[ncnn]``) to
install. No torch, no detectron2 here.
"""
import importlib
import json
import os
import warnings
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np

from mobileinst_core.export_meta import META_FILE, read_export_meta, verify_file

__all__ = ["TensorInfo", "Graph", "Backend", "OnnxRuntimeBackend", "OpenVinoBackend", "NcnnBackend", "BACKENDS",
           "get_backend", "open_graph", "available_backends", "read_ncnn_spec"]


class TensorInfo(NamedTuple):
    name: str
    shape: list  # ints, a string for a dynamic axis
    dtype: type  # np.uint8, np.float32, np.int64


def _missing(package: str, backend: str, err: Exception) -> ImportError:
    return ImportError(f"The '{backend}' backend needs the '{package}' package: pip install {package} "
                       f"(the extra mobileinst[{backend}]). Import failed: {err}")


def _graph_name(graph: str) -> str:
    for ext in (".onnx", ".ncnn.param", ".param", ".xml"):
        if graph.endswith(ext):
            return graph[: -len(ext)]
    return graph


def _check_file(path: str, hint: str):
    if not os.path.exists(path):
        raise FileNotFoundError(f"Exported graph '{path}' does not exist; {hint}")


def _listed(model_dir: str, name: str) -> bool:
    """Whether the folder has file ``name``: listed in its export_meta.json's "files"
    (an export folder), else present (a folder of graphs that is not an export)."""
    if os.path.exists(os.path.join(model_dir, META_FILE)):
        return name in read_export_meta(model_dir).files
    return os.path.exists(os.path.join(model_dir, name))


def graph_file(model_dir: str, name: str, hint: str) -> str:
    """The path of file ``name`` of a graph in ``model_dir``: it must exist
    (``FileNotFoundError`` with ``hint``) and, in an export folder, be one of the files
    its export_meta.json lists, with the size and sha256 listed
    (:func:`mobileinst_core.export_meta.verify_file`)."""
    path = os.path.join(model_dir, name)
    _check_file(path, hint)
    if os.path.exists(os.path.join(model_dir, META_FILE)):
        verify_file(model_dir, read_export_meta(model_dir), name)
    return path


_ONNX_DTYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(int64)": np.int64,
                "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


class Graph:
    """One loaded graph. Subclasses set ``name``, ``inputs``, ``output_names`` and
    implement ``__call__(feeds) -> {name: array}``."""

    backend = ""
    name = ""
    inputs: List[TensorInfo] = []
    output_names: List[str] = []
    output_shapes: Dict[str, list] = {}  # where the backend knows them (onnxruntime)

    def __call__(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def run(self, output_names: Optional[Sequence[str]], feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
        """onnxruntime's ``InferenceSession.run``: outputs as a list, all (None) or the named ones."""
        out = self(feeds)
        return [out[n] for n in (output_names or self.output_names)]

    def input_dtype(self, name: str):
        return next(i.dtype for i in self.inputs if i.name == name)

    def _check_feeds(self, feeds):
        missing = [i.name for i in self.inputs if i.name not in feeds]
        if missing:
            raise KeyError(f"Graph '{self.name}' ({self.backend}) needs inputs {missing}; got {sorted(feeds)}")

    def __repr__(self):
        return f"<{self.backend} graph '{self.name}': {[tuple(i) for i in self.inputs]} -> {self.output_names}>"


class Backend:
    name = ""
    package = ""
    int8 = False  # whether the backend runs the *_int8 graphs

    def load(self):
        """Import the library (ImportError naming the extra if it is missing)."""
        try:
            return importlib.import_module(self.package)
        except ImportError as e:
            raise _missing(self.package, self.name, e) from e

    def available(self) -> bool:
        try:
            self.load()
            return True
        except ImportError:
            return False

    def open(self, model_dir: str, graph: str, threads: int = 0) -> Graph:
        raise NotImplementedError


# ------------------------------------------------------------------ onnxruntime
class _OrtGraph(Graph):
    backend = "onnxruntime"

    def __init__(self, session, name):
        self.session, self.name = session, name
        self.inputs = [TensorInfo(i.name, list(i.shape), _ONNX_DTYPES.get(i.type, np.float32))
                       for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self.output_shapes = {o.name: list(o.shape) for o in session.get_outputs()}

    def __call__(self, feeds):
        self._check_feeds(feeds)
        outs = self.session.run(None, {i.name: feeds[i.name] for i in self.inputs})
        return dict(zip(self.output_names, outs))

    def run(self, output_names, feeds):
        return self.session.run(output_names, {i.name: feeds[i.name] for i in self.inputs})


class OnnxRuntimeBackend(Backend):
    """``{name}.onnx`` with onnxruntime's CPU provider, every graph optimisation, errors-only logging."""

    name, package, int8 = "onnxruntime", "onnxruntime", True

    def session(self, path: str, threads: int = 0, profile_prefix: str = None):
        """The onnxruntime session of ``path``; ``profile_prefix``: also write onnxruntime's
        per-node profile under that prefix (``tools/analysis/profile_onnx.py``)."""
        ort = self.load()
        _check_file(path, "run tools/export.py first")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only: constant folding warns for every folded initializer
        if profile_prefix:
            opts.enable_profiling = True
            opts.profile_file_prefix = profile_prefix
        return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])

    def open(self, model_dir, graph, threads=0):
        name = _graph_name(graph)
        path = graph_file(model_dir, f"{name}.onnx", "run tools/export.py first")
        return _OrtGraph(self.session(path, threads), name)


# ------------------------------------------------------------------ OpenVINO
class _OvGraph(Graph):
    backend = "openvino"
    int8_emulated = False

    def __init__(self, compiled, name, ov):
        self.compiled, self.name = compiled, name
        self.request = compiled.create_infer_request()
        self.inputs = []
        for port in compiled.inputs:
            shape = [d.get_length() if d.is_static else "k" for d in port.get_partial_shape()]
            self.inputs.append(TensorInfo(_ov_name(port), shape, _ov_dtype(port.get_element_type(), ov)))
        self.output_names = [_ov_name(port) for port in compiled.outputs]
        self._int_outputs = [np.issubdtype(_ov_dtype(p.get_element_type(), ov), np.integer) for p in compiled.outputs]

    def __call__(self, feeds):
        self._check_feeds(feeds)
        self.request.infer({i.name: np.ascontiguousarray(feeds[i.name], dtype=i.dtype) for i in self.inputs})
        out = {}
        for k, (port, name) in enumerate(zip(self.compiled.outputs, self.output_names)):
            a = self.request.get_tensor(port).data
            # the request's buffers are reused by the next call: copy; ints as ONNX Runtime gives them
            out[name] = a.astype(np.int64) if self._int_outputs[k] else a.copy()
        return out

    def int8_share(self) -> float:
        """The share of the compiled graph's convolutions and matrix products that OpenVINO
        runs in int8 (runtime precision u8 / i8): 0 for an fp32 or emulated graph."""
        kinds, low = 0, 0
        for op in self.compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            if "layerType" in info and info["layerType"].astype(str) in ("Convolution", "MatMul", "FullyConnected"):
                kinds += 1
                low += "runtimePrecision" in info and info["runtimePrecision"].astype(str) in ("u8", "i8")
        return low / max(kinds, 1)


def _ov_name(port) -> str:
    """The ONNX name of a port: OpenVINO may give a tensor several names (an output that
    is also an inner node's, '/Slice_2_output_0'); the graph's own has no '/' or ':'."""
    names = sorted(port.get_names())
    plain = [n for n in names if "/" not in n and ":" not in n]
    return (plain or names or [port.get_any_name()])[0]


def _ov_dtype(t, ov):
    return {ov.Type.u8: np.uint8, ov.Type.f32: np.float32, ov.Type.i64: np.int64, ov.Type.i32: np.int32,
            ov.Type.boolean: np.bool_}.get(t, np.float32)


class OpenVinoBackend(Backend):
    """``{name}.xml`` (NNCF's int8 IR) or ``{name}.onnx`` read and compiled by OpenVINO for the CPU."""

    name, package, int8 = "openvino", "openvino", True

    def __init__(self):
        self._core = None

    def core(self):
        if self._core is None:
            self._core = self.load().Core()
        return self._core

    def open(self, model_dir, graph, threads=0):
        ov = self.load()
        name = _graph_name(graph)
        if _listed(model_dir, f"{name}.xml"):  # an IR: NNCF's int8 graphs (mobileinst.export.openvino)
            path = graph_file(model_dir, f"{name}.xml", "run tools/export.py --quantize again")
            graph_file(model_dir, f"{name}.bin", f"the weights of '{path}'; run tools/export.py --quantize again")
        else:
            path = graph_file(model_dir, f"{name}.onnx", "run tools/export.py first")
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        model = self.core().read_model(path)
        try:
            compiled, emulated = self.core().compile_model(model, "CPU", config), False
        except RuntimeError as e:
            # OpenVINO's low-precision transformations throw on onnxruntime's QDQ graphs where
            # a Linear's bias is quantized too (int32 DequantizeLinear into an Add:
            # "[AddTransformation] ... index '0' out of range", the image and keyframe
            # graphs' kernel head). Without them the graph runs, but its Q/DQ pairs become
            # fp32 fake quantization: int8 numerics at fp32 speed (``int8_emulated``).
            if "Transformation" not in str(e):
                raise
            warnings.warn(f"OpenVINO cannot compile '{path}' as int8 ({str(e).strip().splitlines()[-1][:120]}...); "
                          "running its quantization as fp32 fake quantization (int8 results, not int8 speed)")
            compiled, emulated = self.core().compile_model(model, "CPU", dict(config, LP_TRANSFORMS_MODE="NO")), True
        graph = _OvGraph(compiled, name, ov)
        graph.int8_emulated = emulated
        return graph


# ------------------------------------------------------------------ ncnn
class _NcnnGraph(Graph):
    backend = "ncnn"

    def __init__(self, net, spec, name, ncnn, meta=None):
        """``meta``: the folder's :class:`~mobileinst_core.export_meta.ExportMeta`, for the
        split image and keyframe graphs (their ranking settings)."""
        self.net, self.spec, self.name, self.ncnn, self.meta = net, spec, name, ncnn, meta
        self.inputs = [TensorInfo(i["name"], i.get("shape", []), np.dtype(i["dtype"]).type) for i in spec["inputs"]]
        self.kind = (spec.get("post") or {}).get("kind")
        self.output_names = {"image": ["scores", "classes", "mask_probs"],
                             "keyframe": ["kernels", "scores", "classes", "class_scores", "mask_features"]}.get(
            self.kind, [o["name"] for o in spec["outputs"]])
        self.blobs = {o["name"]: (o["blob"], int(o.get("batch_index", 233))) for o in spec["outputs"]}

    def _extract(self, feeds, names):
        ncnn = self.ncnn
        with self.net.create_extractor() as ex:
            for i in self.spec["inputs"]:
                x = np.ascontiguousarray(feeds[i["name"]], dtype=np.float32)  # ncnn blobs are float
                # batch_index: the axis ncnn takes as the batch (233: none), as pnnx converted the blob
                ex.input(i["blob"], ncnn.Mat(x, batch_index=int(i.get("batch_index", 233))).clone())
            out = {}
            for n in names:
                blob, batch_index = self.blobs[n]
                ret, m = ex.extract(blob)
                if ret != 0:
                    raise RuntimeError(f"ncnn failed to compute '{n}' of graph '{self.name}' (error {ret})")
                out[n] = np.array(m.numpy(batch_index=batch_index), dtype=np.float32, copy=True)
        return out

    def __call__(self, feeds):
        from . import ranking

        self._check_feeds(feeds)
        m = self.meta
        if self.kind == "image":
            o = self._extract(feeds, ["pred_logits", "pred_objectness", "mask_logits"])
            scores, classes, probs = ranking.rank_image(o["pred_logits"], o["pred_objectness"], o["mask_logits"],
                                                        m.mask_threshold, m.max_detections, m.multi_class,
                                                        m.nms_sigma)
            return {"scores": scores, "classes": classes, "mask_probs": probs}
        if self.kind == "keyframe":
            names = ["pred_logits", "pred_objectness", "pred_kernels", "mask_features"]
            o = self._extract(feeds, names + (["mask_logits"] if m.nms_sigma > 0 else []))
            scores, classes, per_class = ranking.keyframe_scores(o["pred_logits"], o["pred_objectness"],
                                                                 o.get("mask_logits"), m.mask_threshold, m.nms_sigma)
            kernels = ranking._unbatch(o["pred_kernels"], 2)
            x_mask = o["mask_features"].reshape((1,) + ranking._unbatch(o["mask_features"], 3).shape)
            return {"kernels": kernels, "scores": scores, "classes": classes, "class_scores": per_class,
                    "mask_features": x_mask}
        o = self._extract(feeds, self.output_names)
        if self.kind == "drop_batch":
            o = {k: ranking._unbatch(v, v.ndim - 1) for k, v in o.items()}
        return o


_SPEC_KINDS = (None, "image", "keyframe", "drop_batch")


def read_ncnn_spec(path: str) -> dict:
    """A ``{name}.ncnn.json`` (``mobileinst.export.ncnn``): the blobs of the graph's inputs
    and outputs and the post-processing kind; ``ValueError`` naming the file and the field
    that is missing or invalid."""
    with open(path) as f:
        try:
            spec = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"'{path}' is not valid json: {e}") from e
    for field, keys in (("inputs", ("name", "blob", "dtype")), ("outputs", ("name", "blob"))):
        if not isinstance(spec.get(field), list) or not spec[field]:
            raise ValueError(f"'{path}': field '{field}' is missing or empty; re-export with tools/export.py --ncnn")
        for k, entry in enumerate(spec[field]):
            for key in keys:
                if key not in entry:
                    raise ValueError(f"'{path}': field '{field}[{k}].{key}' is missing; "
                                     "re-export with tools/export.py --ncnn")
    kind = (spec.get("post") or {}).get("kind")
    if kind not in _SPEC_KINDS:
        raise ValueError(f"'{path}': field 'post.kind' is {kind!r}; expected one of {list(_SPEC_KINDS)}")
    return spec


class NcnnBackend(Backend):
    """``{name}.ncnn.param`` / ``.bin`` / ``.json`` (``mobileinst.export.ncnn``) with ncnn's
    Python package, fp32 (fp16 / bf16 storage and arithmetic off), no Vulkan."""

    name, package, int8 = "ncnn", "ncnn", False

    def open(self, model_dir, graph, threads=0):
        ncnn = self.load()
        name = _graph_name(graph)
        if name.endswith("_int8"):
            raise ValueError(f"The ncnn backend has no int8 graphs ('{name}'): ncnn's quantization tools are "
                             "not in its Python package; use the fp32 graphs or --backend onnxruntime/openvino")
        base = os.path.join(model_dir, f"{name}.ncnn")
        for ext in (".json", ".param", ".bin"):
            graph_file(model_dir, f"{name}.ncnn{ext}", "export with tools/export.py --ncnn (or call "
                                                        "mobileinst.export.export_ncnn on the export folder)")
        spec = read_ncnn_spec(base + ".json")
        # the split image / keyframe graphs rank in numpy with the export's settings
        meta = read_export_meta(model_dir) if spec.get("post") and spec["post"].get("kind") in (
            "image", "keyframe") else None
        net = ncnn.Net()
        opt = net.opt
        opt.use_vulkan_compute = False
        opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = False
        opt.use_bf16_storage = False
        if hasattr(opt, "use_bf16_packed"):
            opt.use_bf16_packed = False
        opt.num_threads = int(threads) if threads else ncnn.get_physical_big_cpu_count()
        if net.load_param(base + ".param") != 0:
            raise RuntimeError(f"ncnn cannot read '{base}.param' (a layer this ncnn does not have?)")
        if net.load_model(base + ".bin") != 0:
            raise RuntimeError(f"ncnn cannot read '{base}.bin'")
        return _NcnnGraph(net, spec, name, ncnn, meta)


BACKENDS = {"onnxruntime": OnnxRuntimeBackend, "openvino": OpenVinoBackend, "ncnn": NcnnBackend}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"Unknown backend '{name}'; choose from {sorted(BACKENDS)}")
    return BACKENDS[name]()


def open_graph(model_dir: str, graph: str, backend: str = "onnxruntime", threads: int = 0) -> Graph:
    """Load graph ``graph`` of a tools/export.py folder with ``backend``."""
    return get_backend(backend).open(model_dir, graph, threads)


def available_backends() -> List[str]:
    """The backends whose library imports here."""
    return [n for n in BACKENDS if get_backend(n).available()]
