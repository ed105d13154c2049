"""capture_node: live multichannel capture from a sound card (sounddevice / PortAudio), optionally pinging.

Publishes:
    audio          avperception_msgs/AudioFrame, stamped with the capture time of the first sample
    sonar/pings    avperception_msgs/Ping (with ``emit``), stamped at each sweep's onset in the audio's clock
Parameters: see ``NODE_PARAMS``. ``device`` is a name (substring match, as
PortAudio lists it) or an index; ``channels`` 0 means the array's input channels.
The PortAudio callback only copies into a bounded queue; a timer publishes.
When the queue is full the oldest chunk is dropped and counted.

With ``emit`` the node also plays the model's sweep through the speaker,
``ping_rate_hz`` times a second. On one device (``output_device`` empty) it runs
ONE full-duplex stream, so output and input samples are counted in lockstep: a
sweep written at output index ``k`` leaves the speaker at input index
``k + output_latency_samples`` (measure it once with ``avperception
calibrate-latency``), and each Ping is stamped at that input sample, exact
(``onset_known`` true). With a separate output device the two clocks are not
locked: the Ping carries the scheduled time (``onset_known`` false) and the
receiver finds the onset on the direct path.
"""

from __future__ import annotations

import collections
import queue

from rclpy.node import Node

from ..config import DEFAULT_ARRAY, load_array
from . import conversions as conv
from .audio_input import audio_qos
from .params import declare

NODE_PARAMS = {
    "array": (DEFAULT_ARRAY, "array preset name or YAML path (channels and frame_id)"),
    "device": ("", "input device name or index ('' = system default)"),
    "channels": (0, "channels to open (0: the array's input channels)"),
    "sample_rate": (16000, "Hz"),
    "chunk_samples": (1024, "samples per message"),
    "encoding": ("S16LE", "S16LE | S32LE | F32LE"),
    "queue_chunks": (32, "chunks buffered between the audio callback and the publisher"),
    "emit": (False, "play the sweep through the speaker and publish a Ping per sweep on sonar/pings"),
    "ping_rate_hz": (4.0, "sweeps per second (emit)"),
    "output_device": ("", "speaker's device name or index ('' = the input device, full duplex)"),
    "output_channels": (1, "output channels to open (the sweep goes to all)"),
    "output_latency_samples": (0, "input index of a sweep's onset minus its output index "
                                  "(avperception calibrate-latency)"),
    "sweep_gain": (0.5, "sweep peak at the speaker output, linear full scale"),
    "model": ("default", "model bundle whose sweep, sweep id and speaker position to use "
                         "('default' = the shipped one, '' = the data engine's default sweep)"),
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


def open_output_stream(device: str, channels: int, sample_rate: int, chunk: int, callback):
    """Open a sounddevice OutputStream (the speaker on its own device), with errors that list the devices."""
    from ..sonar.calibrate import device_spec, import_sounddevice

    sd = import_sounddevice()
    try:
        devices = sd.query_devices()
    except Exception as e:
        raise RuntimeError(f"no audio devices found ({e})") from None
    outputs = [f"{i}: {d['name']} ({d['max_output_channels']} out)" for i, d in enumerate(devices)
               if d["max_output_channels"] > 0]
    try:
        return sd.OutputStream(device=device_spec(device), channels=channels, samplerate=sample_rate,
                               blocksize=chunk, dtype="float32", callback=callback)
    except Exception as e:
        raise RuntimeError(f"cannot open output device {device!r} with {channels} channels at {sample_rate} Hz: "
                           f"{e}. Output devices: " + ("; ".join(outputs) or "none")) from None


class CaptureNode(Node):
    stream = out_stream = None  # the sound card's streams (destroy_node closes them, even after a failed start)

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
        self._offset: float | None = None  # ROS time - PortAudio stream time
        self._in_index = 0  # absolute input index of the next captured sample
        self.out_stream = None
        self.emit = bool(p["emit"])
        if self.emit:
            self._setup_emitter(p)
            self.stream = self._open_streams(p)
        else:
            self.stream = open_input_stream(str(p["device"]), self.channels, self.fs, int(p["chunk_samples"]),
                                            self._callback)
        self.stream.start()
        if self.out_stream is not None:
            self.out_stream.start()
        self.create_timer(0.005, self.flush)
        what = f", pinging at {p['ping_rate_hz']:g} Hz ({self.sweep.sweep_id})" if self.emit else ""
        self.get_logger().info(f"capturing {self.channels} channels at {self.fs} Hz from "
                               f"{p['device'] or 'default device'}{what}")

    # ------------------------------------------------------------------ emitter
    def _setup_emitter(self, p: dict) -> None:
        from ..sonar.emitter import PingSchedule, PingStamper, load_emitter_sweep

        self.sweep = load_emitter_sweep(str(p["model"]), fs=self.fs, array=self.array.name)
        if self.sweep.fs != self.fs:
            raise ValueError(f"the model's sweep is at {self.sweep.fs} Hz but sample_rate is {self.fs}; "
                             f"set sample_rate:={self.sweep.fs}")
        self.duplex = str(p["output_device"]) in ("", str(p["device"]))
        # one full-duplex stream: onsets are exact input indices; a separate output: scheduled times only
        latency = int(p["output_latency_samples"]) if self.duplex else 0
        self.schedule = PingSchedule(self.fs, float(p["ping_rate_hz"]), self.sweep.samples, latency,
                                     int(p["output_channels"]), float(p["sweep_gain"]))
        self.stamper = PingStamper(self.fs)
        self._new_onsets: collections.deque = collections.deque(maxlen=64)  # filled by the audio callback
        self._out_offset: float | None = None
        self.ping_seq = 0
        from avperception_msgs.msg import Ping

        self.ping_pub = self.create_publisher(Ping, "sonar/pings", 10)

    def _open_streams(self, p: dict):
        from ..sonar.calibrate import import_sounddevice, open_duplex_stream

        chunk = int(p["chunk_samples"])
        if self.duplex:
            sd = import_sounddevice()
            return open_duplex_stream(sd, str(p["device"]), self.channels, int(p["output_channels"]), self.fs,
                                      chunk, self._duplex_callback)
        stream = open_input_stream(str(p["device"]), self.channels, self.fs, chunk, self._callback)
        self.out_stream = open_output_stream(str(p["output_device"]), int(p["output_channels"]), self.fs, chunk,
                                             self._output_callback)
        return stream

    def _duplex_callback(self, indata, outdata, frames, time_info, status) -> None:
        # PortAudio's thread: write the output block in place, copy the input, hand over, never wait
        _, onsets = self.schedule.fill_output(frames, out=outdata)
        if onsets:
            self._new_onsets.extend(onsets)
        self._callback(indata, frames, time_info, status)

    def _output_callback(self, outdata, frames, time_info, status) -> None:
        first = self.schedule.position
        _, onsets = self.schedule.fill_output(frames, out=outdata)
        if onsets:
            dac = time_info.outputBufferDacTime or self.out_stream.time + self.out_stream.latency
            self._new_onsets.extend((dac + (o - first) / self.fs, self.out_stream.time) for o in onsets)

    def _publish_pings(self, first_index: int, n: int, stamp: float, ros_now: float) -> None:
        new = []
        while self._new_onsets:
            new.append(self._new_onsets.popleft())
        if self.duplex:
            self.stamper.add_onsets(new)
            pings = [(t, True) for _, t in self.stamper.on_chunk(first_index, n, stamp)]
        else:  # (DAC time, output stream time) in the output stream's clock
            if new and self._out_offset is None:
                self._out_offset = ros_now - new[0][1]
            pings = [(t + self._out_offset, False) for t, _ in new]
        for t, known in pings:
            self.ping_pub.publish(conv.ping_msg(t, self.array.frame_id, self.ping_seq, self.sweep.sweep_id, known))
            self.ping_seq += 1

    @staticmethod
    def _msg_type():
        from avperception_msgs.msg import AudioFrame

        return AudioFrame

    def _callback(self, indata, frames, time_info, status) -> None:
        # runs on PortAudio's thread: copy and hand over, never wait
        item = (indata.T.copy(), time_info.inputBufferAdcTime, self.stream.time, self._in_index)
        self._in_index += frames
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
                x, adc_time, stream_now, first_index = self.queue.get_nowait()
            except queue.Empty:
                return
            ros_now = self.get_clock().now().nanoseconds * 1e-9
            if self._offset is None:
                self._offset = ros_now - stream_now
            if adc_time:
                stamp = adc_time + self._offset
            elif stream_now:  # no ADC time from this host API: the stream's clock at the callback, less the block
                stamp = stream_now - x.shape[1] / self.fs + self._offset  # (not the flush's: chunks may queue)
            else:
                stamp = ros_now - x.shape[1] / self.fs
            self.pub.publish(conv.audio_frame_msg(x, self.fs, stamp, self.array.frame_id, self.seq, self.p["encoding"]))
            self.seq += 1
            if self.emit:
                self._publish_pings(first_index, x.shape[1], stamp, ros_now)

    def destroy_node(self) -> bool:
        try:
            for st in (self.stream, self.out_stream):
                if st is not None:
                    st.stop()
                    st.close()
        finally:
            return super().destroy_node()


def main(args=None) -> None:
    from .runner import console_main

    console_main([CaptureNode], args)


if __name__ == "__main__":
    main()
