"""ONNX export and ONNX Runtime: every registered variant, trained on ESC-50 folds 1, 2, 3, 5, exported and run on the
400 fold-4 embeddings must answer as the engine does; quantized layers must be stored at their bit-width."""
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from qmoe.app.inference import SHIP_FOLD, load_model, shipped_models
from qmoe.deploy.export import export, export_trained
from qmoe.deploy.runtime import OnnxRuntimeModel, load, parity
from qmoe.experiments.experiment import RunConfig, fit_fold
from qmoe.experiments.reproduce import MOE, SINGLE
from qmoe.models.registry import get_variant

from conftest import ROOT

EPOCHS = {"single": 6, "moe": 4}  # a few epochs: parity needs trained, non-trivial weights, not good ones
MIN_AGREEMENT = 0.995  # issue 11: >= 99.5 % of the 400 fold-4 clips


@pytest.fixture(scope="module")
def fold4():
    """variant -> (trained engine model after post-training steps, standardized fold-4 embeddings)."""
    cache = {}

    def get(variant):
        if variant not in cache:
            cfg = RunConfig("esc50", "major", "predefined", variant, SHIP_FOLD, 0)
            f = fit_fold(cfg, train_overrides={"max_epochs": EPOCHS[get_variant(variant).family]})
            cache[variant] = (f.model, f.X[f.test_idx])
        return cache[variant]

    return get


@pytest.mark.parametrize("variant", [*SINGLE, *MOE])
def test_every_variant_answers_on_onnx_runtime_as_the_engine(variant, fold4):
    model, x = fold4(variant)
    deployed = load(model, "onnxruntime")
    p = parity(model, x, deployed)
    print(f"{variant}: agreement {p['agreement']:.4f} on {p['n']} clips, max |probability difference| "
          f"{p['max_prob_diff']:.1e}, ONNX {deployed.nbytes:,} bytes vs packed {int(model.packed().nbytes):,}")
    assert p["n"] == 400 and p["agreement"] >= MIN_AGREEMENT
    assert p["max_prob_diff"] < 0.05
    # the device graph (one clip per call) and the any-batch graph are the same model (their kernels may round a
    # float differently, which can move one activation code: logits agree to ~1e-3)
    one_by_one = np.concatenate([deployed(x[i:i + 1]) for i in range(0, 400, 7)])
    np.testing.assert_allclose(one_by_one, deployed(x)[::7], atol=1e-2)


BITS_STORED = {"Q1-Base": 2, "Q2-Base": 2, "Q4-Base": 4, "BitNet-Base": 2, "Popcount-Base": 2}


@pytest.mark.parametrize("variant", [*BITS_STORED, "Q8-Base", "Q16-Base", "Q8-Base-PTQ"])
def test_quantized_layers_are_stored_at_their_bit_width(variant, fold4):
    model, _ = fold4(variant)
    graph = export(model).graph
    hidden = 1280 * 640 + 640 * 320
    nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
    ints = [n for n in graph.node if n.op_type == "MatMulIntegerToFloat"]
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    big_floats = [w for w in weights.values() if w.dtype == np.float32 and w.size >= 640 * 320]
    assert not big_floats, "a hidden layer's weights were stored as float32"
    if variant in BITS_STORED:
        assert len(nbits) == 2 and all(next(a.i for a in n.attribute if a.name == "bits") == BITS_STORED[variant]
                                       for n in nbits)
        packed = sum(weights[n.input[1]].size for n in nbits)  # uint8 blobs
        assert packed <= hidden * BITS_STORED[variant] / 8 * 1.13  # + a sentinel per 127 inputs, padding to blocks
    else:
        codes = [weights[n.input[1]] for n in ints]
        assert codes and all(c.dtype == np.int8 for c in codes)
        per_weight = sum(c.size for c in codes) / (hidden + (320 * 5 if variant == "Q8-Base-PTQ" else 0))
        assert per_weight == pytest.approx(2.0 if variant == "Q16-Base" else 1.0)


# widths no CPU kernel takes as such (ONNX Runtime 1.32's MatMulNBits: 2, 4, 8 bits): the next that holds the codes
OTHER_WIDTHS = {"Q3-Base": ("MatMulNBits", 4), "Q6-Base": ("MatMulIntegerToFloat", 1.0),
                "Q12-Base": ("MatMulIntegerToFloat", 2.0)}


@pytest.mark.parametrize("variant", OTHER_WIDTHS)
def test_other_bit_widths_answer_on_onnx_runtime_as_the_engine(variant, fold4):
    model, x = fold4(variant)
    p = parity(model, x)
    assert p["n"] == 400 and p["agreement"] >= MIN_AGREEMENT and p["max_prob_diff"] < 0.05
    graph = export(model).graph
    op, width = OTHER_WIDTHS[variant]
    kernels = [n for n in graph.node if n.op_type in ("MatMulNBits", "MatMulIntegerToFloat")]
    assert len(kernels) == 2 and {n.op_type for n in kernels} == {op}
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    if op == "MatMulNBits":
        assert all(next(a.i for a in n.attribute if a.name == "bits") == width for n in kernels)
    else:  # int8 codes (Q5- to Q7-Base) or the int16 codes' two byte planes (Q9- to Q15-Base)
        stored = sum(weights[n.input[1]].size for n in kernels)
        assert stored / (1280 * 640 + 640 * 320) == pytest.approx(width)
    bits = get_variant(variant).bits  # the engine packs 3-bit codes at 3 bits, 6-bit at 6, 12-bit ones as int16
    codes = sum(m.weight_codes.numel() * m.weight_codes.element_size() for m in model.packed().body
                if hasattr(m, "weight_codes"))
    assert codes == pytest.approx((1280 * 640 + 640 * 320) * (bits if bits < 8 else 16) / 8, rel=0.01)


@pytest.mark.parametrize("variant", ["BitNet-Q4/8-QMoE-C@0.3", "BitNet-Q4/8/16-QMoE", "BitNet-Q8PTQ-QMoE"])
def test_moe_routing_outputs_give_the_engines_routing_record(variant, fold4):
    model, x = fold4(variant)
    out = load(model, "onnxruntime", explain=True).run_all(x)
    ours, engine = model.record_from(out["router_probs"], out["mc_probs"], out["expert_logits"]), model.routing_record(x)
    np.testing.assert_array_equal(ours["chosen_expert"], engine["chosen_expert"])
    for k in ("router_probs", "curious_probs", "mc_std", "class_probs"):
        np.testing.assert_allclose(ours[k], engine[k], atol=2e-3, err_msg=k)
    assert np.abs(np.exp(out["logits"]) / np.exp(out["logits"]).sum(1, keepdims=True) - ours["class_probs"]).max() < 1e-4


def test_a_top1_moe_given_one_clip_runs_only_the_chosen_expert(fold4):
    model, _ = fold4("BitNet-Q4/8/16-QMoE")
    graph = export(model, batch=1).graph
    top = [n.op_type for n in graph.node]
    assert "MatMulNBits" not in top and "MatMulIntegerToFloat" not in top  # every expert sits in an If branch
    assert top.count("If") == 1  # If(expert 0) else If(expert 1) else ...: a chain, one branch runs


def test_export_cli_writes_a_self_contained_deployable_file(tmp_path, esc50):
    name = "esc50 / major / Q4-Base"
    out = tmp_path / "q4.onnx"
    proc = subprocess.run([sys.executable, "-m", "qmoe", "export", "--model", name, "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "bytes of ONNX" in proc.stdout and "packed model" in proc.stdout
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["class_names"]) == list(esc50.task("major").class_names)
    assert meta["variant"] == "Q4-Base" and "CC BY-NC" in meta["licence"]
    tm = load_model(str(shipped_models()[name]))
    raw = esc50.X[esc50.folds == SHIP_FOLD]  # raw backbone embeddings: the file z-scores them itself
    deployed = OnnxRuntimeModel(out.read_bytes())
    file_pred = np.concatenate([deployed(raw[i:i + 1]) for i in range(len(raw))]).argmax(1)
    assert (file_pred == tm.predict_proba(raw).argmax(1)).mean() >= MIN_AGREEMENT
    bad = subprocess.run([sys.executable, "-m", "qmoe", "export", "--model", "no such model", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "no trained model 'no such model'" in bad.stderr


def test_export_trained_records_what_the_file_needs(esc50):
    tm = load_model(str(shipped_models()["esc50 / major / BitNet-Q4/8-QMoE-C@0.3"]))
    meta = {p.key: p.value for p in export_trained(tm).metadata_props}
    assert meta["variant"] == "BitNet-Q4/8-QMoE-C@0.3" and meta["backbone"] == "efficientnet_lite0"
    assert json.loads(meta["embedding"])["weights"].startswith("sha256:")
