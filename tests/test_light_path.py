"""What classify computes without torch/scipy.signal/librosa.core equals what those libraries compute."""
import numpy as np
import pytest

from qmoe.audio import spectrogram as S


def test_window_mel_basis_and_axis_edges_equal_scipy_and_librosa_bit_for_bit():
    import librosa
    import scipy.signal

    assert np.array_equal(S._window(), scipy.signal.get_window("hann", S.N_FFT, fftbins=True))
    basis = librosa.filters.mel(sr=S.FIGURE_SR, n_fft=S.N_FFT, n_mels=S.N_MELS)
    assert S._mel_basis().dtype == basis.dtype and np.array_equal(S._mel_basis(), basis)
    for n, lo, hi in [(S.N_MELS, 0.0, S.AXIS_FMAX), (S.N_MELS + 2, 0.0, S.FIGURE_SR / 2), (40, 300.0, 8000.0)]:
        assert np.array_equal(S._mel_frequencies(n, lo, hi), librosa.mel_frequencies(n, fmin=lo, fmax=hi))
    x_edges, _ = S.mesh_edges(S.FIGURE_FRAMES)
    assert np.array_equal(x_edges, librosa.frames_to_time(np.arange(S.FIGURE_FRAMES + 1), sr=S.FIGURE_SR,
                                                          hop_length=S.HOP))


@pytest.fixture(scope="module")
def figures():
    from qmoe.audio.decode import load_audio, training_windows
    from qmoe.core import paths

    out = []
    for f in sorted(paths.EXAMPLES_DIR.glob("*.flac"))[:4]:
        windows, _ = training_windows(load_audio(f))
        out.append(S.render_figure(windows[0]))
    return out


def test_onnx_backbone_embeds_as_torch_within_float_rounding(figures):
    from PIL import Image
    import torch

    from qmoe.audio.backbones import get_backbone, preprocess_image

    torch_bb, onnx_bb = get_backbone(), get_backbone(runtime="onnxruntime")
    assert (onnx_bb.weights_id, onnx_bb.dim) == (torch_bb.weights_id, torch_bb.dim)  # one cache entry per input
    ours = np.stack([preprocess_image(im, onnx_bb.preprocess) for im in figures])
    theirs = torch.stack([torch_bb.transform(Image.fromarray(im)) for im in figures]).numpy()
    assert np.array_equal(ours, theirs)  # timm's eval transform, exactly
    a, b = onnx_bb.embed(figures), torch_bb.embed(figures)
    assert np.abs(a - b).max() < 1e-4 * np.abs(b).max()


def test_classify_answers_as_the_torch_backbone_and_engine_do():
    from qmoe.app.inference import classify, load_model, shipped_models
    from qmoe.audio.backbones import get_backbone
    from qmoe.audio.decode import load_audio, training_windows
    from qmoe.core import paths
    from qmoe.deploy.runtime import load

    path = shipped_models()["esc50 / major / FP32-Base"]
    tm = load_model(str(path))
    engine = load(tm.model, "onnxruntime")
    for f in sorted(paths.EXAMPLES_DIR.glob("*.flac"))[:3]:
        windows, _ = training_windows(load_audio(f))
        x = tm.standardize(get_backbone().embed([S.render_figure(w) for w in windows]))
        logits = engine(x).astype(np.float64)
        ref = np.exp(logits - logits.max(1, keepdims=True))
        ref = (ref / ref.sum(1, keepdims=True)).mean(0)
        np.testing.assert_allclose(classify(f, path).probs, ref, atol=1e-4)


def test_two_threads_exporting_the_backbone_at_once_both_get_it(tmp_path, monkeypatch):
    """Two app sessions' first uploads export the ONNX backbone together: torch.onnx.export is not thread-safe
    (its global `in_onnx_export` flag), so one export runs and the other thread waits for it and reads it."""
    import threading

    from qmoe.audio import backbones
    from qmoe.core import paths

    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path)
    got, errors = [], []

    def first_use():
        try:
            got.append(backbones._onnx_backbone(backbones.DEFAULT_BACKBONE))
        except Exception as e:  # noqa: BLE001 (the test reports whatever a thread raised)
            errors.append(e)

    threads = [threading.Thread(target=first_use) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(got) == 2 and got[0].onnx_sha256 == got[1].onnx_sha256
    assert len(list(tmp_path.rglob("*.onnx"))) == 1
