"""WebRTC calls (`/v1/realtime/calls`): ICE, the microphone track, and the calls themselves."""
