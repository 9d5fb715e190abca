"""The Batch API mode: the same classify requests as the online client, sent as files and jobs.

OpenAI's Batch API (and ``vllm run-batch``, offline) take a JSONL file of requests
``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}`` and answer each line within
24 hours at half the online price. This folder sits beside the online client, one concern per module:

- :mod:`.requests`: writes the request files, streaming, split at the provider's limits;
- :mod:`.api`: the HTTP endpoints (upload a file, create, retrieve, cancel a batch, read a result file);
- :mod:`.ledger`: the record in the output directory of every batch submitted (written before any wait,
  so a run that is killed and started again polls the same batches and never submits twice);
- :mod:`.results`: reads result lines into the response cache, exactly as online answers are stored;
- :mod:`.runner`: the sequence: write, upload, submit, poll with backoff, import, resubmit what expired.

The custom id of a request is its response-cache key, so a result line joins its request (and the rest
of the pipeline) through the cache; nothing is held per row in memory but the set of keys sent.
"""
