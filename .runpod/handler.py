"""The RunPod Hub looks for a handler.py; the worker itself is `server.runpod.worker`."""

from server.runpod.worker import main

if __name__ == "__main__":
    main()
