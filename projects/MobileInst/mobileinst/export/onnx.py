# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Writing the graph modules (:mod:`mobileinst.export.graphs`) as ONNX and TorchScript,
each file under a temporary name renamed when complete, and checking an ONNX graph
against its PyTorch module with onnxruntime."""
import os
import warnings

import numpy as np
import torch


def replace_tmp(tmp, final):
    """Rename the complete file ``tmp`` to ``final``; returns ``final``."""
    os.replace(tmp, final)
    return final


def export_onnx(module, inputs, input_names, output_names, dynamic_axes, path, opset=17):
    tmp = path + ".tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, inputs, tmp, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False)
    return replace_tmp(tmp, path)


def export_torchscript(module, inputs, path):
    tmp = path + ".tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, inputs, check_trace=False)
    traced.save(tmp)
    return replace_tmp(tmp, path)


def check_parity(module, inputs, input_names, path):
    """Max |onnxruntime - PyTorch| per float output; for integer outputs (classes)
    the fraction of differing elements. Outputs ranked by "scores" are
    compared row by row against the reference rows of (nearly) equal score,
    since float noise may swap queries whose scores tie: equal within 1e-5 or
    twice the largest score difference, whichever is larger (a mask pixel
    crossing the threshold moves a mask-rescored score by more than 1e-5)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {n: x.numpy() for n, x in zip(input_names, inputs)})
    with torch.no_grad():
        ref = module(*inputs)
    ref = ref if isinstance(ref, tuple) else (ref,)
    names = [o.name for o in sess.get_outputs()]
    ref = [r.numpy() for r in ref]
    ties = None
    if "scores" in names and names.index("scores") == 0:
        s_ort, s_ref = outs[0].astype(np.float64), ref[0].astype(np.float64)
        tol = max(1e-5, 2 * float(np.abs(s_ort - s_ref).max(initial=0.0)))
        ties = np.abs(s_ort[:, None] - s_ref[None, :]) <= tol  # (K, K): rows that may swap
    report = {}
    for i, (name, o, r) in enumerate(zip(names, outs, ref)):
        if np.issubdtype(o.dtype, np.integer):
            report[name] = float((o != r).mean())
        elif ties is not None and i > 0 and o.shape[:1] == ties.shape[:1] and o.ndim > 1:
            diff = np.abs(o.reshape(len(o), 1, -1).astype(np.float64) - r.reshape(1, len(r), -1)).max(-1)
            report[name] = float(np.where(ties, diff, np.inf).min(1).max())
        else:
            report[name] = float(np.abs(o.astype(np.float64) - r.astype(np.float64)).max())
    return report
