import pytest


from avperception.ros.capture_node import open_input_stream  # noqa: E402


def test_missing_device_is_a_clear_error():
    try:
        import sounddevice as sd

        devices = sd.query_devices()
    except Exception:
        devices = []
    with pytest.raises(RuntimeError) as e:
        open_input_stream("no-such-microphone-array", 4, 16000, 1024, lambda *a: None)
    msg = str(e.value)
    if any(d["max_input_channels"] > 0 for d in devices):
        assert "cannot open input device 'no-such-microphone-array'" in msg and "Input devices:" in msg
    else:
        assert "no audio input device found" in msg or "PortAudio" in msg or "no audio devices" in msg
