"""Torch features equal their numpy / scipy references, on CPU, on CUDA when present, and inside ONNX."""

import io
import warnings

import numpy as np
import pytest
import scipy.fft
import scipy.signal

torch = pytest.importorskip("torch")

from avperception.config import load_array  # noqa: E402
from avperception.dsp import features as F  # noqa: E402
from avperception.dsp.gcc import gcc_from_cross_spectra, mic_pairs, phat_cross_spectra  # noqa: E402
from avperception.dsp.grid import azel_to_vector  # noqa: E402
from avperception.dsp.stft import stft as np_stft  # noqa: E402
from avperception.sim.room import plane_wave  # noqa: E402

FS = 16000


@pytest.fixture(scope="module")
def audio():
    arr = load_array("respeaker_6mic")
    x = plane_wave(arr, azel_to_vector(60, 10), FS, 6000, seed=0, snr_db=20)
    return arr, np.stack([x, 0.5 * x[::-1].copy()])  # (batch 2, mics 6, samples)


def test_stft_matches_numpy_and_scipy(audio):
    _, x = audio
    st = F.Stft(512, 256)
    re, im = st(torch.from_numpy(x))  # framing + FFT
    st.use_fft = False
    re2, im2 = st(torch.from_numpy(x))  # windowed-DFT convolution (the ONNX path)
    ref = np.stack([np_stft(b, 512, 256) for b in x])  # (2, 6, 257, T)
    np.testing.assert_allclose(re2.numpy(), ref.real, atol=2e-6 * np.abs(ref).max())
    np.testing.assert_allclose(im2.numpy(), ref.imag, atol=2e-6 * np.abs(ref).max())
    assert re.shape == ref.shape
    scale = np.abs(ref).max()
    np.testing.assert_allclose(re.numpy(), ref.real, atol=2e-6 * scale)
    np.testing.assert_allclose(im.numpy(), ref.imag, atol=2e-6 * scale)
    _, _, z = scipy.signal.stft(x[0], FS, window="hann", nperseg=512, noverlap=256, boundary=None, padded=False,
                                detrend=False)
    z = z * scipy.signal.get_window("hann", 512).sum()  # scipy scales by 1 / sum(window)
    np.testing.assert_allclose(re[0].numpy(), z.real, atol=2e-6 * scale)
    np.testing.assert_allclose(im[0].numpy(), z.imag, atol=2e-6 * scale)


def test_magnitude_and_phase(audio):
    _, x = audio
    ref = np_stft(x[0], 512, 256)
    re, im = F.Stft(512, 256)(torch.from_numpy(x[0]))
    np.testing.assert_allclose(F.magnitude(re, im).numpy(), np.abs(ref), rtol=1e-4, atol=1e-4)
    strong = np.abs(ref) > 1e-2 * np.abs(ref).max()
    d = np.angle(np.exp(1j * (F.phase(re, im).numpy() - np.angle(ref))))
    assert np.abs(d[strong]).max() < 1e-3


def test_mel_scale_and_filterbank():
    assert float(F.hz_to_mel(1000.0)) == pytest.approx(15.0)  # Slaney: linear to 1 kHz at 200/3 Hz per mel
    assert float(F.hz_to_mel(1000.0, htk=True)) == pytest.approx(1000.0, abs=0.1)
    for htk in (False, True):
        f = np.array([50.0, 440.0, 1000.0, 3000.0, 7900.0])
        np.testing.assert_allclose(F.mel_to_hz(F.hz_to_mel(f, htk), htk), f, rtol=1e-9)
    fb = F.mel_filterbank(40, 512, FS, 0.0, 8000.0, norm=None)
    assert fb.shape == (40, 257) and fb.max() <= 1.0 + 1e-6
    inner = (np.fft.rfftfreq(512, 1 / FS) > 200) & (np.fft.rfftfreq(512, 1 / FS) < 7000)
    np.testing.assert_allclose(fb.sum(0)[inner], 1.0, atol=1e-5)  # peak-1 triangles tile the band
    fbs = F.mel_filterbank(40, 512, FS, 0.0, 8000.0)
    hz_per_bin = FS / 512
    np.testing.assert_allclose(fbs.sum(1) * hz_per_bin, 1.0, rtol=0.1)  # slaney: unit area


def test_dct_matrix_is_scipy_dct():
    x = np.random.default_rng(0).standard_normal((5, 40))
    np.testing.assert_allclose(x @ F.dct_matrix(13, 40).T, scipy.fft.dct(x, type=2, norm="ortho")[:, :13], atol=1e-5)
    d = F.dct_matrix(40, 40)
    np.testing.assert_allclose(d @ d.T, np.eye(40), atol=1e-5)


def test_log_mel_and_mfcc_match_numpy(audio):
    _, x = audio
    lm = F.LogMel(FS, 512, 256, n_mels=48, fmin=50.0)(torch.from_numpy(x)).numpy()
    ref_spec = np.stack([np_stft(b, 512, 256) for b in x])
    fb = F.mel_filterbank(48, 512, FS, 50.0)
    ref = F.np_log_mel(ref_spec, fb)
    np.testing.assert_allclose(lm, ref, atol=2e-4)
    mf = F.Mfcc(n_mfcc=13, sample_rate=FS, nfft=512, hop=256, n_mels=48, fmin=50.0)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(mf, F.np_mfcc(ref, 13), atol=1e-3)


def test_gcc_phat_stack_matches_numpy_and_finds_the_delay(audio):
    arr, x = audio
    nfft, hop, interp, max_lag = 512, 256, 2, 8.0
    g = F.GccPhat(arr.num_mics, FS, nfft, hop, max_lag_samples=max_lag, interp=interp, fmin=300.0, fmax=7000.0)
    out = g(torch.from_numpy(x[0])).numpy()  # (P, L, T)
    pairs = mic_pairs(arr.num_mics)
    spec = np_stft(x[0], nfft, hop)
    freqs = np.fft.rfftfreq(nfft, 1 / FS)
    band = (freqs >= 300) & (freqs <= 7000)
    lags = np.arange(-int(max_lag * interp), int(max_lag * interp) + 1)
    for t in (0, 5, spec.shape[-1] - 1):
        r = phat_cross_spectra(spec[:, :, t:t + 1], pairs, band)
        cc = gcc_from_cross_spectra(r, nfft, interp)[:, lags % (nfft * interp)] * nfft / (2 * band.sum())
        np.testing.assert_allclose(out[:, :, t], cc, atol=2e-4)
    # the peak of each pair sits at the plane wave's delay
    u = azel_to_vector(60, 10)
    pos = arr.centered
    tau = (pos[pairs[:, 0]] - pos[pairs[:, 1]]) @ u / 343.0 * FS  # samples, q lags p
    peak = lags[np.argmax(out.mean(-1), axis=1)] / interp
    np.testing.assert_allclose(peak, tau, atol=0.5)


def test_front_end_outputs_and_shapes(audio):
    arr, x = audio
    spec = F.FeatureSpec(sample_rate=FS, nfft=512, hop=256, n_mels=40, n_mfcc=13)
    fe = F.FeatureFrontEnd(spec, num_mics=arr.num_mics, aperture_m=arr.aperture)
    out = fe(torch.from_numpy(x))
    t = 1 + (x.shape[-1] - 512) // 256
    assert out["stft_mag"].shape == (2, 6, 257, t) and out["stft_phase"].shape == (2, 6, 257, t)
    assert out["logmel"].shape == (2, 6, 40, t) and out["mfcc"].shape == (2, 6, 13, t)
    assert out["gcc"].shape[:2] == (2, 15) and out["gcc"].shape[-1] == t
    assert fe.stacked(torch.from_numpy(x), ("logmel",)).shape == (2, 6, 40, t)
    with pytest.raises(ValueError):
        F.FeatureSpec(n_mfcc=80, n_mels=40).validate()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(audio):
    arr, x = audio
    fe = F.FeatureFrontEnd(F.FeatureSpec(), num_mics=arr.num_mics)
    cpu = fe(torch.from_numpy(x))
    gpu = fe.to("cuda")(torch.from_numpy(x).cuda())
    for k in cpu:
        np.testing.assert_allclose(gpu[k].cpu().numpy(), cpu[k].numpy(), atol=1e-3, rtol=1e-3)


class _AsTuple(torch.nn.Module):
    KEYS = ("stft_mag", "logmel", "mfcc", "gcc")

    def __init__(self, fe):
        super().__init__()
        self.fe = fe

    def forward(self, audio):
        out = self.fe(audio)
        return tuple(out[k] for k in self.KEYS)


def test_onnx_export_matches_torch(audio):
    ort = pytest.importorskip("onnxruntime")
    arr, x = audio
    fe = F.FeatureFrontEnd(F.FeatureSpec(n_mels=40, n_mfcc=13), num_mics=arr.num_mics).eval()
    model = _AsTuple(fe)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x),), buf, dynamo=False, opset_version=17, input_names=["audio"],
                          output_names=list(_AsTuple.KEYS), dynamic_axes={"audio": {0: "batch", 2: "samples"}})
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    longer = np.concatenate([x, x[..., :1000]], axis=-1)  # another length than the one exported with
    for inp in (x, longer):
        got = sess.run(None, {"audio": inp})
        with torch.no_grad():
            want = model(torch.from_numpy(inp))
        for k, g, w in zip(_AsTuple.KEYS, got, want):
            assert g.shape == tuple(w.shape), k
            np.testing.assert_allclose(g, w.numpy(), atol=2e-3, rtol=1e-3, err_msg=k)
