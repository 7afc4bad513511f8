"""The RunPod Hub looks for a handler.py; the worker itself is `server.runpod_worker`."""

from server.runpod_worker import main

if __name__ == "__main__":
    main()
