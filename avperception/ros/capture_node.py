"""capture_node: live multichannel capture from a sound card (sounddevice / PortAudio).

Publishes:
    audio    avperception_msgs/AudioFrame, stamped with the capture time of the first sample
Parameters: see ``NODE_PARAMS``. ``device`` is a name (substring match, as
PortAudio lists it) or an index; ``channels`` 0 means the array's input channels.
The PortAudio callback only copies into a bounded queue; a timer publishes.
When the queue is full the oldest chunk is dropped and counted.
"""

from __future__ import annotations

import queue

from rclpy.node import Node

from ..config import load_array
from . import conversions as conv
from .audio_input import audio_qos
from .params import declare

NODE_PARAMS = {
    "array": ("respeaker_4mic", "array preset name or YAML path (channels and frame_id)"),
    "device": ("", "input device name or index ('' = system default)"),
    "channels": (0, "channels to open (0: the array's input channels)"),
    "sample_rate": (16000, "Hz"),
    "chunk_samples": (1024, "samples per message"),
    "encoding": ("S16LE", "S16LE | S32LE | F32LE"),
    "queue_chunks": (32, "chunks buffered between the audio callback and the publisher"),
}


def open_input_stream(device: str, channels: int, sample_rate: int, chunk: int, callback):
    """Open a sounddevice InputStream, with errors that list the devices."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:
        raise RuntimeError(f"live capture needs sounddevice and PortAudio (apt-get install libportaudio2): {e}") from None
    dev = None if device in ("", None) else (int(device) if str(device).isdigit() else str(device))
    try:
        devices = sd.query_devices()
    except Exception as e:  # PortAudio without any host API
        raise RuntimeError(f"no audio devices found ({e})") from None
    inputs = [f"{i}: {d['name']} ({d['max_input_channels']} in)" for i, d in enumerate(devices) if d["max_input_channels"] > 0]
    if not inputs:
        raise RuntimeError("no audio input device found; connect the microphone array (listed by `python -m sounddevice`)")
    try:
        return sd.InputStream(device=dev, channels=channels, samplerate=sample_rate, blocksize=chunk,
                              dtype="float32", callback=callback)
    except Exception as e:
        raise RuntimeError(f"cannot open input device {device!r} with {channels} channels at {sample_rate} Hz: {e}. "
                           "Input devices: " + "; ".join(inputs)) from None


class CaptureNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("capture_node", **kwargs)
        p = {k: declare(self, k, v, d) for k, (v, d) in NODE_PARAMS.items()}
        self.p = p
        self.array = load_array(p["array"])
        self.channels = int(p["channels"]) or self.array.input_channels
        self.fs = int(p["sample_rate"])
        self.queue: queue.Queue = queue.Queue(maxsize=int(p["queue_chunks"]))
        self.dropped = 0
        self.seq = 0
        self.pub = self.create_publisher(self._msg_type(), "audio", audio_qos())
        self.stream = open_input_stream(str(p["device"]), self.channels, self.fs, int(p["chunk_samples"]), self._callback)
        self._offset: float | None = None  # ROS time - PortAudio stream time
        self.stream.start()
        self.create_timer(0.005, self.flush)
        self.get_logger().info(f"capturing {self.channels} channels at {self.fs} Hz from {p['device'] or 'default device'}")

    @staticmethod
    def _msg_type():
        from avperception_msgs.msg import AudioFrame

        return AudioFrame

    def _callback(self, indata, frames, time_info, status) -> None:
        # runs on PortAudio's thread: copy and hand over, never wait
        item = (indata.T.copy(), time_info.inputBufferAdcTime, self.stream.time)
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            try:
                self.queue.get_nowait()
                self.dropped += 1
            except queue.Empty:
                pass
            self.queue.put_nowait(item)

    def flush(self) -> None:
        while True:
            try:
                x, adc_time, stream_now = self.queue.get_nowait()
            except queue.Empty:
                return
            ros_now = self.get_clock().now().nanoseconds * 1e-9
            if self._offset is None:
                self._offset = ros_now - stream_now
            stamp = adc_time + self._offset if adc_time else ros_now - x.shape[1] / self.fs
            self.pub.publish(conv.audio_frame_msg(x, self.fs, stamp, self.array.frame_id, self.seq, self.p["encoding"]))
            self.seq += 1

    def destroy_node(self) -> bool:
        try:
            self.stream.stop()
            self.stream.close()
        finally:
            return super().destroy_node()


def main(args=None) -> None:
    from .runner import run_nodes

    run_nodes([CaptureNode], args)


if __name__ == "__main__":
    main()
