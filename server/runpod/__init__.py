"""The RunPod serverless worker: RunPod's environment conventions, the vLLM it runs on, and jobs.

`server.runpod.worker` is the entry point; `server.runpod.environment` maps RunPod's variables
onto the launcher's settings; `server.runpod.backend` starts and watches vLLM; `server.runpod.jobs`
turns job inputs into transcripts and OpenAI responses with the same code as the HTTP edge:
`server.runpod.edge_app` is the edge's app in the worker, which requests reach in-process
(`server.runpod.asgi_call`) and whose lifespan runs once (`server.runpod.lifespan`).
"""
