"""The file pipeline: fetch or decode the audio, split it by speech, transcribe the pieces in parallel,
render the formats."""
