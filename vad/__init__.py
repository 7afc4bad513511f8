"""Speech detection with Silero VAD, and turn completion with Smart Turn, on onnxruntime.

No web code, no dependency on server/.
"""

from vad.engine import BatchedVADEngine, EngineStream
from vad.model import FRAME_SAMPLES, SAMPLE_RATE, SileroModel, SileroSequenceModel
from vad.offline import SpeechSegment, VADParams, speech_segments
from vad.pcm import decode_alaw, decode_pcm16, decode_ulaw
from vad.resample import StreamResampler
from vad.smart_turn import BatchedSmartTurn, SmartTurnModel
from vad.streaming import SpeechPaused, SpeechResumed, SpeechStarted, SpeechStopped, StreamingDetector, StreamParams

__all__ = [
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "BatchedSmartTurn",
    "BatchedVADEngine",
    "EngineStream",
    "SileroModel",
    "SileroSequenceModel",
    "SmartTurnModel",
    "SpeechPaused",
    "SpeechResumed",
    "SpeechSegment",
    "SpeechStarted",
    "SpeechStopped",
    "StreamParams",
    "StreamResampler",
    "StreamingDetector",
    "VADParams",
    "decode_alaw",
    "decode_pcm16",
    "decode_ulaw",
    "speech_segments",
]
